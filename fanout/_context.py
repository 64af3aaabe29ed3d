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
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = [
    "CANONICAL_KEYS",
    "RequestContext",
    "activate",
    "apply",
    "context",
    "current",
    "new",
    "use",
]

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


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """One open ``fanout.context``: ids, canonical context and default properties."""

    person_id: str | None = None
    anonymous_id: str | None = None
    #: True when ``anonymous_id`` was generated because nothing identified the visitor.
    anonymous_id_generated: bool = False
    #: Canonical context values (see :data:`CANONICAL_KEYS`); ``None`` values are left out.
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form, for carrying the context across processes (Celery headers)."""
        return {
            "person_id": self.person_id,
            "anonymous_id": None if self.anonymous_id_generated else self.anonymous_id,
            "values": dict(self.values),
            "properties": dict(self.properties),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestContext:
        """The inverse of :meth:`to_dict`; unknown or mistyped parts are dropped."""
        values = data.get("values")
        props = data.get("properties")
        person = data.get("person_id")
        anon = data.get("anonymous_id")
        return cls(
            person_id=person if isinstance(person, str) and person else None,
            anonymous_id=anon if isinstance(anon, str) and anon else None,
            values={
                k: v for k, v in (values or {}).items() if k in CANONICAL_KEYS and v is not None
            }
            if isinstance(values, Mapping)
            else {},
            properties=dict(props) if isinstance(props, Mapping) else {},
        )


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "fanout_context", default=None
)


def current() -> RequestContext | None:
    """The innermost open context of this thread/task, or ``None``."""
    return _current.get()


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
    ctx = new(
        person_id=person_id, anonymous_id=anonymous_id, session_id=session_id, ip=ip,
        user_agent=user_agent, locale=locale, url=url, path=path, referrer=referrer,
        campaign=campaign, properties=properties,
    )
    with use(ctx):
        yield ctx


def new(
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
    """The context :func:`context` would open here: the current one, overridden by these."""
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
    return _merge(
        _current.get(),
        RequestContext(
            person_id=person_id,
            anonymous_id=anonymous_id,
            values={k: v for k, v in values.items() if v is not None},
            properties=dict(properties or {}),
        ),
    )


@contextlib.contextmanager
def use(ctx: RequestContext) -> Iterator[RequestContext]:
    """Make ``ctx`` (already built, e.g. restored from a Celery header) the current context."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def activate(ctx: RequestContext) -> None:
    """Make ``ctx`` current for the rest of this ``contextvars.Context``, without a reset.

    For a context that is discarded after the request (a ``copy_context()`` run by the
    WSGI middleware): a token-based reset would fail when a server closes the response
    body from another context.
    """
    _current.set(ctx)


def _merge(parent: RequestContext | None, child: RequestContext) -> RequestContext:
    if parent is not None:
        anon: str | None
        if child.anonymous_id is not None:
            anon, generated = child.anonymous_id, False
        else:
            anon, generated = parent.anonymous_id, parent.anonymous_id_generated
        child = RequestContext(
            person_id=child.person_id or parent.person_id,
            anonymous_id=anon,
            anonymous_id_generated=generated,
            values={**parent.values, **child.values},
            properties={**parent.properties, **child.properties},
        )
    if child.person_id is None and child.anonymous_id is None:
        child = dataclasses.replace(
            child, anonymous_id=str(uuid.uuid4()), anonymous_id_generated=True
        )
    return child


def apply(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Fill the fields of one call (``build_event`` keyword arguments) from the context.

    Returns ``fields`` itself, unchanged, when no context is open (the common, fast case).
    """
    ctx = _current.get()
    if ctx is None:
        return fields
    if kind == "alias":
        # alias names both ids explicitly; only the canonical context applies.
        _fill_context(fields, ctx)
        return fields
    if fields.get("person_id") is None and kind != "identify":
        fields["person_id"] = ctx.person_id
    if fields.get("anonymous_id") is None:
        if kind == "identify":
            # identify links the browser's id to the person, never a generated one.
            if not ctx.anonymous_id_generated and ctx.anonymous_id != fields.get("person_id"):
                fields["anonymous_id"] = ctx.anonymous_id
        elif fields.get("person_id") is None or not ctx.anonymous_id_generated:
            fields["anonymous_id"] = ctx.anonymous_id
    if ctx.properties and kind in ("track", "page"):
        explicit = fields.get("properties")
        fields["properties"] = {**ctx.properties, **(explicit or {})}
    _fill_context(fields, ctx)
    return fields


def _fill_context(fields: dict[str, Any], ctx: RequestContext) -> None:
    if ctx.values:
        explicit = fields.get("context")
        fields["context"] = {**ctx.values, **(explicit or {})} if explicit else ctx.values
