"""The request context: who and where an event comes from, carried by ``contextvars``.

An integration (ASGI, WSGI, Django, Celery...) opens ``fanout.context(...)`` around a
request or a task; every ``track()``/``identify()``/``page()``... inside it takes the ids,
the canonical context (ip, user agent, url...) and the properties it does not pass itself.
``contextvars`` rather than a thread-local, because the value must follow asyncio tasks
and threads started with a copied context, and must not leak between concurrent requests
served by one thread (asyncio) or one task (Celery).

Explicit arguments always win: the context only fills what a call leaves out.

A context with no id at all (a first-time visitor whose browser sent nothing) gets a
generated anonymous id, a random UUID4, once per context: every event of that request
carries the same one, and ``page()`` for that visitor is a valid event instead of an
``InvalidEvent`` (an HTTP 500). A generated id is never linked to a person by
``identify()``: it names no browser, so linking it would only add noise.

The middleware open a :class:`LazyContext` instead: one object holding the request as the
server gave it, read (headers, cookies, ids) only when a call needs the context, and then
once. Most requests track nothing, and for them the middleware's whole cost is setting two
context variables (the current context, and the request's own: see :func:`open_request`);
the budget is 10 µs of CPU per request on the request's thread
(``benchmarks/app_latency.py --middleware``, ``benchmarks/middleware_cost.py``). A client
that can (:mod:`fanout._deferred`) does not read it on the request's thread at all: the
call hands its event over with the context, :meth:`LazyContext.detach` having first taken
on the request's thread what the reading needs of the live request.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Generic, TypeVar

from . import _random
from ._events import CheckedDict, ReadOnlyDict, _identifier, _plain_id, checked_context
from ._exceptions import InvalidEvent
from ._validate import MAX_ITEMS, check_mapping, wire_size

__all__ = [
    "CANONICAL_KEYS",
    "Detach",
    "LazyContext",
    "RequestContext",
    "as_is",
    "activate_request",
    "close_request",
    "end_request",
    "leave_request",
    "fill",
    "context",
    "current",
    "opened",
    "enter",
    "lazy",
    "leave",
    "live_request",
    "open_request",
    "own",
    "person_off_thread",
    "read_before_fork",
    "use",
]

logger = logging.getLogger("fanout")
_T = TypeVar("_T")
#: The shared, read-only empty mapping of a context without values or properties.
_NO_VALUES: Final[Mapping[str, Any]] = ReadOnlyDict()

#: The canonical context keys every provider maps to its vendor's own names
#: (``campaign`` is a mapping of ``source``/``medium``/``name``/``term``/``content``).
CANONICAL_KEYS: Final = (
    "ip",
    "user_agent",
    "locale",
    "url",
    "path",
    "referrer",
    "session_id",
    "campaign",
)


class _Fields:
    """The storage of :class:`RequestContext`: its slots, whose own setters its
    ``__init__`` calls (a third cheaper than ``object.__setattr__`` past its refusing
    ``__setattr__``; one is built for every request that tracks)."""

    __slots__ = ("person_id", "anonymous_id", "anonymous_id_generated", "values", "properties")


class RequestContext(_Fields):
    """One open ``fanout.context``: ids, canonical context and default properties.

    Immutable. A plain class with ``__slots__`` (in :class:`_Fields`) rather than a frozen
    dataclass: one is built for every request that tracks, and a frozen dataclass's
    ``__init__`` goes through ``object.__setattr__`` field by field.
    """

    __slots__ = ()

    person_id: str | None
    anonymous_id: str | None
    #: True when ``anonymous_id`` was generated because nothing identified the visitor.
    anonymous_id_generated: bool
    #: Canonical context values (see :data:`CANONICAL_KEYS`); ``None`` values are left out.
    values: Mapping[str, Any]
    properties: Mapping[str, Any]

    def __init__(
        self,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        anonymous_id_generated: bool = False,
        values: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        _set_person(self, person_id)
        _set_anonymous(self, anonymous_id)
        _set_generated(self, anonymous_id_generated)
        _set_values(self, _NO_VALUES if values is None else values)
        _set_properties(self, _NO_VALUES if properties is None else properties)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a RequestContext is read-only (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a RequestContext is read-only (cannot delete {name!r})")

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.person_id,
            self.anonymous_id,
            self.anonymous_id_generated,
            dict(self.values),
            dict(self.properties),
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not RequestContext:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # as the frozen dataclass it replaces (dict fields)

    def __repr__(self) -> str:
        return (
            f"RequestContext(person_id={self.person_id!r}, anonymous_id={self.anonymous_id!r}, "
            f"anonymous_id_generated={self.anonymous_id_generated!r}, "
            f"values={dict(self.values)!r}, properties={dict(self.properties)!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form, for carrying the context across processes (Celery headers).

        Made as an event's fields are: the ids checked as an event's ids, the values and
        properties converted as an event's context and properties are (a set becomes a
        sorted list, an Enum its value, a datetime its ISO text...), so a task's events
        carry exactly what the request's would. A generated anonymous id is left out.

        Raises ``InvalidEvent`` (naming the path) for what no event could carry: a value
        with no JSON form, a lone surrogate, an id that is too long...
        """
        budget = [MAX_ITEMS]  # one event's budget, as values and properties share it
        person = _identifier(self.person_id, "person_id")
        anon = None
        if not self.anonymous_id_generated:
            anon = _identifier(self.anonymous_id, "anonymous_id")
        values = check_mapping(self.values, "context", budget, dict)[0]
        props = check_mapping(self.properties, "properties", budget, dict)[0]
        # The encoder's check for lone surrogates (the walk does not look at characters).
        fields = (person, anon, values, props)
        wire_size(fields, ("person_id", "anonymous_id", "context", "properties"))
        return {"person_id": person, "anonymous_id": anon, "values": values, "properties": props}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestContext:
        """The inverse of :meth:`to_dict`, as ``fanout.context(...)`` would open it: with no
        id, it gets a generated anonymous id (a new one per call: call it once per task).

        Unknown or mistyped parts are dropped, and so is what would make an event invalid
        (the header may come from another producer): an id fanout's checks refuse (empty,
        longer than an event id may be...), and each value or property that cannot become
        JSON as an event's would.
        """
        def valid_id(value: Any, field: str) -> str | None:
            try:
                return _identifier(value, field)
            except InvalidEvent:
                return None

        budget = [MAX_ITEMS]

        def kept(mapping: Any, field: str, only: tuple[str, ...] | None) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if not isinstance(mapping, Mapping):
                return out
            for key, value in mapping.items():
                if only is not None and (key not in only or value is None):
                    continue
                left = [budget[0]]
                try:
                    one = check_mapping({key: value}, field, left, dict)[0]
                    wire_size((one,), (field,))
                except InvalidEvent:
                    continue
                budget[0] = left[0]
                out.update(one)
            return out

        return _merge(
            None,
            cls(
                person_id=valid_id(data.get("person_id"), "person_id"),
                anonymous_id=valid_id(data.get("anonymous_id"), "anonymous_id"),
                values=kept(data.get("values"), "context", CANONICAL_KEYS),
                properties=kept(data.get("properties"), "properties", None),
            ),
        )


