"""History import: read export files line by line and turn each record into an ``Event``.

Formats (``--format``): ``fanout`` (the collector protocol's events), ``segment`` (Segment
messages, as the Tracking API takes them; a line may also be a whole ``{"batch": [...]}``
body as the SDKs send it), ``posthog`` (event export rows: ``uuid``, ``event``,
``distinct_id``, ``properties``, ``timestamp``), ``mixpanel`` (raw export: ``event`` and
``properties`` with ``time``, ``distinct_id``, ``$insert_id``) and ``csv`` with a column
mapping. Each vendor's own id becomes the event id, so importing a file twice, or data that
also arrived live, counts once; a record with no id gets one derived from its content, for
the same reason.

Files are JSON lines or CSV, plain or gzip (detected by its magic bytes), or ``-`` for
stdin. :func:`read_records` yields ``(line number, byte offset after the line, record)``
so a checkpoint can resume from an offset without reading what came before.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final, cast

from ._events import Event, build, build_event
from ._exceptions import InvalidEvent

_fast_loads: Callable[[bytes], Any] | None
try:
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - PyPy: the standard library alone
    _fast_loads = None

__all__ = ["FORMATS", "ImportError_", "convert", "detect_format", "read_records"]

FORMATS: Final = ("fanout", "segment", "posthog", "mixpanel", "csv")
_NAMESPACE: Final = uuid.UUID("6f1b6c1e-2d0a-4c55-9b7e-6a5f0d3c2b11")


class ImportError_(ValueError):  # noqa: N801 - ImportError is a builtin
    """A record that cannot become an event; the message says why."""


#: Digits mapped to ``0``: a run of 19 zeros in a translated line is a run of 19 digits, the
#: only way a line can hold an integer beyond 64 bits, which orjson would turn into a float
#: without a word (the standard library keeps it exact, and validation then rejects it by
#: name). ``bytes.translate`` plus ``in`` finds one at a fifth of a regex search's cost, and
#: once per block of lines rather than per line.
_DIGITS: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN: Final = b"0" * 19
#: Bytes read at a time from a JSON-lines file.
BLOCK: Final = 1 << 20


def has_long_number(raw: bytes) -> bool:
    """Whether ``raw`` holds a run of 19 or more digits (see ``_DIGITS``)."""
    return _LONG_RUN in raw.translate(_DIGITS)


def loads_line(raw: bytes, *, checked: bool = False) -> Any:
    """One JSON line, decoded exactly as ``json.loads`` decodes it, but by orjson (about a
    quarter of the cost) wherever the two agree: orjson is used only for lines without a
    19-digit run (``checked``: the caller has made sure of that for a whole block), and
    anything it refuses (NaN, a byte-order mark, UTF-16) goes to the standard library,
    whose result or error message stands."""
    if _fast_loads is not None and (checked or not has_long_number(raw)):
        try:
            return _fast_loads(raw)
        except ValueError:
            pass
    return json.loads(raw)


def _open_binary(path: str) -> tuple[IO[bytes], bool]:
    """The file's bytes (gunzipped when gzip) and whether it can seek to an offset."""
    if path == "-":
        return sys.stdin.buffer, False
    raw = open(path, "rb")  # noqa: SIM115 - closed by read_records
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw)), False
    return raw, True


def read_records(
    path: str, fmt: str, *, start_line: int = 0, start_offset: int = 0
) -> Iterator[tuple[int, int, Any]]:
    """``(line, offset after it, record or an ImportError_)`` from ``start_line`` on.

    JSON lines give dicts; CSV gives dicts of column → text. A plain file seeks straight to
    ``start_offset``; a gzip file or stdin skips lines (they cannot seek).
    """
    f, seekable = _open_binary(path)
    try:
        line_no = 0
        offset = 0
        if start_line and seekable:
            f.seek(start_offset)
            line_no, offset = start_line, start_offset
        if fmt == "csv":
            if not seekable:
                line_no = offset = 0
            yield from _csv_records(f, line_no, offset, start_line)
            return
        yield from _json_records(f, line_no, offset, start_line)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _json_records(
    f: IO[bytes], line_no: int, offset: int, start_line: int
) -> Iterator[tuple[int, int, Any]]:
    """Lines in blocks of ``BLOCK`` bytes: one read, one split and one long-number check per
    block instead of per line. ``read1`` returns what a pipe has so far, so a slow stdin is
    imported as it arrives rather than a megabyte at a time."""
    read = getattr(f, "read1", f.read)
    tail = b""
    while True:
        block = read(BLOCK)
        if not block:
            break
        buf = tail + block if tail else block
        lines = buf.split(b"\n")
        tail = lines.pop()
        checked = not has_long_number(buf)
        for raw in lines:
            line_no += 1
            offset += len(raw) + 1
            if line_no <= start_line or not raw.strip():
                continue
            try:
                record = loads_line(raw, checked=checked)
            except ValueError as exc:
                yield line_no, offset, ImportError_(f"not JSON: {exc}")
                continue
            yield line_no, offset, record
    if tail:  # a last line without a newline
        line_no += 1
        offset += len(tail)
        if line_no > start_line and tail.strip():
            try:
                yield line_no, offset, loads_line(tail)
            except ValueError as exc:
                yield line_no, offset, ImportError_(f"not JSON: {exc}")


