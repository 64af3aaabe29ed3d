"""``fanout import`` as a user runs it: real files, the real collector, vendor providers on
local servers, a kill in the middle.

The Segment file is what Segment's own SDK sends (captured from a local server and written
as JSON lines, gzipped); the PostHog and Mixpanel files follow their documented export
layouts. Each test counts records read, events stored, rejected and duplicated exactly.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from fanout.collector.keys import INGEST
from fanout.collector.server import ServerThread
from fanout.collector.sqlite import SQLiteStore

UTC = dt.timezone.utc


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    store = SQLiteStore(tmp_path / "collector.db")
    store.create_project("import")
    _, key = store.create_key("import", (INGEST,), "import-ingest")
    srv = ServerThread(store)
    srv.start()
    yield srv, key
    srv.stop()


def stored_by_id(srv: ServerThread) -> dict[str, dict[str, Any]]:
    """Every stored event by id, read from the collector's database file."""
    import sqlite3

    with sqlite3.connect(srv.store.path) as db:
        rows = db.execute("SELECT event_id, body FROM events").fetchall()
    return {eid: json.loads(body) for eid, body in rows}


def env_for(srv: ServerThread, key: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("FANOUT_", "POSTHOG_", "SEGMENT_", "MIXPANEL_"))}
    return {**base, "FANOUT_PROVIDERS": "collector", "FANOUT_COLLECTOR_URL": srv.url,
            "FANOUT_COLLECTOR_KEY": key, "FANOUT_FLUSH_INTERVAL": "0.05", **extra}


def run_import(*args: str, env: dict[str, str], cwd: Path, stdin: bytes | None = None,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout.cli", "import", *args], env=env, cwd=cwd,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, timeout=120, check=False,
    )


def write_jsonl(path: Path, rows: list[Any], *, gz: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_segment_sdk_output_imports_once_with_message_ids(
    server: tuple[ServerThread, str], httpserver: HTTPServer, tmp_path: Path
) -> None:
    from segment.analytics import Client as SegmentClient  # type: ignore[import-untyped]

    httpserver.expect_request("/v1/batch", method="POST").respond_with_json({"success": True})
    sdk = SegmentClient("wk_test", host=httpserver.url_for("/").rstrip("/"), sync_mode=True,
                        gzip=True)
    old = dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    for i in range(40):
        sdk.track(f"user-{i % 4}", "Order Completed", {"total": i}, timestamp=old)
    sdk.identify("user-1", {"plan": "pro"}, timestamp=old)
    sdk.page("user-2", "Docs", "Install", {"url": "https://x.test/docs"}, timestamp=old)
    sdk.group("user-3", "acme", {"seats": 5}, timestamp=old)
    sdk.alias("user-4", "anon-9", timestamp=old)
    messages = []
    for request, _ in httpserver.log:
        body = request.get_data()
        body = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
        messages += json.loads(body)["batch"]
    assert len(messages) == 44
    # Half the lines as single messages, the rest as the SDK's whole batch bodies.
    path = write_jsonl(tmp_path / "segment.jsonl.gz", messages[:22] + [{"batch": messages[22:]}],
                       gz=True)

    srv, key = server
    done = run_import(str(path), env=env_for(srv, key), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stored = srv.store.event_ids()
    assert sorted(stored) == sorted(m["messageId"] for m in messages)  # once each
    # Twice is still once: the message ids are the event ids.
    again = run_import(str(path), "--format", "segment", env=env_for(srv, key), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert srv.store.count_events() == 44
    identify = stored_by_id(srv)[next(m["messageId"] for m in messages if m["type"] == "identify")]
    assert identify["timestamp"].startswith("2021-03-04")  # the SDK's old timestamp kept


def posthog_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"uuid": f"0190a1b2-0000-7000-8000-{i:012d}", "event": "signed_up" if i % 2 else "$pageview",
         "distinct_id": f"ph-{i % 5}", "timestamp": "2022-01-02T03:04:05.000Z",
         "properties": {"plan": "free", "$current_url": "https://x.test/p", "i": i}}
        for i in range(n)
    ]


def mixpanel_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"event": "Purchase", "properties": {"time": 1641092645 + i, "distinct_id": f"mp-{i % 3}",
                                             "$insert_id": f"ins-{i:04d}", "amount": i}}
        for i in range(n)
    ]