_set_person = _Fields.person_id.__set__  # type: ignore[attr-defined]
_set_anonymous = _Fields.anonymous_id.__set__  # type: ignore[attr-defined]
_set_generated = _Fields.anonymous_id_generated.__set__  # type: ignore[attr-defined]
_set_values = _Fields.values.__set__  # type: ignore[attr-defined]
_set_properties = _Fields.properties.__set__  # type: ignore[attr-defined]


#: ``detach(read, source)``: ``(read, source, off_thread)``, the reading of the same
#: request from what the request's thread captured, and whether that may run on another
#: thread (``False``: the request is read on its own thread, by the new ``read``).
Detach = Callable[
    [Callable[[Any], RequestContext], Any],
    "tuple[Callable[[Any], RequestContext], Any, bool]",
]


def as_is(
    read: Callable[[Any], RequestContext], source: Any
) -> tuple[Callable[[Any], RequestContext], Any, bool]:
    """The ``detach`` of a context whose ``read`` already depends on nothing but its
    ``source``, a copy nothing changes (the WSGI environ's copy, Flask's person)."""
    return read, source, True


def person_off_thread(person: str | None) -> bool:
    """Whether a middleware's hook's ``person`` lets its request be read off its thread:
    none, or a valid id (UTF-8 encodable: no lone surrogate, which the event's encoding
    refuses). With another, the request is read on its thread, and its calls raise
    ``InvalidEvent`` there, as they always did."""
    if person is None:
        return True
    if not _plain_id(person):
        return False
    if person.isascii():
        return True
    try:
        person.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_before_fork() -> None:
    """Read the forking thread's request context if it is not read yet (the at-fork hook's,
    :mod:`fanout._lifecycle`): a request that forks then has the same ids in both
    processes (a generated one included), and the child never waits for a context whose
    lock the client's deferred stage held at the fork."""
    opened = _current.get()
    if type(opened) is LazyContext and opened._resolved is None:
        opened.resolve()