def _csv_records(
    f: IO[bytes], line_no: int, offset: int, start_line: int
) -> Iterator[tuple[int, int, Any]]:
    """One record per line (no quoted newlines), so lines and offsets stay exact. The
    header is read from the top even when resuming: it names the columns."""
    if line_no:
        f.seek(0)
    header_raw = f.readline()
    header = next(csv.reader([header_raw.decode("utf-8-sig")]))
    if line_no:
        f.seek(offset)
    else:
        line_no, offset = 1, len(header_raw)
    for raw in f:
        line_no += 1
        offset += len(raw)
        if line_no <= start_line or not raw.strip():
            continue
        try:
            values = next(csv.reader([raw.decode("utf-8")]))
        except (csv.Error, UnicodeDecodeError) as exc:
            yield line_no, offset, ImportError_(f"bad CSV: {exc}")
            continue
        if len(values) != len(header):
            yield line_no, offset, ImportError_(
                f"{len(values)} columns where the header has {len(header)}"
            )
            continue
        yield line_no, offset, dict(zip(header, values, strict=True))


def detect_format(record: Any) -> str | None:
    """Guess a JSON record's format from its fields (``--format`` overrides)."""
    if not isinstance(record, Mapping):
        return None
    if "batch" in record and isinstance(record["batch"], list) and record["batch"]:
        return detect_format(record["batch"][0])
    if "distinct_id" in record and "uuid" in record:
        return "posthog"
    props = record.get("properties")
    if "event" in record and isinstance(props, Mapping) and "distinct_id" in props:
        return "mixpanel"
    if "type" in record and ("messageId" in record or "userId" in record
                             or "anonymousId" in record):
        return "segment"
    if "kind" in record or "event_id" in record:
        return "fanout"
    return None


def _derived_id(fmt: str, record: Any) -> str:
    """A stable id for a record without one: importing it twice still counts once."""
    digest = hashlib.sha256(
        json.dumps(record, sort_keys=True, default=str).encode("utf-8")
    ).hexdigest()
    return str(uuid.uuid5(_NAMESPACE, f"{fmt}:{digest}"))


# The converters call build_event directly and let InvalidEvent through: convert() turns
# it into ImportError_ once, for every format. They copy a record's mappings only where they
# change them; build_event makes the event's own copies anyway.


def _from_fanout(r: Mapping[str, Any], mapping: Mapping[str, str]) -> list[Event]:
    """What :meth:`Event.from_dict` does (no size limit, ``kind`` defaulting to track, the
    same checks), without its keyword hops: ``build`` takes the values positionally, which
    saves a dict per hop and about a tenth of import's CPU per event."""
    get = r.get
    event_id = get("event_id") or _derived_id("fanout", r)
    group = get("group")
    if not group:
        group_type = group_id = None
    elif type(group) is dict or isinstance(group, Mapping):
        group_type, group_id = group.get("type"), group.get("id")
    else:
        raise InvalidEvent("group must be an object with 'type' and 'id'", path="group")
    return [
        build(
            get("kind", "track"), get("name"), get("person_id"), get("anonymous_id"),
            get("properties"), get("traits"), get("context"), event_id, get("timestamp"),
            group_type, group_id, get("previous_id"), None,
        )
    ]  # fmt: skip


_SEGMENT_KINDS: Final = {
    "track": "track", "identify": "identify", "page": "page", "screen": "page",
    "group": "group", "alias": "alias",
}


