"""``Client``: validates each call, runs the processors and fans the event out.

The client owns no delivery logic of its own: each enabled provider gets a
:class:`~fanout._channel.Channel`, and the client only puts the same immutable event on
each of them. ``flush`` and ``shutdown`` spend one deadline across all channels together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os  # spool: os.PathLike
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from . import _config, _context, _lifecycle
from ._channel import Channel, ChannelLike, Claim, ErrorCallback
from ._config import ClientOptions
from ._context import LazyContext
from ._deferred import CALLER_DRAIN, CONTEXT_RESERVE, DeferredStage
from ._deferred import LIMIT as STAGE_LIMIT
from ._events import CheckedDict, Event, build, has_room_for_context, with_request_context
from ._exceptions import InvalidEvent
from ._observe import DeliveryObserver
from ._plugins import Registry
from ._report import FlushReport
from ._setup import load_client_registry, wire
from ._spool import SpoolOptions  # spool
from ._sync import deliver_sync
from ._throttle import Throttle
from .processors import IPMode, Processor
from .provider import Provider

__all__ = ["Client", "ClientState", "channels_of"]

#: The anonymous id a staged call's event is built with when the call names no id: its
#: context's (read later) always replaces it, before any processor or provider sees it.
_UNREAD_ID = "fanout:unread"
#: ``None`` outside any ``fanout.context`` (the usual call), without ``current()``'s two calls.
_open_context = _context.opened
_fill = _context.fill

logger = logging.getLogger("fanout")


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Client:
    """Sends every call to every enabled provider; never raises for delivery problems.

    Configuration comes from keyword arguments first, then the environment (see
    ``docs/configuration.md``). ``providers`` takes provider names and/or ready
    :class:`~fanout.Provider` objects (each needs a ``name`` attribute).

    Only ``InvalidEvent`` (bad input: nothing is queued anywhere) is raised by the tracking
    methods. Failed deliveries become statistics (:meth:`stats`), dead letters and
    ``on_error(failure)`` calls on the provider's worker thread.
    """

    def __init__(
        self,
        *,
        providers: Sequence[str | Provider] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        delivery: Mapping[str, Mapping[str, Any]] | None = None,
        processors: Sequence[str | Processor] | None = None,
        on_error: ErrorCallback | None = None,
        plugins: Iterable[object] = (),
        load_entry_points: bool = True,
        allow_plugins: Sequence[str] | None = None,
        disable_plugins: Sequence[str] | None = None,
        ip: IPMode | None = None,
        sync: bool | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        queue_size: int | None = None,
        queue_bytes: int | None = None,
        overflow: str | None = None,
        block_timeout: float | None = None,
        max_retries: int | None = None,
        retry_timeout: float | None = None,
        request_timeout: float | None = None,
        shutdown_timeout: float | None = None,
        sync_timeout: float | None = None,
        dead_letter_dir: str | None = None,
        max_event_bytes: int | None = None,
        spool_dir: str | os.PathLike[str] | None = None,  # spool: FANOUT_SPOOL_DIR
        delivery_mode: str | None = None,  # relay: FANOUT_DELIVERY ("thread" / "process")
        defer_context: bool | None = None,  # FANOUT_DEFER_CONTEXT (fanout/_deferred.py)
        environ: Mapping[str, str] | None = None,
        register_atexit: bool = True,
        observer: DeliveryObserver | None = None,
    ) -> None:
        env = _config.environ() if environ is None else environ
        #: Built once the process has begun to exit: no exit hook will send a queue (see
        #: docs/lifecycle.md), so every call is delivered before it returns, as in sync
        #: mode (no spool, no worker, no delivery process), within the shutdown timeout.
        self._late = _lifecycle.exit_started()
        if self._late:
            sync, delivery_mode = True, "thread"
        named = [p for p in providers or () if isinstance(p, str)]
        options = ClientOptions.resolve(
            env,
            {
                "providers": tuple(named) if providers is not None else None,
                "plugins": allow_plugins,
                "disable_plugins": disable_plugins,
                "ip": ip,
                "shutdown_timeout": shutdown_timeout,
                "sync_timeout": sync_timeout,
                "dead_letter_dir": dead_letter_dir,
                "max_event_bytes": max_event_bytes,
                "delivery_mode": delivery_mode,  # relay
                "defer_context": defer_context,
            },
        )
        wiring = wire(
            env=env,
            options=options,
            registry=load_client_registry(
                options, load_entry_points=load_entry_points, plugins=plugins
            ),
            providers=providers,
            settings=settings or {},
            delivery={
                "batch_size": batch_size,
                "flush_interval": flush_interval,
                "queue_size": queue_size,
                "queue_bytes": queue_bytes,
                "overflow": overflow,
                "block_timeout": block_timeout,
                "max_retries": max_retries,
                "retry_timeout": retry_timeout,
                "request_timeout": request_timeout,
                "sync": sync,
            },
            per_provider_delivery=delivery or {},
            processors=processors,
            on_error=on_error,
            observer=observer,
            spool=(spool := SpoolOptions.resolve(env, spool_dir)),  # spool
        )
        self._options = options
        self.registry: Registry = wiring.registry
        self._channels: list[ChannelLike] = wiring.channels
        self._channel_names = tuple(c.name for c in self._channels)
        self._sync = [
            c for c in self._channels if isinstance(c, Channel) and (c.options.sync or self._late)
        ]
        self._sync_names = frozenset(c.name for c in self._sync)
        self._queued: Sequence[ChannelLike] = wiring.fan_out or [
            c for c in self._channels if c.name not in self._sync_names
        ]
        #: The queued channels' ``emit``, bound once: the fan-out loop runs per call.
        self._emits = tuple(c.emit for c in self._queued)
        self._processors = wiring.processors
        #: Where a request's events wait while their context is read off the request's
        #: thread (fanout/_deferred.py). Not in sync mode or for a client built at exit
        #: (each call is delivered before it returns); not with processors of the
        #: application's (they run on the caller's thread and see the whole event); not
        #: with the spool or process delivery, whose events must be on disk or in the
        #: delivery process as soon as they can be (the stage would hold them up to 50 ms).
        #: Nor with ``overflow=block``, which makes the caller wait for room in a queue;
        #: nor with ``FANOUT_DEFER_CONTEXT=0``.
        builtin = 0 if options.ip == "keep" else 1
        self._stage: DeferredStage | None = (
            DeferredStage(
                self._complete, min(STAGE_LIMIT, *(c.options.queue_size for c in self._channels))
            )
            if options.defer_context
            and self._channels
            and not self._sync
            and len(self._processors) == builtin
            and spool.directory is None
            and options.delivery_mode == "thread"
            and all(c.options.overflow != "block" for c in self._channels)
            else None
        )
        self.redact = wiring.redact
        self._max_event_bytes = options.max_event_bytes
        self._throttle = Throttle(logger)
        self._state = ClientState.OPEN
        self._shutdown_lock = threading.Lock()
        self._final_report: FlushReport | None = None
        #: A late client's providers that did not answer in time (``_send_at_exit``).
        self._given_up_at_exit: set[str] = set()
        if register_atexit:
            _lifecycle.register_client(self)
        if self._late:
            logger.debug("fanout client built at exit: each call is delivered before it returns")
        logger.debug("fanout client ready: providers %s", ", ".join(self.providers))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Client:
        """A client configured by the environment alone (``kwargs`` still take precedence)."""
        return cls(environ=environ, **kwargs)

    # -- properties ----------------------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        """Names of the enabled providers, in fan-out order."""
        return [c.name for c in self._channels]

    @property
    def state(self) -> ClientState:
        return self._state

    def __repr__(self) -> str:
        return f"<fanout.Client providers={self.providers} state={self._state.value}>"

    # -- tracking ------------------------------------------------------------------------

    def track(
        self,
        name: str,
        *,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
        providers: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> str:
        """Record that ``name`` happened; returns the event id. Raises only ``InvalidEvent``."""
        if providers is None and exclude is None:
            # The common call, one frame shorter: what _emit does for it, inlined.
            opened = _open_context()
            if opened is not None:
                if context is None and self._stages(opened):
                    return self._defer(
                        opened, "track", None,
                        name, person_id, anonymous_id, properties, None, context,
                        event_id, timestamp, None, None, None,
                    )  # fmt: skip
                person_id, anonymous_id, properties, context = _fill(
                    opened, "track", person_id, anonymous_id, properties, context
                )
            event = build(
                "track", name, person_id, anonymous_id, properties, None, context,
                event_id, timestamp, None, None, None, self._max_event_bytes,
            )  # fmt: skip
            stage = self._stage
            if stage is not None and stage.items:  # behind what is staged: in call order
                self._hand(event, None)
            else:
                self._dispatch(event)
            return event.event_id
        return self._emit(
            "track",
            providers, exclude,
            name, person_id, anonymous_id, properties, None, context,
            event_id, timestamp, None, None, None,
        )

    def identify(
        self,
        person_id: str,
        *,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
        providers: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> str:
        """Say who ``person_id`` is; with ``anonymous_id``, link that visitor to them."""
        if person_id is None:
            raise InvalidEvent("identify needs a person_id", path="person_id")
        return self._emit(
            "identify",
            providers, exclude,
            None, person_id, anonymous_id, None, traits, context,
            event_id, timestamp, None, None, None,
        )

    def page(
        self,
        url_or_path: str,
        *,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        title: str | None = None,
        referrer: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
        providers: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> str:
        """Record a page view (server-rendered pages, redirects, API docs...)."""
        if not isinstance(url_or_path, str) or not url_or_path.strip():
            raise InvalidEvent("page needs a non-empty URL or path", path="url_or_path")
        url_or_path = str.__str__(url_or_path)  # a subclass's plain text
        if properties is not None and not isinstance(properties, Mapping):
            raise InvalidEvent("properties must be a dict", path="properties")
        try:
            props: dict[str, Any] = dict(properties or {})
        except Exception as exc:  # noqa: BLE001 - a custom Mapping may raise anything
            raise InvalidEvent(
                f"properties could not be read as a dict ({type(exc).__name__})",
                path="properties",
            ) from None
        if url_or_path.startswith(("http://", "https://")):
            props["url"] = url_or_path
            try:
                props["path"] = urlsplit(url_or_path).path or "/"
            except ValueError:  # e.g. "http://[::1" - an unclosed IPv6 bracket
                raise InvalidEvent("url_or_path is not a valid URL", path="url_or_path") from None
        else:
            props["path"] = url_or_path
        if title is not None:
            props["title"] = title
        if referrer is not None:
            props["referrer"] = referrer
        return self._emit(
            "page",
            providers, exclude,
            name, person_id, anonymous_id, props, None, context,
            event_id, timestamp, None, None, None,
        )

    def alias(
        self,
        person_id: str,
        previous_id: str,
        *,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
        providers: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> str:
        """Declare that ``previous_id`` (an old or anonymous id) is now ``person_id``."""
        if person_id is None:
            raise InvalidEvent("alias needs a person_id", path="person_id")
        return self._emit(
            "alias",
            providers, exclude,
            None, person_id, None, None, None, context,
            event_id, timestamp, None, None, previous_id,
        )

    def group(
        self,
        group_type: str,
        group_id: str,
        *,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
        providers: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> str:
        """Put the person in a group (``company``, ``team``...) and set the group's traits."""
        return self._emit(
            "group",
            providers, exclude,
            None, person_id, anonymous_id, None, traits, context,
            event_id, timestamp, group_type, group_id, None,
        )

    def _emit(
        self,
        kind: str,
        providers: Sequence[str] | None,
        exclude: Sequence[str] | None,
        name: Any,
        person_id: Any,
        anonymous_id: Any,
        properties: Any,
        traits: Any,
        context: Any,
        event_id: Any,
        timestamp: Any,
        group_type: Any,
        group_id: Any,
        previous_id: Any,
    ) -> str:
        """The one builder behind the five tracking methods: validate, then fan out.

        ``providers`` (only these) and ``exclude`` route one call, like Segment's
        ``integrations`` option; the providers left out count it as skipped (``routed``).
        The open ``fanout.context`` fills what the call left out (explicit arguments win).

        Positional, because this runs for every call and each keyword hop costs a dict; an
        open context fills its four fields positionally too (``_context.fill``).
        """
        route = None if providers is None and exclude is None else self._route(providers, exclude)
        opened = _open_context()
        if opened is not None:
            if context is None and self._stages(opened):
                return self._defer(
                    opened, kind, route,
                    name, person_id, anonymous_id, properties, traits, context,
                    event_id, timestamp, group_type, group_id, previous_id,
                )  # fmt: skip
            person_id, anonymous_id, properties, context = _fill(
                opened, kind, person_id, anonymous_id, properties, context
            )
        event = build(
            kind, name, person_id, anonymous_id, properties, traits, context, event_id,
            timestamp, group_type, group_id, previous_id, self._max_event_bytes,
        )  # fmt: skip
        self._hand(event, route)
        return event.event_id

    def _stages(self, opened: Any) -> TypeGuard[LazyContext[Any]]:
        """Whether a call inside ``opened`` (a call passing no ``context=``) leaves its
        event to the deferred stage: a request's context not read yet, which may be read
        off this thread (:meth:`LazyContext.detach`), on a client that has a stage."""
        return (
            type(opened) is LazyContext
            and opened._resolved is None
            and self._stage is not None
            and opened.detach()
        )

    def _hand(self, event: Event, route: frozenset[str] | None) -> None:
        """Fan ``event`` out (already complete) behind anything staged: through the stage
        while it holds events, so that events reach the providers in call order (a
        request's ``identify`` before its ``track``); when the stage takes nothing more,
        after completing what is staged, for ``CALLER_DRAIN`` seconds at most."""
        stage = self._stage
        if stage is not None and stage.items:
            if stage.put((event, None, None, route)):
                return
            stage.drain(time.monotonic() + CALLER_DRAIN)
        self._dispatch(event, route)

    def _defer(
        self,
        opened: LazyContext[Any],
        kind: str,
        route: frozenset[str] | None,
        name: Any,
        person_id: Any,
        anonymous_id: Any,
        properties: Any,
        traits: Any,
        context: Any,
        event_id: Any,
        timestamp: Any,
        group_type: Any,
        group_id: Any,
        previous_id: Any,
    ) -> str:
        """A call inside a request's context not read yet: its event built from the call's
        own arguments (validated here: ``InvalidEvent`` raised as ever), then staged for the
        context to be read off this thread (fanout/_deferred.py).

        Staged only when the completed event cannot fail: the context's values, read from
        a request, are bounded (``CONTEXT_RESERVE`` bytes); an event too near the size
        limit for them, or a full or closed stage, is completed here, as before.
        """
        stub = build(
            kind, name, person_id,
            _UNREAD_ID if person_id is None and anonymous_id is None else anonymous_id,
            properties, traits, context, event_id, timestamp, group_type, group_id,
            previous_id, self._max_event_bytes,
        )  # fmt: skip
        stage = self._stage
        if (
            stage is not None
            and has_room_for_context(stub, self._max_event_bytes, CONTEXT_RESERVE)
            and stage.put((stub, opened, anonymous_id, route))
        ):
            return stub.event_id
        person_id, anonymous_id, properties, context = _fill(
            opened, kind, person_id, anonymous_id, properties, context
        )
        event = build(
            kind, name, person_id, anonymous_id, properties, traits, context, stub.event_id,
            stub.timestamp, group_type, group_id, previous_id, self._max_event_bytes,
        )  # fmt: skip
        self._hand(event, route)
        return event.event_id

    def _completed(self, stub: Event, opened: LazyContext[Any], anonymous_id: Any) -> Event:
        """The event of a staged call (``stub``, built from its own arguments; the call's
        ``anonymous_id``), filled from its request's context as the call would have been."""
        kind = stub.kind
        own_properties = stub.properties or None
        person_id, anonymous_id, properties, context = _fill(
            opened, kind, stub.person_id, anonymous_id, own_properties, stub.context or None
        )
        if properties is own_properties and not stub.context and (
            context is None or type(context) is CheckedDict
        ):
            # The common case: only ids and the request's checked values added, the call's
            # properties as they were checked (with_request_context); anything else, or an
            # id it refuses, goes through the full build, which names the culprit.
            try:
                return with_request_context(stub, person_id, anonymous_id, context)
            except Exception:  # noqa: BLE001, S110 - checked again below
                pass
        try:
            return build(
                kind, stub.name, person_id, anonymous_id, properties, stub.traits or None,
                context, stub.event_id, stub.timestamp, stub.group_type, stub.group_id,
                stub.previous_id, self._max_event_bytes,
            )  # fmt: skip
        except InvalidEvent as exc:
            # Not with a request's bounded context (see _defer): an enclosing context's
            # properties past the limit of keys. The call's own data goes out, with its ids.
            self._throttle.warning(
                "deferred", "an event's request context made it invalid (%s); sent without it",
                exc,
            )
            return build(
                kind, stub.name, person_id, anonymous_id, stub.properties or None,
                stub.traits or None, stub.context or None, stub.event_id, stub.timestamp,
                stub.group_type, stub.group_id, stub.previous_id, self._max_event_bytes,
            )  # fmt: skip

    def _complete(self, item: Any) -> None:
        """The deferred stage's: complete one staged call's event (or take an event
        staged complete, behind others) and fan it out."""
        event, opened, anonymous_id, route = item
        if opened is not None:
            try:
                event = self._completed(event, opened, anonymous_id)
            except Exception:  # noqa: BLE001 - the stage must go on with the others
                # Not reached: what is staged is checked so that it cannot fail (_defer).
                logger.exception("fanout: a staged event could not be completed; lost")
                return
        self._dispatch(event, route)

    def _route(
        self, providers: Sequence[str] | None, exclude: Sequence[str] | None
    ) -> frozenset[str]:
        names = set(self._channel_names)
        for arg, value in (("providers", providers), ("exclude", exclude)):
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise InvalidEvent(f"{arg} must be a list of provider names", path=arg)
            unknown = sorted(set(value) - names)
            if unknown:
                raise InvalidEvent(
                    f"{arg} names provider(s) {', '.join(unknown)} that this client does not "
                    f"have (enabled: {', '.join(self._channel_names)})",
                    path=arg,
                )
        chosen = set(providers) if providers is not None else names
        return frozenset(chosen - set(exclude or ()))

    def send(self, event: Event) -> str:
        """Fan out an already built :class:`Event` (imports, replays of dead letters)."""
        if not isinstance(event, Event):
            raise InvalidEvent("send() takes a fanout.Event")
        self._hand(event, None)
        return event.event_id

    def _dispatch(self, event: Event, route: frozenset[str] | None = None) -> None:
        # Sentry-style boundary: nothing below may raise into the caller.
        try:
            for processor in self._processors:
                try:
                    result: object = processor(event)  # user code: checked below
                except Exception:  # noqa: BLE001 - a broken processor must not lose the event
                    # Throttled: a processor with a bug fails on every event.
                    self._throttle.error(
                        f"raised:{id(processor)}",
                        "processor %r raised; event passed on unchanged",
                        processor,
                        exc_info=True,
                    )
                    continue
                if result is None:  # the processor filtered the event out on purpose
                    return
                if type(result) is not Event and not isinstance(result, Event):
                    self._throttle.error(
                        f"returned:{id(processor)}",
                        "processor %r returned %r, not an Event; event passed on unchanged",
                        processor,
                        type(result),
                    )
                    continue
                event = result
            if route is None:
                for emit in self._emits:
                    emit(event)
                if self._sync:
                    self._send_sync(self._sync, event)
                return
            for channel in self._channels:
                if channel.name not in route:
                    channel.skip_routed()
                elif channel.name not in self._sync_names:
                    channel.emit(event)
            sync = [c for c in self._sync if c.name in route]
            if sync:
                self._send_sync(sync, event)
        except Exception:  # noqa: BLE001
            logger.exception("internal error while dispatching an event")

    def _send_sync(self, channels: list[Channel], event: Event) -> None:
        """Sync mode: deliver ``event`` to ``channels`` before returning (``_sync.py``)."""
        if self._late:
            self._send_at_exit(channels, event)
        else:
            deliver_sync(channels, event, self._options.sync_timeout)

    def _send_at_exit(self, channels: list[Channel], event: Event) -> None:
        """A late client's call: sync mode's delivery, each provider within the shutdown timeout.

        Nothing would send a queue any more (docs/lifecycle.md), so the call is delivered to
        every provider in parallel before it returns, within ``FANOUT_SHUTDOWN_TIMEOUT``. A
        provider that did not make it (dead-lettered and counted, ``sync_timeout``) is not
        waited for again: the client's later calls dead-letter and count its events at once,
        so a hung backend holds the exit up once, not once per call, and the other providers
        still get theirs. Where no thread can start any more (Python 3.12.0 at exit), the
        providers are sent to one after another, each within the timeout (give or take the
        request in flight: nothing can cut short a ``send()`` then).
        """
        timeout = self._options.shutdown_timeout
        given_up = self._given_up_at_exit
        live = [c for c in channels if c.name not in given_up]
        for channel in channels:
            if channel.name not in given_up:
                continue
            if self._state is ClientState.OPEN and event.kind in channel.kinds:
                channel.abandon(
                    Claim([event]),
                    f"{channel.name} did not answer within FANOUT_SHUTDOWN_TIMEOUT "
                    f"({timeout:g}s) at exit",
                )
            else:  # counted as it would be (closed, unsupported_kind), nothing sent
                channel.deliver_now(event, time.monotonic())
        if not live:
            return
        if _lifecycle.threads_allowed():
            before = [c.report().losses.get("sync_timeout", 0) for c in live]
            deadline = time.monotonic() + timeout
            deliver_sync(live, event, timeout)
            if len(live) == 1 and time.monotonic() >= deadline:  # sent without a thread
                given_up.add(live[0].name)
            for channel, timed_out in zip(live, before, strict=True):
                if channel.report().losses.get("sync_timeout", 0) > timed_out:
                    given_up.add(channel.name)
            return
        for channel in live:
            deadline = time.monotonic() + timeout
            channel.deliver_now(event, deadline)
            if time.monotonic() >= deadline:
                given_up.add(channel.name)

    # -- delivery control ----------------------------------------------------------------

    def stats(self) -> FlushReport:
        """Counts per provider since start (delivered, failed, dropped by reason, pending)."""
        return FlushReport(self._reports())

    def _reports(self) -> dict[str, Any]:
        """Each channel's report; events staged count as pending for the providers they
        go to (by route and kind)."""
        stage = self._stage
        if stage is None or not stage.items:
            return {c.name: c.report() for c in self._channels}
        # Read with the stage still (between two chunks), so that an event being handed
        # over is in the stage or in a queue, not in both or neither; if a chunk takes
        # longer than a moment, read as it is (a report must not wait on the stage).
        busy = stage._busy
        try:
            busy.acquire(timeout=0.05)
            reports = {c.name: c.report() for c in self._channels}
            staged = list(stage.items)
        finally:
            try:
                busy.release()
            except RuntimeError:  # not taken
                pass
        if staged:
            for channel in self._channels:
                kinds = getattr(channel, "kinds", None)
                n = sum(
                    1
                    for event, _, _, route in staged
                    if (route is None or channel.name in route)
                    and (kinds is None or event.kind in kinds)
                )
                if n:
                    report = reports[channel.name]
                    reports[channel.name] = dataclasses.replace(report, pending=report.pending + n)
        return reports

    def flush(self, timeout: float | None = None) -> FlushReport:
        """Deliver everything queued so far, waiting at most ``timeout`` seconds in all.

        ``None`` means ``FANOUT_SHUTDOWN_TIMEOUT``. Returns what each provider delivered,
        failed, dropped and left pending; it never raises for delivery problems.
        """
        deadline = time.monotonic() + self._timeout(timeout)
        # What waits for its context goes to the channels first, within the deadline.
        done = self._stage is None or self._stage.drain(deadline)
        targets = [(c, c.request_flush()) for c in self._channels]
        try:
            for channel, target in targets:
                done = channel.wait(target, deadline) and done
        finally:
            for channel, _ in targets:
                channel.end_flush()
        return FlushReport(self._reports(), timed_out=not done)

    def shutdown(self, timeout: float | None = None) -> FlushReport:
        """Flush within ``timeout`` (one deadline for all providers), then close.

        What is still queued at the deadline is dead-lettered and counted as dropped
        (``shutdown_timeout``). Later calls are counted as dropped (``closed``), not raised.
        """
        with self._shutdown_lock:
            if self._final_report is not None:
                return self._final_report
            deadline = time.monotonic() + self._timeout(timeout)
            if self._stage is not None:
                self._stage.close(deadline)  # staged events to the channels; none after
            targets = [(c, c.request_flush()) for c in self._channels]
            for channel in self._channels:
                channel.begin_shutdown()
            done = True
            for channel, target in targets:
                done = channel.wait(target, deadline) and done
            for channel in self._channels:
                channel.finish_shutdown(deadline)
            self._state = ClientState.CLOSED
            self._final_report = FlushReport(
                {c.name: c.report() for c in self._channels}, timed_out=not done
            )
            return self._final_report

    close = shutdown

    async def aflush(self, timeout: float | None = None) -> FlushReport:
        """:meth:`flush` for asyncio code: waits in a worker thread, never blocks the loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def ashutdown(self, timeout: float | None = None) -> FlushReport:
        """:meth:`shutdown` for asyncio code (ASGI lifespan): the loop keeps running."""
        return await asyncio.to_thread(self.shutdown, timeout)

    def _shutdown_at_exit(self) -> None:
        """The exit hook's call (:mod:`fanout._lifecycle`): shut down, say what was lost."""
        if self._state is ClientState.OPEN:
            report = self.shutdown()
            if not report.ok:
                logger.warning("fanout: at exit, not everything was delivered: %r", report)

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self._options.shutdown_timeout
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        return float(timeout)

    def __enter__(self) -> Client:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this fanout.Client is shut down; create a new one")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


Client.__module__ = "fanout"


def channels_of(client: Client) -> dict[str, Channel]:
    """``client``'s channels by provider name. For fanout's delivery process
    (fanout/_relay_child.py), which puts an event routed to one provider on that provider's
    channel alone: the other channels' ``routed`` counts were made in the app."""
    return {c.name: c for c in client._channels if isinstance(c, Channel)}