class LazyContext(Generic[_T]):
    """A context read from its source (a request) on first use, then kept.

    ``read(source)`` gives the context's own values; they are merged over ``parent`` (the
    context that was current when this one was opened) like :func:`new` does. ``read``
    runs once: threads that share this object (a copied ``contextvars`` context) and race
    to read it wait for the first, so all events of a request carry the same generated id.
    """

    __slots__ = (
        "_read", "_source", "_parent", "_outside", "_over", "_resolved", "_lock", "_detach",
        "_deferrable",
    )

    def __init__(
        self,
        read: Callable[[_T], RequestContext],
        source: _T,
        parent: RequestContext | LazyContext[Any] | None,
        outside: RequestContext | LazyContext[Any] | None,
        detach: Detach | None = None,
    ) -> None:
        self._read: Callable[[Any], RequestContext] = read
        self._source: Any = source
        self._parent = parent
        #: How to make ``read`` and ``source`` readable on any thread (:meth:`detach`), once;
        #: ``None`` once done.
        self._detach = detach
        #: Whether this context, and every one it is opened in, can be read off the
        #: request's thread: each a middleware's reading of its request (bounded values),
        #: none a ``fanout.context(...)`` of the application's (any size of values).
        self._deferrable: bool = detach is not None and (
            parent is None or (type(parent) is LazyContext and parent._deferrable)
        )
        #: The context current outside the request this one was opened for (its
        #: ``parent``, unless opened inside another request context of the same request,
        #: where it may be ``None`` while the parent is not): what a request that finds
        #: this one left over encloses (:func:`open_request`).
        self._outside = outside
        #: Whether the request it was opened for has ended (:func:`close_request`).
        self._over = False
        self._resolved: RequestContext | None = None
        # Made with the context: creating a lock costs less than guarding a lazy creation.
        self._lock = threading.Lock()

    def detach(self) -> bool:
        """Whether this context may be read on another thread than the request's (the
        client's deferred stage: :mod:`fanout._deferred`), made so now if it can be.

        On the request's thread, before its first event is handed over: a middleware's
        ``detach`` does there what needs the live request (its ``person_id`` hook, a copy
        of what the server or an inner middleware may still change), so that the reading
        left to do depends on nothing else. ``False`` leaves the context to be read here,
        as before (its hook's person is not a valid id, an enclosing context is the
        application's own).
        """
        if not self._deferrable:
            return False
        if self._resolved is not None:  # read already: nothing left to take, or to run
            return True
        parent = self._parent
        if parent is not None and not parent.detach():  # type: ignore[union-attr]
            return False
        if self._detach is not None:
            with self._lock:
                if self._is_read():  # read meanwhile, by another thread
                    self._detach = None
                    return True
                detach = self._detach
                if detach is not None:
                    try:
                        read, source, off_thread = detach(self._read, self._source)
                    except Exception:  # noqa: BLE001 - a call must never fail over its context
                        logger.exception("fanout: detaching the request context failed")
                        self._deferrable = False  # read here, where resolve() contains it
                    except BaseException:  # a signal's: read here too, then let it go on
                        self._deferrable = False
                        raise
                    else:
                        self._read, self._source = read, source
                        self._deferrable = off_thread
                    self._detach = None
        return self._deferrable

    def _is_read(self) -> bool:
        return self._resolved is not None

    def resolve(self) -> RequestContext:
        """The context, read now if no call has needed it yet."""
        ctx = self._resolved
        if ctx is not None:
            return ctx
        # ``with``, not ``acquire()`` then ``try``: a signal's exception (Ctrl-C) could come
        # right after the acquire, before the ``try``, and leave the lock held: every later
        # call in the request would wait for it forever.
        with self._lock:
            ctx = self._resolved
            if ctx is None:
                try:
                    mine = self._read(self._source)
                except Exception:  # noqa: BLE001 - a call must never fail over its context
                    logger.exception("fanout: reading the request context failed; left empty")
                    mine = RequestContext()
                parent = self._parent
                if parent is None and (mine.person_id is not None or mine.anonymous_id is not None):
                    ctx = mine  # the common case: nothing to merge, no id to generate
                else:
                    ctx = _merge(_resolve(parent), mine)
                self._resolved = ctx
            return ctx


