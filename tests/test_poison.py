"""Defence in depth on the worker: an event that got past validation (by a bug, simulated
here with ``tuple.__new__``) and that the provider's encoder refuses costs only itself.

A real provider (``collector``) posts to a real local HTTP server; the batch is split like a
413 until only the bad event is left, which is dead-lettered as ``unencodable``.
"""

from __future__ import annotations

import gzip
import json
import threading

import pytest
from werkzeug import Request, Response

import fanout
from fanout._deadletter import DeadLetters
from fanout._events import Event, ReadOnlyDict, build_event

SENT = 100
BAD_INDEX = 37


def forge(event: Event, **fields: object) -> Event:
    """An Event built past validation, as only a bug in fanout could make one."""
    data = event._asdict()
    data.update(fields)
    return tuple.__new__(Event, tuple(data.values()))


class Collector:
    """A local stand-in for the collector's batch endpoint that records every event id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.ids: list[str] = []
        self.bodies: list[int] = []  # decompressed body sizes

    def __call__(self, request: Request) -> Response:
        body = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        batch = json.loads(body)["batch"]
        with self.lock:
            self.requests += 1
            self.bodies.append(len(body))
            self.ids.extend(e["event_id"] for e in batch)
        return Response(
            json.dumps({"accepted": len(batch), "duplicates": 0, "rejected": []}),
            content_type="application/json",
        )


@pytest.mark.parametrize(
    "poison",
    [
        {"properties": ReadOnlyDict({"note": "bad\ud800"})},
        {"properties": ReadOnlyDict({"bad\udfff": 1})},
        {"name": "checkout\ud800"},
    ],
    ids=["value", "key", "name"],
)
def test_one_unencodable_event_costs_only_itself(httpserver, tmp_path, make_client, poison):
    collector = Collector()
    httpserver.expect_request("/v1/batch", method="POST").respond_with_handler(collector)
    failures: list[fanout.DeliveryFailure] = []
    client = make_client(
        providers=["collector"],
        settings={"collector": {"url": httpserver.url_for("/").rstrip("/"), "key": "sk_test"}},
        dead_letter_dir=str(tmp_path),
        on_error=failures.append,
        batch_size=SENT,
        flush_interval=3600,
    )
    events = [
        build_event("track", name="x", person_id="u", properties={"i": i}) for i in range(SENT)
    ]
    events[BAD_INDEX] = forge(events[BAD_INDEX], **poison)
    for e in events:
        client.send(e)
    report = client.flush(timeout=30)["collector"]

    good = [e.event_id for i, e in enumerate(events) if i != BAD_INDEX]
    assert report.delivered == SENT - 1
    assert report.failed == 1
    assert report.losses == {"unencodable": 1}
    assert report.pending == 0 and report.retries == 0
    # Every good event reached the server exactly once: no loss, no duplicate.
    assert sorted(collector.ids) == sorted(good)
    assert len(collector.ids) == SENT - 1
    # Halving 100 down to [37]: [50:100] [0:25] [25:37] [43:50] [40:43] [38:40] go out,
    # once each; the halves holding the culprit never reach the server.
    assert collector.requests == 6
    # Dead-lettered exactly once, readable, and reported to on_error.
    lines = (tmp_path / "collector.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["reason"] == "unencodable"
    assert record["event"]["event_id"] == events[BAD_INDEX].event_id
    assert len(failures) == 1
    assert failures[0].reason == "unencodable"
    assert [e.event_id for e in failures[0].events] == [events[BAD_INDEX].event_id]


def test_dead_letters_never_raise_whatever_the_event_holds(tmp_path):
    ok = build_event("track", name="x", person_id="u", event_id="e-ok")
    forged = [
        forge(ok, event_id="e-surrogate", properties=ReadOnlyDict({"s": "\ud800"})),
        forge(ok, event_id="e-nan", properties=ReadOnlyDict({"f": float("nan")})),
        forge(ok, event_id="e-bigint", properties=ReadOnlyDict({"n": 10**40})),
        forge(ok, event_id="e-object", properties=ReadOnlyDict({"o": object()})),
        forge(ok, event_id="e-timestamp", timestamp="not a datetime"),
    ]
    letters = DeadLetters(tmp_path / "dl")
    letters.write_events("p", [ok, *forged], "unencodable", "error with \udc80 in it")
    lines = (tmp_path / "dl" / "p.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    records = [json.loads(line) for line in lines]
    assert [r["reason"] for r in records] == ["unencodable"] * 6
    assert [r["event"]["event_id"] for r in records[:5]] == [
        "e-ok",
        "e-surrogate",
        "e-nan",
        "e-bigint",
        "e-object",
    ]
    assert records[1]["event"]["properties"] == {"s": "\ud800"}  # read back as written
    assert records[3]["event"]["properties"] == {"n": 10**40}
    assert "e-timestamp" in records[5]["event_repr"]


def test_dead_letters_log_instead_of_raising_when_the_directory_is_unusable(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    letters = DeadLetters(blocker / "dl")
    ok = build_event("track", name="x", person_id="u")
    with caplog.at_level("ERROR", logger="fanout"):
        letters.write_events("p", [ok, ok], "permanent_error", "boom")
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "could not write 2 dead letter(s) for p" in errors[0].getMessage()
