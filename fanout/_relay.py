"""Process delivery (``FANOUT_DELIVERY=process``): the providers run in a child process.

Within one process every provider's mapping, encoding and HTTP runs under the app's GIL, so
at saturation each added provider takes GIL time from the app's requests. In process mode
the app process pays ``track()`` plus ONE hand-off per event whatever the number of
providers: the client gets one ordinary :class:`~fanout._channel.Channel` (``relay``) whose
provider writes batches, encoded once with orjson, to a child process
(``fanout._relay_child``, run by the app's interpreter: ``_relay_link.child_command``)
that runs an ordinary ``fanout.Client`` with the same providers and settings, on another
core.

What stays as in-process delivery:

- **Isolation**: the child's channels are the in-process ones; the parent's one relay
  channel only writes to a local pipe.
- **One deadline**: ``flush()`` / ``shutdown()`` hand everything off, then ask the child to
  flush (or shut down) within what is left of the deadline and wait for its answer.
- **Counts per provider**: the child sends its per-provider counts back (after each change,
  at most every :data:`PUSH_INTERVAL`, and in every answer), and :class:`RelayEndpoint`
  reports them per provider, so ``stats()`` and ``FlushReport`` read as they do in-process.
  Losses of the relay channel itself (queue full, closed) count for every provider.
- **A child that dies**: the parent notices (EOF on the child's output), counts what the
  child had not reported resolved as ``relay_lost`` (their fate is unknown), warns, and
  starts a new child for the next batch; after :data:`MAX_RESTARTS` deaths it falls back to
  in-process delivery, with one warning.
- **A parent that dies** (even ``kill -9``): the child reads EOF, delivers what it holds
  within ``FANOUT_SHUTDOWN_TIMEOUT`` and exits.
- **Fork safety**: a forked app process (``gunicorn --preload``, multiprocessing) closes its
  copies of the parent's pipes and starts its own child at its first event.

The child is started with ``subprocess`` (fork + exec of a fresh interpreter), never a bare
fork of this threaded process, lazily on the relay channel's worker thread, never the app's.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from . import _lifecycle
from ._channel import Channel, ChannelLike, hand_over
from ._config import Delivery
from ._deadletter import DeadLetters
from ._events import Event
from ._exceptions import ConfigError, FanoutError, PermanentError, RetryableError
from ._relay_link import ChildLink, Routed, encode_events, plain_event
from ._report import (
    DROPPED_REASONS,
    FAILED_REASONS,
    SKIPPED_REASONS,
    ChannelReport,
    DeliveryFailure,
)
from ._routing import EventFilter, compile_filter
from ._throttle import Throttle
from .provider import BatchLimits

if TYPE_CHECKING:
    from ._config import ClientOptions

__all__ = ["MAX_RESTARTS", "Relay", "RelayEndpoint", "Routed", "wire_process"]

logger = logging.getLogger("fanout.relay")

#: Events per hand-off: large, since one write costs about the same for 10 or 500 events.
RELAY_BATCH: Final = 500
#: Seconds a partial batch waits in the app process before it is handed off.
RELAY_INTERVAL: Final = 0.05
#: Child deaths after which the parent delivers in-process instead.
MAX_RESTARTS: Final = 3
#: Seconds the relay worker waits for a new child to say it is ready.
START_TIMEOUT: Final = 60.0


@dataclasses.dataclass
class Tally:
    """One provider's counts from children that are gone, and the parent's own."""

    delivered: int = 0
    retries: int = 0
    batches: int = 0
    losses: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, report: Mapping[str, Any]) -> None:
        self.delivered += int(report.get("delivered", 0))
        self.retries += int(report.get("retries", 0))
        self.batches += int(report.get("batches", 0))
        self.lose(report.get("losses", {}))

    def lose(self, losses: Mapping[str, int]) -> None:
        for reason, n in losses.items():
            if n:
                self.losses[reason] = self.losses.get(reason, 0) + int(n)


class Relay:
    """The parent's side: one relay channel, one child at a time, counts per provider."""

    def __init__(
        self,
        *,
        names: Sequence[str],
        options: Mapping[str, Delivery],
        child_config: Mapping[str, Any],
        on_error: Callable[[DeliveryFailure], None] | None,
        fallback: Callable[[], list[Channel]],
        shutdown_timeout: float,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.names = tuple(names)
        self._hello = orjson.dumps({"op": "hello", **child_config}) + b"\n"
        self._on_error = on_error
        self._dead_letters = dead_letters
        self._filters: dict[str, EventFilter | None] = {
            name: compile_filter(o.events, o.exclude_events, name) for name, o in options.items()
        }
        self._build_fallback = fallback
        self._throttle = Throttle(logger)
        queue_size = max(o.queue_size for o in options.values())
        queue_bytes = max(o.queue_bytes for o in options.values())
        self.channel = Channel(
            "relay",
            _RelayProvider(self),
            options=Delivery(
                batch_size=RELAY_BATCH,
                flush_interval=RELAY_INTERVAL,
                queue_size=queue_size,
                queue_bytes=queue_bytes,
                retry_base=0.05,
                retry_cap=1.0,
                retry_timeout=max(shutdown_timeout, 30.0),
            ),
            limits=BatchLimits(
                max_events=RELAY_BATCH, max_bytes=16 * 1024 * 1024, max_event_bytes=2**62
            ),
            # What the relay channel itself fails (a hand-off that never happened) becomes
            # each provider's dead letters and on_error calls, as in-process.
            on_error=self._handoff_failed,
        )
        self.endpoints = [
            RelayEndpoint(self, name, options[name], leader=i == 0)
            for i, name in enumerate(self.names)
        ]
        self._init_runtime()
        _lifecycle.register_fork_aware(self)

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._link: ChildLink | None = None
        self._tally = {name: Tally() for name in self.names}
        self._deaths = 0
        self._fallback: list[Channel] | None = None
        self.closing = False

    # -- hand-off (the relay channel's worker thread) --------------------------------------

    def send(self, batch: Sequence[Event]) -> None:
        fallback = self._fallback
        if fallback is not None:
            if not fallback:
                raise PermanentError("neither the relay child nor in-process delivery started")
            self._deliver_in_process(fallback, batch)
            return
        link = self._ensure_link()
        if link is None:  # fell back just now
            self.send(batch)
            return
        routes: dict[int, str] = {}
        if Routed in set(map(type, batch)):  # one C-level pass; routed events are rare
            for i, event in enumerate(batch):
                if type(event) is Routed:
                    routes[i] = event.to
        frame = b'{"op":"events","events":' + encode_events(batch)
        if routes:
            frame += b',"to":' + orjson.dumps({str(i): n for i, n in routes.items()})
        frame += b"}\n"
        try:
            link.send(frame, batch, bool(routes))
        except OSError as exc:
            link.dead.wait(2.0)  # the reader notices the death and counts what was lost
            raise RetryableError(f"the relay child {link.pid} is gone ({exc})") from None

    def _ensure_link(self) -> ChildLink | None:
        with self._lock:
            link = self._link
            if link is not None and not link.dead.is_set():
                return link
            if self._fallback is not None:
                return None
            try:
                link = ChildLink(self._hello, self.names, self._message, self._filters)
            except OSError as exc:
                self._fall_back(f"the relay child could not start ({exc})")
                return None
            self._link = link
        if not link.ready.wait(START_TIMEOUT) or link.error is not None:
            why = link.error or "it did not answer"
            link.close_input()
            if not link.wait_exit(5):
                link.kill()
            if link.error is not None:
                with self._lock:
                    self._fall_back(f"the relay child refused its configuration: {why}")
                return None
            raise RetryableError(f"the relay child {link.pid} did not start: {why}")
        logger.debug("relay child %d ready", link.pid)
        return link

    def _message(self, link: ChildLink, msg: dict[str, Any]) -> None:
        if msg.get("op") == "failure":
            self._forward_failure(msg)
        elif msg.get("op") == "dead":
            self._child_died(link)

    def _child_died(self, link: ChildLink) -> None:
        """Count what ``link``'s child had not settled, once; restart or fall back."""
        with self._lock:
            if self._link is link:
                self._link = None
            if link.error is not None:  # it never took an event
                return
            lost = link.unresolved()
            for name in self.names:
                self._tally[name].add(link.latest.get(name, {}))
                if lost[name]:
                    self._tally[name].lose({"relay_lost": lost[name]})
            closing = self.closing
            if not closing:
                self._deaths += 1
            deaths = self._deaths
        link.close_input(1.0)
        link.wait_exit(1.0)
        why = f"the relay child {link.pid} exited (status {link.proc.returncode}) first"
        for name in self.names:
            if lost[name]:
                self._fail(name, "relay_lost", link.lost(name, lost[name]), why)
        if closing and link.proc.returncode == 0:
            return
        self._throttle.warning(
            "child-died",
            "fanout: the relay child %d exited (status %s); %d event(s) it had not reported "
            "delivered are counted as relay_lost",
            link.pid,
            link.proc.returncode,
            max(lost.values(), default=0),
        )
        if deaths >= MAX_RESTARTS and not closing:
            with self._lock:
                self._fall_back(f"the relay child died {deaths} times")

    def _fall_back(self, why: str) -> None:
        """(under ``_lock``) Deliver in-process from now on; one warning."""
        if self._fallback is not None:
            return
        logger.warning("fanout: %s; delivering in-process from now on", why)
        try:
            self._fallback = self._build_fallback()
        except FanoutError as exc:
            logger.error("fanout: in-process delivery could not start either: %s", exc)
            self._fallback = []

    def _deliver_in_process(self, channels: list[Channel], batch: Sequence[Event]) -> None:
        by_name = {c.name: c for c in channels}
        for event in batch:
            if type(event) is Routed:
                channel = by_name.get(event.to)
                if channel is not None:
                    channel.emit(event)
            else:
                for channel in channels:
                    channel.emit(event)

    def _forward_failure(self, msg: dict[str, Any]) -> None:
        """A failure in the child (already dead-lettered there) for the app's on_error."""
        if self._on_error is None:
            return
        try:
            events = tuple(Event.from_dict(e, max_bytes=None) for e in msg.get("events", ()))
            failure = DeliveryFailure(
                str(msg["provider"]),
                str(msg["reason"]),
                str(msg.get("error", "")),
                events,
                msg.get("status"),
            )
        except (FanoutError, KeyError, TypeError, ValueError):  # never stop the reader
            logger.exception("fanout: a failure relayed by the child could not be read")
            return
        hand_over(failure, None, self._on_error, logger)

    def _fail(self, name: str, reason: str, events: Sequence[Event], error: str) -> None:
        """Failed events of the relay itself, for provider ``name``: its dead letters and
        on_error call, by the path an in-process channel's failure takes. (Counted by the
        caller: the relay's counts are kept per provider, not per channel.)"""
        if events:
            failure = DeliveryFailure(name, reason, error, tuple(events), None)
            hand_over(failure, self._dead_letters, self._on_error, logger)

    def _handoff_failed(self, failure: DeliveryFailure) -> None:
        """The relay channel failed ``failure.events`` (they never reached a child): each
        provider they were meant for gets them as its own failure, counted for it alone
        (an event routed to one provider was counted ``routed`` for the others)."""
        for name in self.names:
            mine = [
                plain_event(e)
                for e in failure.events
                if type(e) is not Routed or e.to == name
            ]
            if mine:
                with self._lock:
                    self._tally[name].lose({failure.reason: len(mine)})
            self._fail(name, failure.reason, mine, failure.error)

    # -- counts ----------------------------------------------------------------------

    def report(self, name: str, local: Mapping[str, int]) -> ChannelReport:
        relay = self.channel.report()
        with self._lock:
            tally = self._tally[name]
            delivered, retries, batches = tally.delivered, tally.retries, tally.batches
            losses = dict(tally.losses)
            link = self._link
            fallback = self._fallback
        pending = relay.pending
        if link is not None:
            pending += link.unresolved()[name]
            with link.latest_lock:
                latest = dict(link.latest.get(name, {}))
            delivered += int(latest.get("delivered", 0))
            retries += int(latest.get("retries", 0))
            batches += int(latest.get("batches", 0))
            _merge(losses, latest.get("losses", {}))
        for channel in fallback or ():
            if channel.name == name:
                own = channel.report()
                delivered += own.delivered
                retries += own.retries
                batches += own.batches
                pending += own.pending
                _merge(losses, own.losses)
        # The relay channel's failures were counted per provider (``_handoff_failed``); its
        # drops before any attempt (queue full, closed) count for every provider.
        _merge(losses, {r: n for r, n in relay.losses.items() if r in _DROPPED_BY_RELAY})
        _merge(losses, local)
        return ChannelReport(
            provider=name,
            delivered=delivered,
            failed=sum(n for r, n in losses.items() if r in FAILED_REASONS),
            dropped=sum(n for r, n in losses.items() if r in DROPPED_REASONS),
            skipped=sum(n for r, n in losses.items() if r in SKIPPED_REASONS),
            pending=pending,
            retries=retries,
            batches=batches,
            losses=losses,
        )

    def channels(self) -> list[ChannelLike]:
        """The endpoints, for the client's list of channels: not ``Channel`` s, but every
        member the client uses of one (:class:`~fanout._channel.ChannelLike`)."""
        return list(self.endpoints)

    def child_received(self) -> int:
        """Events the running child says it has read (tests wait on it)."""
        link = self._link
        return 0 if link is None else link.received

    def child_pid(self) -> int | None:
        """The running child's pid (``None`` before the first event, or in-process)."""
        link = self._link
        return None if link is None else link.pid

    # -- flush and shutdown (through the leader endpoint) ------------------------------------

    def finish_handoff_and_ask(self, target: int, deadline: float) -> bool:
        """Hand off everything up to ``target``, then have the child flush (or shut down)
        within what is left of ``deadline``; ``True`` when everything was settled."""
        done = self.channel.wait(target, deadline)
        link = self._link
        if link is not None and not link.dead.is_set():
            left = deadline - time.monotonic()
            # The child's own deadline ends a little earlier, for its answer to come back.
            margin = min(0.05, max(0.0, left) * 0.1)
            op = "shutdown" if self.closing else "flush"
            answer = link.request(op, deadline, timeout=max(0.0, left - margin))
            done = done and answer is not None and not answer.get("timed_out", True)
        for channel in self._fallback or ():
            t = channel.request_flush()
            try:
                done = channel.wait(t, deadline) and done
            finally:
                channel.end_flush()
        return done

    def begin_shutdown(self) -> None:
        self.closing = True
        self.channel.begin_shutdown()
        for channel in self._fallback or ():
            channel.begin_shutdown()

    def finish_shutdown(self, deadline: float) -> None:
        self.channel.finish_shutdown(deadline)
        link = self._link
        if link is not None:
            # The child was told to shut down within the deadline; a little grace to exit.
            # A hand-off still blocked on a full pipe (a stopped child) keeps the pipe.
            grace = max(0.0, deadline - time.monotonic()) + 1.0
            if not link.close_input(grace) or not link.wait_exit(grace):
                logger.warning("fanout: the relay child %d did not exit; killing it", link.pid)
                link.kill()
            link.gone.wait(2.0)  # its reader counts (and dead-letters) what it lost
        for channel in self._fallback or ():
            channel.finish_shutdown(deadline)

    # -- fork ------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked app process starts its own child at its first event."""
        link = self._link
        if link is not None:
            link.forget_after_fork()
        self._init_runtime()
        if self._dead_letters is not None:
            self._dead_letters.reset_after_fork()
        for endpoint in self.endpoints:
            endpoint.reset_after_fork()


#: What the relay channel drops before any attempt (``Channel._lose``, no event list to
#: tell the providers apart): counted for every provider.
_DROPPED_BY_RELAY: Final = frozenset({"queue_full", "closed"})


def _merge(into: dict[str, int], losses: Mapping[str, int]) -> None:
    for reason, n in losses.items():
        if n:
            into[reason] = into.get(reason, 0) + int(n)


class _RelayProvider:
    """The relay channel's provider: hands each batch to the child."""

    name = "relay"

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def send(self, batch: Sequence[Event]) -> None:
        self._relay.send(batch)


class RelayEndpoint:
    """What the client sees of one provider in process mode: its name, its delivery
    options, its counts. Events reach it only when routed to it (``providers=``); every
    other event reaches all providers through the one relay channel. The first endpoint
    (the leader) runs the relay's flush and shutdown; the others follow it."""

    def __init__(self, relay: Relay, name: str, options: Delivery, *, leader: bool) -> None:
        self.name = name
        self.options = dataclasses.replace(options, sync=False)
        self._relay = relay
        self._leader = leader
        self._local: dict[str, int] = {}
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        self._relay.channel.emit(Routed.of(event, self.name))

    def skip_routed(self) -> None:
        with self._lock:
            self._local["routed"] = self._local.get("routed", 0) + 1

    def report(self) -> ChannelReport:
        with self._lock:
            local = dict(self._local)
        return self._relay.report(self.name, local)

    def pending(self) -> int:
        return self.report().pending

    def request_flush(self) -> int:
        return self._relay.channel.request_flush() if self._leader else 0

    def wait(self, target: int, deadline: float) -> bool:
        if not self._leader:
            return True
        return self._relay.finish_handoff_and_ask(target, deadline)

    def end_flush(self) -> None:
        if self._leader:
            self._relay.channel.end_flush()

    def begin_shutdown(self) -> None:
        if self._leader:
            self._relay.begin_shutdown()

    def finish_shutdown(self, deadline: float) -> None:
        if self._leader:
            self._relay.finish_shutdown(deadline)

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._local = {}


def check_process_mode(instances: Sequence[object], sync: Sequence[str]) -> None:
    """What process mode cannot do, said at start-up (``ConfigError``, never silently)."""
    if instances:
        raise ConfigError(
            "FANOUT_DELIVERY=process needs providers by name: provider objects cannot be "
            "sent to the delivery process",
            variable="FANOUT_DELIVERY",
        )
    if sync:
        raise ConfigError(
            f"FANOUT_DELIVERY=process cannot deliver in sync mode (sync: {', '.join(sync)})",
            variable="FANOUT_DELIVERY",
        )


def json_config(value: Any, variable: str) -> Any:
    """``value`` as JSON for the child, or a ``ConfigError`` (never quoting the value)."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        raise ConfigError(
            f"FANOUT_DELIVERY=process needs {variable} that can be written as JSON",
            variable=variable,
        ) from None


def wire_process(
    *,
    env: Mapping[str, str],
    options: ClientOptions,
    names: Sequence[str],
    delivery: Mapping[str, Delivery],
    instances: Sequence[object],
    kwargs: Mapping[str, Any],
    on_error: Callable[[DeliveryFailure], None] | None,
    fallback: Callable[[], list[Channel]],
) -> Relay:
    """The relay for a client in process mode (``_setup.wire``'s one hook).

    The child gets what the app's client was given: the environment mapping, the provider
    names already selected here, and the keyword arguments that configure providers and
    delivery (as JSON), so both processes resolve the same configuration.
    """
    check_process_mode(instances, [n for n, o in delivery.items() if o.sync])
    spool_dir = kwargs.get("spool_dir")
    config = {
        "env": dict(env),
        "providers": list(names),
        "settings": json_config(kwargs.get("settings") or {}, "settings"),
        "delivery": json_config(
            {k: v for k, v in (kwargs.get("delivery") or {}).items() if v is not None},
            "delivery",
        ),
        "per_provider_delivery": json_config(
            kwargs.get("per_provider_delivery") or {}, "delivery"
        ),
        "forward_failures": on_error is not None,
        "options": {
            "allow_plugins": None if options.plugins is None else list(options.plugins),
            "disable_plugins": list(options.disable_plugins),
            "shutdown_timeout": options.shutdown_timeout,
            "dead_letter_dir": (
                None if options.dead_letter_dir is None else str(options.dead_letter_dir)
            ),
            "spool_dir": None if spool_dir is None else str(spool_dir),
        },
    }
    return Relay(
        names=names,
        options=delivery,
        child_config=config,
        on_error=on_error,
        fallback=fallback,
        shutdown_timeout=options.shutdown_timeout,
        dead_letters=(
            None if options.dead_letter_dir is None else DeadLetters(options.dead_letter_dir)
        ),
    )
