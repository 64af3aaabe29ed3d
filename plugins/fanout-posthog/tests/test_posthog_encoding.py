"""MessageBuilder's shortcuts write the same bytes as its plain path."""

from __future__ import annotations

import datetime as dt

from fanout_posthog._mapping import MessageBuilder, encoder_writes_isoformat

from fanout import Event
from fanout.http import encode_json

UTC = dt.timezone.utc


def _events() -> list[Event]:
    base = dt.datetime(2026, 12, 1, 22, 30, 5, 123456, UTC)
    stamps = [base, base.replace(microsecond=0), base.replace(microsecond=1)]
    out = []
    for ts in stamps:
        out += [
            Event("track", timestamp=ts, person_id="u1", name="paid", properties={"n": 1}),
            Event("track", timestamp=ts, anonymous_id="a1", name="x", context={"ip": "1.2.3.4"}),
            Event("track", timestamp=ts, person_id="u1", name="g", group_type="co", group_id="c1"),
            Event("identify", timestamp=ts, person_id="u1", anonymous_id="a1", traits={"t": 1}),
            Event("page", timestamp=ts, person_id="u1", properties={"url": "https://x.io/a?b=1"}),
            Event("alias", timestamp=ts, person_id="u1", previous_id="a1"),
            Event("group", timestamp=ts, person_id="u1", group_type="co", group_id="c1"),
        ]
    return out


def test_native_timestamps_encode_exactly_as_isoformat_strings() -> None:
    assert encoder_writes_isoformat()  # orjson is a core dependency on CPython
    native = MessageBuilder(lib="l", lib_version="1", native_timestamps=True)
    text = MessageBuilder(lib="l", lib_version="1", native_timestamps=False)
    events = _events()
    strings = [text.message(e) for e in events]
    assert all(isinstance(m["timestamp"], str) for m in strings)
    assert [encode_json(native.message(e)) for e in events] == [encode_json(m) for m in strings]
    assert strings[1]["timestamp"] == "2026-12-01T22:30:05.123456+00:00"
    assert len({m["uuid"] for m in strings}) == len(events)