_current: contextvars.ContextVar[RequestContext | LazyContext[Any] | None] = (
    contextvars.ContextVar("fanout_context", default=None)
)


def _resolve(ctx: RequestContext | LazyContext[Any] | None) -> RequestContext | None:
    return ctx.resolve() if isinstance(ctx, LazyContext) else ctx


def current() -> RequestContext | None:
    """The innermost open context of this thread/task, or ``None``."""
    return _resolve(_current.get())


#: The innermost open context as it was entered (a :class:`LazyContext` not yet read), or
#: ``None``: outside any ``fanout.context``, the usual call, one C call answers what
#: :func:`current` answers with two.
opened: Final = _current.get


def lazy(
    read: Callable[[_T], RequestContext], source: _T, detach: Detach | None = None
) -> LazyContext[_T]:
    """A context over the current one, read from ``source`` by ``read`` when first needed.

    ``read`` returns the context's own values (build them with :func:`own`); exceptions
    from it are logged and leave the context empty rather than fail the call. With
    ``detach`` (see :meth:`LazyContext.detach`), it may be read off the caller's thread.
    """
    parent = _current.get()
    return LazyContext(read, source, parent, parent, detach)


#: The context a middleware opened for its request (:func:`open_request`) in this task or
#: thread, the request's own (not those entered inside it), or ``None``.
_request: contextvars.ContextVar[LazyContext[Any] | None] = contextvars.ContextVar(
    "fanout_request", default=None
)
#: The two tokens of :func:`open_request`, for :func:`close_request`.
RequestTokens = tuple["contextvars.Token[Any]", "contextvars.Token[Any]"]
_request_get = _request.get
_current_get = _current.get
_current_set = _current.set
_current_reset = _current.reset
_request_set = _request.set
_request_reset = _request.reset


