"""The delivery process of process mode: ``python -m fanout._relay_child``.

It reads newline-delimited JSON frames on stdin from the app process (:mod:`fanout._relay`)
and runs an ordinary :class:`fanout.Client` with the app's providers and settings. The app
already ran the processors (and the IP setting), so this client runs none. Answers and
counts go back on stdout; logs go to stderr, which it shares with the app.

Frames in: ``hello`` (configuration, once), ``events`` (a batch; ``to`` names the one
provider of a routed event), ``flush`` / ``shutdown`` (with a timeout and an id to answer).
Frames out: ``ready`` or ``error``, ``reply`` (to flush / shutdown), ``stats`` (counts,
when they changed, at most every ``PUSH_INTERVAL``), ``failure`` (for the app's
``on_error``). Every outgoing frame carries the per-provider counts.

Its channels are the in-process ones, with two settings of their own, since no request
waits on this process's GIL: a provider whose batch size nobody chose sends
:data:`BATCH_SIZE` events a request instead of 100, and garbage collection skips what
start-up built (see :func:`_collect_less`).

End of input means the app is gone (a normal exit closes the pipe; so does ``kill -9``):
deliver what is held within ``FANOUT_SHUTDOWN_TIMEOUT``, then exit. SIGINT is ignored: a
Ctrl-C in a terminal reaches the whole process group, and the app decides when to stop.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any, Final

import orjson

from ._channel import Channel
from ._client import Client, channels_of
from ._events import Event
from ._exceptions import FanoutError, InvalidEvent
from ._relay_link import NICE, PIPE_BYTES, PUSH_INTERVAL, decode_event
from ._report import DeliveryFailure, FlushReport

__all__ = ["main"]


def reports(report: FlushReport) -> dict[str, dict[str, Any]]:
    """Per-provider counts as plain JSON (what the app's stats() adds up)."""
    return {
        name: {
            "delivered": r.delivered,
            "retries": r.retries,
            "batches": r.batches,
            "pending": r.pending,
            "losses": dict(r.losses),
        }
        for name, r in report.items()
    }


def accepts(channels: Mapping[str, Channel]) -> dict[str, dict[str, Any]]:
    """What each channel takes on arrival (the app holds nothing else for it)."""
    return {
        name: {"kinds": sorted(c.kinds), "max_event_bytes": c.limits.max_event_bytes}
        for name, c in channels.items()
    }


class _Output:
    """stdout, written whole frames at a time from several threads."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.received = 0

    def write(self, msg: dict[str, Any], client: Client | None = None) -> None:
        if client is not None:
            msg["reports"] = reports(client.stats())
            msg["received"] = self.received
        frame = orjson.dumps(msg) + b"\n"
        with self._lock:
            try:
                self._stream.write(frame)
                self._stream.flush()
            except (OSError, ValueError):  # the app is gone; its pipe with it
                pass


def _build(config: Mapping[str, Any], out: _Output) -> Client:
    options: Mapping[str, Any] = config.get("options", {})

    def forward(failure: DeliveryFailure) -> None:
        out.write(
            {
                "op": "failure",
                "provider": failure.provider,
                "reason": failure.reason,
                "error": failure.error,
                "status": failure.status_code,
                "events": [e.to_dict() for e in failure.events],
            }
        )

    env = dict(config.get("env", {}))
    env["FANOUT_DELIVERY"] = "thread"  # this process delivers; it does not relay again
    return Client(
        providers=list(config["providers"]),
        settings=config.get("settings") or {},
        delivery=config.get("per_provider_delivery") or {},
        processors=[],  # the app ran them
        ip="keep",  # likewise its FANOUT_IP
        on_error=forward if config.get("forward_failures") else None,
        allow_plugins=options.get("allow_plugins"),
        disable_plugins=options.get("disable_plugins"),
        shutdown_timeout=options.get("shutdown_timeout"),
        dead_letter_dir=options.get("dead_letter_dir"),
        spool_dir=options.get("spool_dir"),
        environ=env,
        register_atexit=False,
        **(config.get("delivery") or {}),
    )


def _pusher(client: Client, out: _Output, stop: threading.Event) -> None:
    last = b""
    while not stop.wait(PUSH_INTERVAL):
        current = orjson.dumps([reports(client.stats()), out.received])
        if current != last:
            last = current
            out.write({"op": "stats"}, client)


#: Events per request for a provider whose batch size nobody chose (no
#: ``FANOUT_BATCH_SIZE``, no ``preferred_events`` of its own), instead of 100. An app's
#: workers keep batches small so that each holds the GIL briefly while requests wait;
#: here no request waits, and every request costs the same few hundred µs of CPU (h11,
#: headers, the socket) whatever its size: 500 a request instead of 100 took the four
#: providers' delivery from 52.5 to 41.0 µs per event (4,000 events/s, six A/B pairs).
#: The same as the app's hand-offs (``RELAY_BATCH``); the providers' limits still apply.
BATCH_SIZE: Final = 500

#: The delivery process's first garbage-collection threshold (CPython's default is 700).
#: Each hand-off makes a few thousand short-lived containers (the decoded events, their
#: mappings, each provider's messages) that are gone once their batch is sent; with the
#: default, collections keep scanning and promoting them while they wait in the queues.
#: With this one they are mostly gone before a collection looks (3-4 µs less CPU per
#: event delivered to four providers, measured A/B with benchmarks/cpu_per_event.py).
GC_THRESHOLD: Final = 10_000


def _collect_less() -> None:
    """Garbage collection for a process that only delivers: what start-up built (modules,
    the client, the providers) lives as long as the process, so :func:`gc.freeze` keeps
    every later collection from walking it again; and the first generation is collected
    less often (:data:`GC_THRESHOLD`). Reference counting frees the events, as before."""
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, second, third)


def serve(stdin: IO[bytes], out: _Output) -> int:
    line = stdin.readline()
    if not line:
        return 0
    try:
        client = _build(orjson.loads(line), out)
    except (FanoutError, KeyError, TypeError, ValueError) as exc:
        out.write({"op": "error", "error": f"{type(exc).__name__}: {exc}"})
        return 2
    channels = channels_of(client)
    for channel in channels.values():
        channel.set_default_batch_size(BATCH_SIZE)
    _collect_less()
    out.write({"op": "ready", "pid": os.getpid(), "accepts": accepts(channels)}, client)
    stop = threading.Event()
    threading.Thread(target=_pusher, args=(client, out, stop), daemon=True).start()
    try:
        for line in stdin:
            msg = orjson.loads(line)
            op = msg.get("op")
            if op == "events":
                _events(client, channels, msg, out)
            elif op == "flush":
                threading.Thread(
                    target=_flush, args=(client, out, msg), name="fanout-relay-flush"
                ).start()
            elif op == "shutdown":
                report = client.shutdown(timeout=float(msg.get("timeout", 0.0)))
                out.write({"op": "reply", "id": msg.get("id"), "timed_out": report.timed_out},
                          client)
                return 0
        client.shutdown()  # EOF: the app is gone; FANOUT_SHUTDOWN_TIMEOUT
        return 0
    finally:
        stop.set()


def _events(
    client: Client, channels: Mapping[str, Channel], msg: Mapping[str, Any], out: _Output
) -> None:
    """One hand-off: its events onto the channels, in order.

    This client runs no processors and no sync channel (see :func:`_build`), so fanning an
    event out is putting it on every channel: each channel takes the whole batch at once
    (``Channel.emit_many``, one queue lock per channel and batch instead of a ``put`` per
    event and channel). A batch with routed events (``to``) goes event by event.
    """
    routes: Mapping[str, str] = msg.get("to") or {}
    raw = msg.get("events", ())
    out.received += len(raw)
    try:
        events = [decode_event(data) for data in raw]
    except (InvalidEvent, TypeError, ValueError):  # a broken frame is a bug, not a crash
        _one_by_one(client, channels, raw, routes)
        return
    if not routes:
        for channel in channels.values():
            channel.emit_many(events)
        return
    for i, event in enumerate(events):
        _route(client, channels, event, routes.get(str(i)))


def _one_by_one(
    client: Client, channels: Mapping[str, Channel], raw: Sequence[Any], routes: Mapping[str, str]
) -> None:
    """A batch with an event that cannot be read back: the others, each on its own."""
    for i, data in enumerate(raw):
        try:
            event = decode_event(data)
        except (InvalidEvent, TypeError, ValueError):
            sys.stderr.write("fanout relay: an event could not be read back; skipped\n")
            continue
        _route(client, channels, event, routes.get(str(i)) if routes else None)


def _route(client: Client, channels: Mapping[str, Channel], event: Event, to: str | None) -> None:
    if to is None:
        client.send(event)
    else:
        channel = channels.get(to)
        if channel is not None:
            channel.emit(event)


def _flush(client: Client, out: _Output, msg: Mapping[str, Any]) -> None:
    report = client.flush(timeout=float(msg.get("timeout", 0.0)))
    out.write({"op": "reply", "id": msg.get("id"), "timed_out": report.timed_out}, client)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:  # not permitted here: deliver at the app's priority
        pass
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write on the frames' pipe
    # One read per hand-off rather than 8 KiB at a time (see PIPE_BYTES).
    stdin = open(sys.stdin.fileno(), "rb", buffering=PIPE_BYTES, closefd=False)  # noqa: SIM115
    return serve(stdin, _Output(stdout))


if __name__ == "__main__":
    sys.exit(main())