def test_posthog_and_mixpanel_exports_into_the_collector_and_posthog(
    server: tuple[ServerThread, str], httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/batch/", method="POST").respond_with_json({"status": 1})
    ph = write_jsonl(tmp_path / "posthog.jsonl", posthog_rows(30))
    mp = write_jsonl(tmp_path / "mixpanel.jsonl", mixpanel_rows(20))
    srv, key = server
    env = env_for(srv, key, FANOUT_PROVIDERS="collector,posthog", POSTHOG_API_KEY="phc_test",
                  POSTHOG_HOST=httpserver.url_for("/").rstrip("/"))
    done = run_import(str(ph), str(mp), "--to", "collector,posthog", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = {r["uuid"] for r in posthog_rows(30)} | {f"ins-{i:04d}" for i in range(20)}
    stored = srv.store.event_ids()
    assert len(stored) == 50 and set(stored) == expected
    sent = []
    for request, _ in httpserver.log:
        body = json.loads(gzip.decompress(request.get_data())
                          if request.headers.get("Content-Encoding") == "gzip"
                          else request.get_data())
        assert body["historical_migration"] is True  # old events: PostHog's historical route
        sent += body["batch"]
    assert len(sent) == 50
    by_id = {m["uuid"]: m for m in sent}
    assert len(by_id) == 50 and {r["uuid"] for r in posthog_rows(30)} <= set(by_id)
    assert by_id["0190a1b2-0000-7000-8000-000000000001"]["distinct_id"] == "ph-1"


def test_broken_lines_are_reported_rejected_and_the_rest_delivered(
    server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    rows = [json.dumps(r) for r in mixpanel_rows(10)]
    rows.insert(3, "{not json")
    rows.insert(6, json.dumps({"event": "Purchase", "properties": {"time": 1}}))  # no distinct_id
    rows.insert(9, "[1, 2]")
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(rows) + "\n")
    srv, key = server
    done = run_import(str(path), "--format", "mixpanel", env=env_for(srv, key), cwd=tmp_path)
    assert done.returncode == 1  # not everything was delivered
    for line in (4, 7, 10):
        assert f"{path}:{line}:" in done.stderr
    rejects = [json.loads(x) for x in (tmp_path / ".fanout-import" / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [4, 7, 10]
    assert srv.store.count_events() == 10
    assert "records read 13, events sent 10, rejected 3" in done.stderr


def test_csv_with_a_mapping_from_stdin_and_dry_run(
    server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    csv_text = "when,who,what,id,amount\n" + "".join(
        f"2020-01-0{1 + i % 9}T00:00:00Z,c{i % 3},Refund,r{i},{i}\n" for i in range(12)
    )
    srv, key = server
    mapping = ["--map", "timestamp=when", "--map", "person_id=who", "--map", "name=what",
               "--map", "event_id=id"]
    dry = run_import("-", "--format", "csv", *mapping, "--dry-run", env=env_for(srv, key),
                     cwd=tmp_path, stdin=csv_text.encode())
    assert dry.returncode == 0, dry.stderr
    assert "events would send 12" in dry.stderr and srv.store.count_events() == 0
    done = run_import("-", "--format", "csv", *mapping, env=env_for(srv, key), cwd=tmp_path,
                      stdin=csv_text.encode())
    assert done.returncode == 0, done.stderr
    assert sorted(srv.store.event_ids()) == sorted(f"r{i}" for i in range(12))
    refund = stored_by_id(srv)["r0"]
    assert refund["person_id"] == "c0" and refund["properties"] == {"amount": "0"}


def test_stdin_longer_than_a_chunk_and_a_dry_run_leave_no_false_state(
    server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    """stdin has no checkpoint, so a chunk boundary there is not a failure; and a dry run,
    which sends nothing, must not write a checkpoint that a later --resume would trust."""
    srv, key = server
    data = "".join(json.dumps(r) + "\n" for r in mixpanel_rows(7)).encode()
    done = run_import("-", "--format", "mixpanel", "--chunk", "2", env=env_for(srv, key),
                      cwd=tmp_path, stdin=data)
    assert done.returncode == 0, done.stderr
    assert "records read 7, events sent 7, rejected 0" in done.stderr
    assert srv.store.count_events() == 7
    path = tmp_path / "mixpanel.jsonl"
    path.write_bytes(data)
    dry = run_import(str(path), "--format", "mixpanel", "--chunk", "2", "--dry-run",
                     env=env_for(srv, key), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert list((tmp_path / ".fanout-import").glob("checkpoint-*")) == []
    again = run_import(str(path), "--format", "mixpanel", "--resume", env=env_for(srv, key),
                       cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "records read 7, events sent 7, rejected 0" in again.stderr
    assert srv.store.count_events() == 7  # the same ids: stored once


@pytest.mark.slow
def test_resume_after_a_kill_goes_on_from_the_checkpoint(
    server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    n = 20_000
    path = write_jsonl(tmp_path / "big.jsonl", mixpanel_rows(n))
    srv, key = server
    env = env_for(srv, key)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout.cli", "import", str(path), "--rate", "4000",
         "--chunk", "1000", "--no-progress"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    state = tmp_path / ".fanout-import"
    try:
        deadline = time.monotonic() + 60
        while not any(state.glob("checkpoint-*.json")) or json.loads(
            next(state.glob("checkpoint-*.json")).read_text())["line"] < 3000:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    checkpoint = json.loads(next(state.glob("checkpoint-*.json")).read_text())
    before = srv.store.count_events()
    assert checkpoint["line"] <= before < n
    done = run_import(str(path), "--resume", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"resuming after line {checkpoint['line']}" in done.stderr
    assert f"records read {n - checkpoint['line']}," in done.stderr  # the rest only
    stored = srv.store.event_ids()
    assert len(stored) == len(set(stored)) == n
    again = run_import(str(path), "--resume", env=env, cwd=tmp_path)
    assert "already imported" in again.stderr and again.returncode == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind":"track","n":1,"f":0.1,"s":"\\u00e9\\ud83d\\ude00","l":[true,null]}\n',
        b'{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
        b'{"nan": NaN, "inf": -Infinity}',
        '{"x": "é"}'.encode("utf-16"),
        b'{"f": 1e400, "tiny": 5e-324}',
    ],
)
def test_lines_decode_exactly_as_the_standard_library_decodes_them(raw: bytes) -> None:
    from fanout._importers import loads_line

    got, want = loads_line(raw), json.loads(raw)
    assert repr(got) == repr(want)  # repr: NaN != NaN, and 1 == 1.0 would hide a float


@pytest.mark.parametrize("raw", [b'{"a":', b"{'a': 1}", b'{"a": 1} x', b"\xff\xfe{"])
def test_broken_lines_raise_the_standard_library_error(raw: bytes) -> None:
    from fanout._importers import loads_line

    with pytest.raises(ValueError) as want:
        json.loads(raw)
    with pytest.raises(ValueError) as got:
        loads_line(raw)
    assert type(got.value) is type(want.value) and str(got.value) == str(want.value)


_TS = "2023-05-06T07:08:09.123456Z"


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "track", "name": "a", "event_id": "e1", "person_id": "u", "timestamp": _TS,
         "properties": {"x": [1, {"y": None}]}},
        {"name": "no kind: track", "event_id": "e2", "anonymous_id": "anon", "timestamp": _TS},
        {"kind": "group", "event_id": "e3", "person_id": "u", "timestamp": _TS,
         "group": {"type": "company", "id": "c1"}, "traits": {"n": 1}},
        {"kind": "identify", "event_id": "e4", "person_id": "u", "timestamp": 1683356889.5,
         "traits": {"plan": "pro"}, "context": {"ip": "1.2.3.4"}, "group": {}},
        {"kind": "alias", "event_id": "e5", "person_id": "u", "previous_id": "old",
         "timestamp": _TS, "group": 0},
        {"kind": "track", "name": "no id", "person_id": "u", "timestamp": _TS},
        {"kind": "track", "name": "bad group", "event_id": "e6", "person_id": "u",
         "group": "company"},
        {"kind": "track", "name": "bad group", "event_id": "e7", "person_id": "u", "group": [1]},
        {"kind": "nope", "name": "x", "event_id": "e8", "person_id": "u"},
        {"kind": "track", "name": "x", "event_id": "e9"},
        {"kind": "track", "name": "x", "event_id": "e10", "person_id": "u",
         "timestamp": "yesterday"},
        {"kind": "track", "name": "big", "event_id": "e11", "person_id": "u",
         "timestamp": _TS, "properties": {"blob": "x" * 300_000}},
    ],
)
def test_the_fanout_format_converts_exactly_as_event_from_dict(record: dict[str, Any]) -> None:
    """``_from_fanout`` calls ``build`` positionally instead of going through
    ``Event.from_dict``: same event (id derived the same way, no size limit), same error."""
    from fanout import Event, InvalidEvent
    from fanout._importers import ImportError_, _derived_id, convert

    want_record = record if record.get("event_id") else {
        **record, "event_id": _derived_id("fanout", record)}
    try:
        want: Any = Event.from_dict(want_record)
    except InvalidEvent as exc:
        with pytest.raises(ImportError_) as got:
            convert("fanout", record)
        assert str(got.value) == str(exc)
        return
    (event,) = convert("fanout", record)
    assert event == want
    assert (event.size, event.footprint) == (want.size, want.footprint)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{missing}",), "does not exist"),
        (("{good}", "{missing}"), "does not exist"),  # checked before the first is read
        (("{dir}",), "is a directory"),
        (("{good}", "--rate", "0"), "--rate"),
        (("{good}", "--rate", "-5"), "--rate"),
        (("{good}", "--timeout", "0"), "--timeout"),
        (("{good}", "--rate", "nan"), "--rate"),  # NaN passes FloatRange: ran unlimited
        (("{good}", "--rate", "1e-320"), "--rate"),  # 1 / rate overflowed: a traceback
        (("{good}", "--timeout", "nan"), "--timeout"),
        (("{good}", "--timeout", "inf"), "--timeout"),
        (("{good}", "--format", "csv", "--map", "nosuchfield=col"), "no field 'nosuchfield'"),
    ],
)
def test_bad_input_is_a_usage_error_and_sends_nothing(
    server: tuple[ServerThread, str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """Exit 2 with one line naming the problem, no traceback, nothing sent: a missing file
    or a directory was a traceback (exit 1); a rate of 0 or below ran without a limit; an
    unknown --map field was ignored."""
    good = write_jsonl(tmp_path / "good.jsonl", mixpanel_rows(5))
    paths = {"good": str(good), "missing": str(tmp_path / "nope.jsonl"), "dir": str(tmp_path)}
    srv, key = server
    done = run_import(*(a.format(**paths) for a in args), env=env_for(srv, key), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert srv.store.count_events() == 0
    assert not (tmp_path / ".fanout-import").exists()  # nothing read, no state written