def _from_segment(r: Mapping[str, Any], mapping: Mapping[str, str]) -> list[Event]:
    if isinstance(r.get("batch"), list):
        return [e for m in r["batch"] for e in _from_segment(_obj(m), mapping)]
    kind = _SEGMENT_KINDS.get(str(r.get("type", "")).lower())
    if kind is None:
        raise ImportError_(f"unknown Segment message type {r.get('type')!r}")
    props = _obj(r.get("properties") or {})
    name = r.get("event") if kind == "track" else r.get("name")
    if kind == "page":
        props = {**props, "path": props.get("path") or props.get("url") or name or "/"}
    return [
        build_event(
            kind=kind,
            name=name,
            person_id=r.get("userId"),
            anonymous_id=r.get("anonymousId"),
            properties=props or None,
            traits=r.get("traits"),
            context=r.get("context"),
            event_id=r.get("messageId") or _derived_id("segment", r),
            timestamp=r.get("timestamp") or r.get("originalTimestamp"),
            group_type="group" if kind == "group" else None,
            group_id=r.get("groupId"),
            previous_id=r.get("previousId"),
        )
    ]


def _from_posthog(r: Mapping[str, Any], mapping: Mapping[str, str]) -> list[Event]:
    props = _obj(r.get("properties") or {})
    name = r.get("event")
    common: dict[str, Any] = {
        "person_id": r.get("distinct_id"),
        "event_id": r.get("uuid") or _derived_id("posthog", r),
        "timestamp": r.get("timestamp"),
    }
    if name == "$identify":
        return [build_event(kind="identify", traits=props.get("$set") or None, **common)]
    if name == "$pageview":
        path = props.get("$pathname") or props.get("$current_url") or "/"
        return [build_event(kind="page", properties={**props, "path": path}, **common)]
    return [build_event(kind="track", name=name, properties=props or None, **common)]


def _from_mixpanel(r: Mapping[str, Any], mapping: Mapping[str, str]) -> list[Event]:
    props = dict(_obj(r.get("properties") or {}))
    when = props.pop("time", None)
    if isinstance(when, (int, float)) and when > 1e11:  # milliseconds (newer exports)
        when = when / 1000.0
    distinct = props.pop("distinct_id", None)
    insert_id = props.pop("$insert_id", None)
    return [
        build_event(
            kind="track",
            name=r.get("event"),
            person_id=str(distinct) if distinct not in (None, "") else None,
            properties=props or None,
            event_id=insert_id or _derived_id("mixpanel", r),
            timestamp=when,
        )
    ]


#: CSV columns that fill event fields (``--map field=column``); others become properties.
CSV_FIELDS: Final = ("name", "person_id", "anonymous_id", "event_id", "timestamp", "kind")


def _from_csv(r: Mapping[str, Any], mapping: Mapping[str, str]) -> list[Event]:
    columns = {field: mapping.get(field, field) for field in CSV_FIELDS}
    used = set(columns.values())
    fields = {f: (r.get(c) or None) for f, c in columns.items()}
    props = {k: v for k, v in r.items() if k not in used and v != ""}
    timestamp: Any = fields["timestamp"]
    if isinstance(timestamp, str) and timestamp.replace(".", "", 1).isdigit():
        timestamp = float(timestamp)
    return [
        build_event(
            kind=fields["kind"] or "track",
            name=fields["name"],
            person_id=fields["person_id"],
            anonymous_id=fields["anonymous_id"],
            properties=props or None,
            event_id=fields["event_id"] or _derived_id("csv", r),
            timestamp=timestamp,
        )
    ]


_CONVERTERS: Final[dict[str, Callable[[Mapping[str, Any], Mapping[str, str]], list[Event]]]] = {
    "fanout": _from_fanout,
    "segment": _from_segment,
    "posthog": _from_posthog,
    "mixpanel": _from_mixpanel,
    "csv": _from_csv,
}


def _obj(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:  # what JSON gives: skips the ABC check
        return value
    if not isinstance(value, Mapping):
        raise ImportError_(f"expected a JSON object, got {type(value).__name__}")
    return value


def convert(fmt: str, record: Any, mapping: Mapping[str, str] | None = None) -> list[Event]:
    """The events of one record; ``ImportError_`` says why a record is rejected."""
    if isinstance(record, ImportError_):
        raise record
    try:
        return _CONVERTERS[fmt](_obj(record), mapping or {})
    except InvalidEvent as exc:
        raise ImportError_(str(exc)) from None


def default_format(path: str) -> str | None:
    name = Path(path).name.lower().removesuffix(".gz")
    return "csv" if name.endswith(".csv") else None