def open_request(
    read: Callable[[_T], RequestContext],
    source: _T,
    outer: LazyContext[Any] | None,
    detach: Detach | None = None,
) -> tuple[LazyContext[_T], RequestTokens]:
    """Open a request's context (:func:`lazy`) and make it current: what the ASGI and
    Django middleware do on a request's way in (:func:`close_request` on its way out).
    ``outer`` is the context an outer middleware opened for the *same* request, as that
    middleware left it on the request (the ASGI scope, the Django request), or ``None``.

    It encloses whatever context is current, unless a middleware opened one for another
    request in this task's context: that one was left over. An asyncio server can start
    a request's task from inside another's, which copies the other request's context
    variables into it: uvicorn starts a pipelined request's task from the previous
    one's ``send`` (cpython#140947; uvicorn's opt-in ``reset_contextvars``). Taken as the
    enclosing context, the leftover would give a visitor with no id of its own the
    previous visitor's anonymous id, session and campaign, and chain each request of the
    connection to the one before. The request encloses what was current outside the
    leftover's request instead: the contexts entered outside any request.
    """
    before = _request_get()
    if before is None:  # no request open here: the usual case
        parent = _current_get()
        ctx = LazyContext(read, source, parent, parent, detach)
    elif before is outer:  # inside an outer middleware's context for the same request
        ctx = LazyContext(read, source, _current_get(), before._outside, detach)
    else:  # left over by another request
        ctx = LazyContext(read, source, before._outside, before._outside, detach)
    return ctx, (_current_set(ctx), _request_set(ctx))


def close_request(ctx: LazyContext[Any], tokens: RequestTokens) -> None:
    """End the request :func:`open_request` opened ``ctx`` for: restore the contexts of
    before it, and mark ``ctx`` over for any task that copied it (:func:`live_request`)."""
    ctx._over = True
    current, request = tokens
    _request_reset(request)
    _current_reset(current)


def leave_request(tokens: RequestTokens) -> None:
    """:func:`close_request` without ending the request: restore the contexts of before
    it here (the server's thread or task goes on to other requests), while a copy of this
    ``contextvars`` context goes on running the request's streamed body; :func:`end_request`
    when that body is done."""
    current, request = tokens
    _request_reset(request)
    _current_reset(current)


def end_request(ctx: LazyContext[Any]) -> None:
    """Mark the request ``ctx`` was opened for over (:func:`live_request`), its body done."""
    ctx._over = True


def live_request() -> LazyContext[Any] | None:
    """The context a middleware opened here for a request that has not ended, or
    ``None``: the enclosing request's, for a middleware that cannot be told it (a WSGI
    app mounted in an ASGI app gets an environ of its own). A request's context left over
    in a task that copied it is over once its middleware returns; until then (a request
    still awaiting after its response) it would pass for the enclosing one."""
    before = _request_get()
    return None if before is None or before._over else before


def activate_request(
    read: Callable[[_T], RequestContext],
    source: _T,
    outer: LazyContext[Any] | None,
    detach: Detach | None = None,
) -> LazyContext[_T]:
    """:func:`open_request` for the rest of this ``contextvars.Context``, without a reset:
    the WSGI middleware's, in the context it copies per request and discards after it (a
    token-based reset would fail when a server closes the response body from another
    context)."""
    return open_request(read, source, outer, detach)[0]


def enter(ctx: RequestContext | LazyContext[Any]) -> contextvars.Token[Any]:
    """Make ``ctx`` current; give the token to :func:`leave` (the middleware's hot path)."""
    return _current.set(ctx)


def leave(token: contextvars.Token[Any]) -> None:
    """Restore the context that was current before :func:`enter` returned ``token``."""
    _current.reset(token)


