"""Reading dead letters back: the records :mod:`fanout._deadletter` writes, filtered.

``fanout deadletter replay`` sends them through a client's channels again (retries, limits
and counts apply), each event with its original id, so a replay of something that did
arrive after all is deduplicated by the backend.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._events import Event
from ._exceptions import InvalidEvent

__all__ = ["DeadLetter", "parse_since", "read_dead_letters", "dead_letter_files"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """``2h``, ``3d``, ``90m`` (ago) or an ISO 8601 date-time (UTC when naive)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    m = _RELATIVE.match(value)
    if m:
        return now - _dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        ts = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither like 2h / 3d nor an ISO 8601 time") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=_dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One line of a dead-letter file."""

    path: Path
    line: int
    raw: str
    provider: str
    reason: str
    error: str
    failed_at: _dt.datetime | None
    event: Event | None  # None: the line could not be read back
    problem: str | None = None


def dead_letter_files(directory: Path, provider: str | None = None) -> list[Path]:
    pattern = f"{provider}.jsonl" if provider else "*.jsonl"
    return sorted(directory.glob(pattern))


def read_dead_letters(path: Path) -> Iterator[DeadLetter]:
    provider = path.name.removesuffix(".jsonl")
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            yield _parse(path, n, raw, provider)


def _parse(path: Path, n: int, raw: str, provider: str) -> DeadLetter:
    try:
        data: Any = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        failed_at = data.get("failed_at")
        when = parse_since(failed_at) if isinstance(failed_at, str) else None
        event = Event.from_dict(data["event"], max_bytes=None)
    except (ValueError, KeyError, TypeError, InvalidEvent) as exc:
        return DeadLetter(path, n, raw, provider, "", "", None, None, f"unreadable: {exc}")
    return DeadLetter(
        path,
        n,
        raw,
        str(data.get("provider") or provider),
        str(data.get("reason", "")),
        str(data.get("error", "")),
        when,
        event,
    )
