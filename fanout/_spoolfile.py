"""The on-disk format of a spool, and reading one back.

A spool is a directory ``<root>/<provider>/<pid>-<token>/`` owned by one process for one
provider. It holds a ``lock`` file, on which the owner holds an exclusive ``flock`` for
its whole life (the kernel releases it when the process dies, whatever kills it), and
append-only segment files named by the sequence number of their first event. Each segment
is a series of lines:

``H <seq>``
    first line of a segment: the sequence number of its first event.
``T <unix time>``
    the time the events after it were spooled (one per group commit; ages are counted
    from it, ``FANOUT_SPOOL_MAX_AGE``).
``[...]``
    one event: a JSON array of its twelve fields in :class:`~fanout.Event`'s order (kind,
    event_id, timestamp, person_id, anonymous_id, name, properties, traits, context,
    group_type, group_id, previous_id), the timestamp in ISO 8601 with microseconds. It
    takes the next sequence number. Positional rather than the canonical object because
    orjson writes an event's own tuple in one call, about a quarter of the cost of building
    the canonical dict first (:meth:`Event.to_json`), and the writer thread's CPU is taken
    from the application's threads (they share the GIL).
``B <n> [[...],...]``
    ``n`` events, the ``[...]`` arrays above in one JSON array: what the writer appends per
    group commit, in one orjson call (about 0.35 µs less per event than a call per event:
    the per-call overhead, and one buffer instead of one per event). They take the next
    ``n`` sequence numbers, so the numbering holds even if the array proves unreadable
    (its unresolved events are then counted as corrupt).
``{...}``
    one event, its canonical JSON (:meth:`Event.to_json`), as spools written by fanout
    before the positional lines hold; still read, so a deploy that replaces a killed
    process with a newer one loses nothing.
``X``
    a sequence number whose event could not be encoded (kept so the numbering holds).
``A <seq>``
    every event numbered below ``seq`` is resolved (delivered or dead-lettered).

A torn last line (a crash or a full disk in the middle of a write) has no newline and is
ignored. Append-only files were chosen over SQLite in WAL mode after timing both
(``docs/spool.md``): one ``write`` plus one ``fdatasync`` per group commit ran at about twice
SQLite's rate, and reading them needs nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from ._events import Event, build

_dumps: Callable[..., bytes] | None
_loads: Callable[[bytes], Any]
_NEWLINE = 0
try:
    from orjson import OPT_APPEND_NEWLINE as _NEWLINE
    from orjson import dumps as _dumps
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - PyPy: canonical lines through the standard library
    _dumps, _loads = None, json.loads

__all__ = [
    "LOCK_NAME",
    "SEGMENT_SUFFIX",
    "Payload",
    "SpooledBatch",
    "SpoolInfo",
    "SpoolRecords",
    "decode_event",
    "decode_payload",
    "encode_batch",
    "encode_event",
    "encode_lines",
    "lock_if_dead",
    "read_spool",
    "remove_spool",
    "spool_dirs",
    "spool_info",
]

LOCK_NAME: Final = "lock"
SEGMENT_SUFFIX: Final = ".seg"


#: The fields a positional line holds, in order (``size`` and ``footprint`` are recomputed).
FIELDS: Final = Event._fields[:12]


def encode_event(event: Event) -> bytes:
    """One event's line, without the newline: positional where orjson is installed, else the
    canonical object. Raises what the encoder raises for a value JSON cannot hold."""
    if _dumps is not None:
        return _dumps(event[:12], default=dict)
    return event.to_json()


def encode_lines(events: Sequence[Event], into: bytearray | None = None) -> bytearray:
    """The lines of a group commit, newline-terminated, appended to ``into`` (a new buffer
    if ``None``), which is returned. An event that cannot be encoded (none that validation
    let through) becomes an ``X`` line, which keeps the numbering; the channel reports the
    event itself when it fails to send.

    Each line goes straight into the one buffer the commit writes and is dropped at once:
    keeping a list of the lines for a ``join`` cost a page fault per event here (orjson's
    output buffers, kept alive, each touch a fresh page), about 3 µs of kernel time per
    event, twice orjson's own encoding time.
    """
    out = bytearray() if into is None else into
    start = len(out)
    if (dumps := _dumps) is not None:
        try:
            for event in events:
                out += dumps(event[:12], default=dict, option=_NEWLINE)
        except Exception:  # noqa: BLE001 - the slow path below sorts each event out
            del out[start:]
        else:
            return out
    for event in events:
        try:
            out += encode_event(event)
            out += b"\n"
        except Exception:  # noqa: BLE001 - keep the numbering; the channel reports it
            out += b"X\n"
    return out


def encode_batch(events: Sequence[Event], into: bytearray) -> bytearray:
    """A group commit's events as one ``B`` line appended to ``into`` (returned): one orjson
    call for the lot. Where orjson is missing, or refuses an event, the one-line-per-event
    form of :func:`encode_lines` instead (which sorts the culprit out as an ``X`` line)."""
    if (dumps := _dumps) is not None and events:
        try:
            body = dumps([event[:12] for event in events], default=dict)
        except Exception:  # noqa: BLE001 - encode_lines handles each event alone
            pass
        else:
            into += b"B %d " % len(events)
            into += body
            into += b"\n"
            return into
    return encode_lines(events, into)


def _encode_values(values: list[Any]) -> bytes:
    """JSON values as orjson or the standard library read them, which either writes back."""
    try:
        if _dumps is None:
            raise TypeError("no orjson")
        return _dumps(values)
    except TypeError:
        return json.dumps(values, separators=(",", ":"), default=str).encode()


def decode_payload(payload: Payload) -> Event:
    """The event of a :class:`SpoolRecords` entry (:func:`decode_event`, same errors)."""
    if isinstance(payload, bytes):
        return decode_event(payload)
    batch, index = payload
    return decode_event(batch.item(index))


def decode_event(line: bytes | list[Any]) -> Event:
    """The event of one line, validated again as ``track()`` validates (a spool is a file
    anyone could have edited); ``ValueError``, ``TypeError`` or ``InvalidEvent`` if unfit.
    ``line`` is a line's bytes, or one already-parsed element of a ``B`` line's array."""
    data = _loads(line) if isinstance(line, bytes) else line
    if isinstance(data, list):
        if len(data) != len(FIELDS):
            raise ValueError(f"a spooled event has {len(FIELDS)} fields, not {len(data)}")
        # Unpacked by position into build()'s positional arguments: no dict per event.
        (kind, event_id, timestamp, person_id, anonymous_id, name, properties, traits,
         context, group_type, group_id, previous_id) = data
        return build(
            kind, name, person_id, anonymous_id, properties, traits, context, event_id,
            timestamp, group_type, group_id, previous_id, None,
        )
    return Event.from_dict(data, max_bytes=None)


def segment_name(first_seq: int) -> str:
    return f"{first_seq:016d}{SEGMENT_SUFFIX}"


def spool_dirs(root: Path, provider: str | None = None) -> Iterator[Path]:
    """Every spool directory under ``root`` (of one provider, or all)."""
    try:
        providers = [root / provider] if provider else sorted(p for p in root.iterdir())
    except OSError:
        return
    for pdir in providers:
        try:
            entries = sorted(pdir.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and (entry / LOCK_NAME).exists():
                yield entry


def lock_if_dead(spool: Path) -> int | None:
    """An fd holding the spool's lock if its owner is gone, else ``None``.

    ``flock`` is the test of life: the owner holds it from creation to exit, and the kernel
    drops it with the process, even after SIGKILL. Locks on separate opens conflict inside
    one process too, so a process never takes over its own spool.
    """
    try:
        fd = os.open(spool / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def owner_pid(spool: Path) -> int | None:
    try:
        return int((spool / LOCK_NAME).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _segments(spool: Path) -> list[Path]:
    try:
        return sorted(p for p in spool.iterdir() if p.name.endswith(SEGMENT_SUFFIX))
    except OSError:
        return []


class SpooledBatch:
    """The events of one ``B`` line, parsed only when the first of them is decoded: a
    take-over copies the line as it is (no parse, no re-encoding), and ``spool status``
    counts it by its ``n``."""

    __slots__ = ("count", "_payload", "_items")

    def __init__(self, count: int, payload: bytes | None, items: list[Any] | None = None):
        self.count = count
        self._payload = payload
        self._items = items

    @classmethod
    def of(cls, items: list[Any]) -> SpooledBatch:
        """Events already parsed (what is left of a B line an ack fell inside)."""
        return cls(len(items), None, items)

    def line(self) -> bytes:
        """The ``B`` line holding these events, newline-terminated."""
        if self._payload is None:
            self._payload = _encode_values(self._items or [])
        return b"B %d %s\n" % (self.count, self._payload)

    def item(self, index: int) -> Any:
        """The parsed array of event ``index``; ``ValueError`` if the line is unreadable or
        holds another number of events than it says (each of them is then corrupt)."""
        if self._items is None:
            try:
                items = _loads(self._payload or b"")
            except ValueError:
                items = None
            self._items = items if isinstance(items, list) and len(items) == self.count else []
        if not self._items:
            raise ValueError(f"a B line of {self.count} events that cannot be read")
        return self._items[index]


#: One waiting event as read from a spool: its line, or its place in a ``B`` line.
Payload = bytes | tuple[SpooledBatch, int]


@dataclasses.dataclass
class SpoolRecords:
    """What a spool holds that is not resolved yet, in order."""

    #: (spool time, event) per unresolved event (see :func:`decode_payload`).
    events: list[tuple[float, Payload]]
    #: Records that could not be read (not counting a torn last line).
    corrupt: int
    nbytes: int


def read_spool(spool: Path) -> SpoolRecords:
    """Read every segment of ``spool`` and return the events not yet acknowledged."""
    entries: list[tuple[int, float, bytes, int]] = []  # (first seq, time, payload, 0 | n)
    acked = 0
    seq = 0
    corrupt = 0
    nbytes = 0
    for path in _segments(spool):
        try:
            data = path.read_bytes()
        except OSError:
            corrupt += 1
            continue
        nbytes += len(data)
        end = data.rfind(b"\n")
        spooled = 0.0
        for line in data[: end + 1].splitlines():
            if not line:
                continue
            head = line[:1]
            if head == b"[" or head == b"{":
                entries.append((seq, spooled, line, 0))
                seq += 1
            elif head == b"B":
                space = line.find(b" ", 2)
                try:
                    count = int(line[2:space]) if space > 2 else -1
                except ValueError:
                    count = -1
                if count < 1:
                    corrupt += 1  # the numbering cannot hold past it: the acks will say
                    continue
                entries.append((seq, spooled, line[space + 1 :], count))
                seq += count
            elif head == b"X":
                seq += 1
            elif head in (b"H", b"T", b"A"):
                try:
                    value = float(line[2:])
                except ValueError:
                    corrupt += 1
                    continue
                if head == b"H":
                    seq = int(value)
                elif head == b"T":
                    spooled = value
                else:
                    acked = max(acked, int(value))
            else:
                corrupt += 1
    events: list[tuple[float, Payload]] = []
    for first, t, payload, count in entries:
        if not count:
            if first >= acked:
                events.append((t, payload))
            continue
        if first + count <= acked:
            continue
        skip = acked - first
        if skip <= 0:
            batch = SpooledBatch(count, payload)
        else:  # an ack inside the line: parsed now, and the rest kept
            try:
                items = _loads(payload)
            except ValueError:
                items = None
            if not isinstance(items, list) or len(items) != count:
                corrupt += count - skip
                continue
            batch = SpooledBatch.of(items[skip:])
        events.extend((t, (batch, i)) for i in range(batch.count))
    return SpoolRecords(events, corrupt, nbytes)


def remove_spool(spool: Path) -> None:
    """Delete a spool: segments first, the lock file last (the caller still holds it)."""
    for path in _segments(spool):
        with contextlib.suppress(OSError):
            path.unlink()
    with contextlib.suppress(OSError):
        (spool / LOCK_NAME).unlink()
    with contextlib.suppress(OSError):
        spool.rmdir()


@dataclasses.dataclass(frozen=True)
class SpoolInfo:
    """One spool as ``fanout spool status`` shows it."""

    path: Path
    provider: str
    pid: int | None
    alive: bool
    events: int
    nbytes: int
    oldest: float | None  # unix time the oldest waiting event was spooled

    @property
    def age(self) -> float | None:
        return None if self.oldest is None else max(0.0, time.time() - self.oldest)


def spool_info(spool: Path) -> SpoolInfo:
    fd = lock_if_dead(spool)
    alive = fd is None
    try:
        records = read_spool(spool)
    finally:
        if fd is not None:
            os.close(fd)
    times = [t for t, _ in records.events if t]
    return SpoolInfo(
        path=spool,
        provider=spool.parent.name,
        pid=owner_pid(spool),
        alive=alive,
        events=len(records.events),
        nbytes=records.nbytes,
        oldest=min(times) if times else None,
    )