@contextlib.contextmanager
def context(
    *,
    person_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    locale: str | None = None,
    url: str | None = None,
    path: str | None = None,
    referrer: str | None = None,
    campaign: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Iterator[RequestContext]:
    """Give every call inside the ``with`` block these ids, context values and properties.

    Nested contexts inherit from the enclosing one and override what they set. Explicit
    arguments of a call win over the context. Yields the :class:`RequestContext` in force.
    """
    ctx = _merge(
        current(),
        own(
            person_id=person_id, anonymous_id=anonymous_id, session_id=session_id, ip=ip,
            user_agent=user_agent, locale=locale, url=url, path=path, referrer=referrer,
            campaign=campaign, properties=properties,
        ),
    )
    with use(ctx):
        yield ctx


def own(
    *,
    person_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    locale: str | None = None,
    url: str | None = None,
    path: str | None = None,
    referrer: str | None = None,
    campaign: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> RequestContext:
    """A context of these values alone, not merged over the current one (no generated id)."""
    values = {
        "session_id": session_id,
        "ip": ip,
        "user_agent": user_agent,
        "locale": locale,
        "url": url,
        "path": path,
        "referrer": referrer,
        "campaign": dict(campaign) if campaign else None,
    }
    return RequestContext(
        person_id=person_id,
        anonymous_id=anonymous_id,
        values={k: v for k, v in values.items() if v is not None},
        properties=dict(properties) if properties else {},
    )


@contextlib.contextmanager
def use(ctx: RequestContext) -> Iterator[RequestContext]:
    """Make ``ctx`` (already built, e.g. restored from a Celery header) the current context."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def _merge(parent: RequestContext | None, child: RequestContext) -> RequestContext:
    if parent is not None:
        anon: str | None
        if child.anonymous_id is not None:
            anon, generated = child.anonymous_id, False
        else:
            anon, generated = parent.anonymous_id, parent.anonymous_id_generated
        child = RequestContext(
            child.person_id or parent.person_id,
            anon,
            generated,
            _merged_values(parent.values, child.values),
            {**parent.properties, **child.properties} if parent.properties else child.properties,
        )
    if child.person_id is None and child.anonymous_id is None:
        child = RequestContext(None, _random_uuid4(), True, child.values, child.properties)
    return child


def _merged_values(parent: Mapping[str, Any], child: Mapping[str, Any]) -> Mapping[str, Any]:
    """``child``'s values over ``parent``'s; still checked when both were (once per context)."""
    if not parent:
        return child
    if not child:
        return parent
    merged = {**parent, **child}
    if type(parent) is CheckedDict and type(child) is CheckedDict:
        return checked_context(merged)  # both already passed: this cannot raise
    return merged


# UUID version 4: 122 random bits, version nibble 4, variant 0b10.
_UUID4_CLEAR: Final = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_SET: Final = (0x4 << 76) | (0x2 << 62)
_getrandbits = _random.getrandbits


def _random_uuid4() -> str:
    """``str(uuid.uuid4())`` at a third of the cost (no system call, no ``UUID`` object).

    Like event ids (``new_event_id``), a generated visitor id needs uniqueness, not
    secrecy; fanout's own generator (:mod:`fanout._random`) is reseeded in a forked child.
    """
    h = (_getrandbits(128) & _UUID4_CLEAR | _UUID4_SET).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def fill(
    opened: RequestContext | LazyContext[Any],
    kind: str,
    person_id: Any,
    anonymous_id: Any,
    properties: Any,
    context: Any,
) -> tuple[Any, Any, Any, Any]:
    """The ``person_id``, ``anonymous_id``, ``properties`` and ``context`` of one call
    (``build_event``'s arguments), filled from ``opened``, the open context (what
    :data:`opened` returned, not ``None``). Explicit arguments win.

    The four fields the context fills, taken and given back as a tuple: the call's every
    field put in a dict and read back cost each event under the middleware about 1 µs.
    """
    ctx = opened.resolve() if isinstance(opened, LazyContext) else opened
    if kind != "alias":  # alias names both ids explicitly; only the canonical context applies
        if person_id is None and kind != "identify":
            person_id = ctx.person_id
        if anonymous_id is None:
            if kind == "identify":
                # identify links the browser's id to the person, never a generated one.
                if not ctx.anonymous_id_generated and ctx.anonymous_id != person_id:
                    anonymous_id = ctx.anonymous_id
            elif person_id is None or not ctx.anonymous_id_generated:
                anonymous_id = ctx.anonymous_id
        if ctx.properties and (kind == "track" or kind == "page"):
            properties = {**ctx.properties, **(properties or {})}
    values = ctx.values
    if values:
        context = {**values, **context} if context else values
    return person_id, anonymous_id, properties, context
