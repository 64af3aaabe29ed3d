"""Batches handled on the event loop's thread (``insert_nowait``): exact counts, and
nothing that waits on the loop: another connection's write lock sends the batch to a
worker thread while the server keeps answering, and it is stored once when the lock goes.
Compressed and large bodies stay on the worker path, and so do SQLite's checkpoints."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fanout.collector import sqlite as sqlite_store
from fanout.collector.app import INLINE_BYTES
from fanout.collector.ingest import validate_batch
from fanout.collector.personindex import index_path
from fanout.collector.sqlite import SQLiteStore
from fanout.collector.store import WOULD_WAIT


@pytest.fixture
def store_kind() -> str:
    return "sqlite"  # PostgreSQL never inserts on the loop (its methods decline)


def _events(ids: list[str], *, pad: int = 0) -> list[dict[str, Any]]:
    return [{"event_id": e, "name": "order", "person_id": f"p{i % 5}",
             "timestamp": "2026-01-02T03:04:05.678Z",
             **({"properties": {"pad": "x" * pad}} if pad else {})}
            for i, e in enumerate(ids)]


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pause of the inline path after a commit slower than 2 ms, which depends on the
    machine's load: these tests count the path each batch takes (the pause has its own
    test, which sets it again)."""
    monkeypatch.setattr(sqlite_store, "_NOWAIT_SLOW", float("inf"))


def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    """A bound, not a timing assertion: polls ``condition`` until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the bound")
        time.sleep(0.005)


def test_batches_of_a_remembered_key_are_stored_inline_with_exact_counts(collector):
    store = collector.store
    first = collector.post({"batch": _events(["a0", "a1"])})  # key looked up: worker path
    assert first.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert store.nowait_inserts == 0
    answers = [collector.post({"batch": _events([f"b{b}-{i}" for i in range(50)]
                                                + ["a0", "a1", f"b{b}-0"])})
               for b in range(5)]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.json() == {"accepted": 50, "duplicates": 3, "rejected": []}
    again = collector.post({"batch": _events(["b0-1", "c0"]) + [{"event_id": "bad"}]})
    body = again.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert [r["index"] for r in body["rejected"]] == [2]
    assert store.nowait_inserts == 6  # every batch after the first, on the loop
    ids = store.event_ids(collector.project_id)
    assert len(ids) == len(set(ids)) == store.count_events() == 2 + 250 + 1
    assert [e["event_id"] for e in collector.timeline("p0")["events"]].count("b3-5") == 1


def test_refusals_on_the_loop_answer_as_the_worker_path_does(start_collector):
    collector = start_collector(rate_limit=100, burst=100)
    store = collector.store
    assert collector.post({"batch": _events(["a"])}).json()["accepted"] == 1
    bad = collector.post(b'{"batch": 3}')  # remembered key, decoded on the loop
    assert bad.status_code == 400 and "batch" in bad.json()["error"]
    # The refusal forgot the key: the next one is looked up in a worker thread, then
    # its batch decoded there too (no recheck); the one after is on the loop again.
    assert collector.post({"batch": _events(["b"])}).json()["accepted"] == 1
    assert store.nowait_inserts == 0
    over = collector.post({"batch": _events([f"c{i}" for i in range(150)])})
    assert over.status_code == 200 and over.json()["accepted"] == 150
    limited = collector.post({"batch": _events(["d"])})  # remembered: refused on the loop
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert store.nowait_inserts == 1
    assert store.event_ids(collector.project_id) == ["a", "b", *[f"c{i}" for i in range(150)]]


def test_a_write_lock_held_elsewhere_sends_the_batch_to_a_worker_thread(collector, tmp_path):
    store = collector.store
    assert collector.post({"batch": _events(["warm"])}).status_code == 200  # remembered
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as another process holds it
    answers: dict[str, httpx.Response] = {}

    def send(name: str, ids: list[str]) -> None:
        answers[name] = collector.post({"batch": _events(ids)})

    first = threading.Thread(target=send, args=("first", [f"x{i}" for i in range(30)]))
    second = threading.Thread(target=send, args=("second", ["x0", "y0", "y1"]))
    health: list[httpx.Response] = []
    checker = threading.Thread(
        target=lambda: health.append(httpx.get(f"{collector.url}/v1/health", timeout=30)))
    try:
        first.start()
        # Declined on the loop (SQLITE_BUSY at once), now waiting in a worker thread that
        # holds the store while SQLite's busy handler retries.
        _wait_until(lambda: store.key_for_nowait(collector.key) is WOULD_WAIT)
        second.start()  # another batch in flight: worker path, queued for the next commit
        checker.start()
        # The loop is free: requests that need no store are answered meanwhile.
        assert httpx.post(f"{collector.url}/v1/batch", content=b"{}",
                          timeout=5).status_code == 401
        assert httpx.get(f"{collector.url}/nowhere", timeout=5).status_code == 404
        assert "first" not in answers and "second" not in answers
        assert store.nowait_inserts == 0
    finally:
        other.execute("ROLLBACK")
        other.close()
    for t in (first, second, checker):
        t.join(30)
    assert answers["first"].json() == {"accepted": 30, "duplicates": 0, "rejected": []}
    assert answers["second"].json() == {"accepted": 2, "duplicates": 1, "rejected": []}
    assert health[0].status_code == 200 and health[0].json()["ok"] is True
    assert store.count_events() == 1 + 30 + 2
    assert store.nowait_inserts == 0
    resent = collector.post({"batch": _events(["x5", "y1", "z"])})  # inline again
    assert resent.json() == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert store.nowait_inserts == 1
    ids = store.event_ids(collector.project_id)
    assert len(ids) == len(set(ids)) == 34


def test_gzip_and_large_bodies_take_the_worker_path(collector):
    store = collector.store
    assert collector.post({"batch": _events(["warm"])}).status_code == 200
    packed = gzip.compress(json.dumps({"batch": _events(["g0", "g1", "warm"])}).encode())
    zipped = collector.post(packed, headers={"Content-Encoding": "gzip",
                                             "Content-Type": "application/json"})
    assert zipped.json() == {"accepted": 2, "duplicates": 1, "rejected": []}
    large = json.dumps({"batch": _events([f"l{i}" for i in range(40)], pad=2000)}).encode()
    assert len(large) > INLINE_BYTES
    big = collector.post(large, headers={"Content-Type": "application/json"})
    assert big.json() == {"accepted": 40, "duplicates": 0, "rejected": []}
    assert store.nowait_inserts == 0
    small = collector.post({"batch": _events(["s", "g0"])})
    assert small.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert store.nowait_inserts == 1
    assert store.count_events() == 1 + 2 + 40 + 1


def _rows(ids: list[str]) -> Any:
    ingested = validate_batch(_events(ids))
    assert not ingested.rejected
    return ingested


def test_insert_nowait_wakes_the_index_and_leaves_checkpoints_to_insert(tmp_path: Path):
    store = SQLiteStore(tmp_path / "n.db", index_every=10)
    try:
        project = store.create_project("p").id
        six = _rows([f"a{i}" for i in range(6)])
        assert store.insert_nowait(project, six.rows, six.links) == (6, 0)
        # 6 + 5 makes the pass due: the index's own thread indexes all 11 (the loop only
        # woke it).
        five = _rows([f"b{i}" for i in range(5)])
        assert store.insert_nowait(project, five.rows, five.links) == (5, 0)
        _wait_until(lambda: _index_mark(store.path) == 11)
        assert store.nowait_inserts == 2 and store.count_events() == 11
        store.close()
        # At most _NOWAIT_ROWS rows committed inline in a row (each commit with the
        # automatic checkpoint off), then insert() commits with it on and the count
        # starts over.
        store = SQLiteStore(tmp_path / "m.db")
        project = store.create_project("p").id
        inline = 0
        while (got := store.insert_nowait(project, *_one(f"c{inline}"))) is not None:
            assert got == (1, 0)
            inline += 1
        assert inline == sqlite_store._NOWAIT_ROWS == store.nowait_inserts
        assert store.insert(project, *_one("d")) == (1, 0)
        assert store.insert_nowait(project, *_one("c0")) == (0, 1)
        assert store.count_events() == inline + 1
    finally:
        store.close()


def _index_mark(events: Path) -> int:
    db = sqlite3.connect(index_path(events))
    try:
        (mark,) = db.execute("SELECT seq FROM indexed_upto").fetchone()
    finally:
        db.close()
    return int(mark)


def _one(event_id: str) -> tuple[Any, Any]:
    ingested = _rows([event_id])
    return ingested.rows, ingested.links


def test_insert_nowait_declines_while_another_connection_writes(tmp_path: Path):
    store = SQLiteStore(tmp_path / "w.db")
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        project = store.create_project("p").id
        _, key = store.create_key("p", ("ingest",), "k")
        batch = _rows(["a", "b"])
        other.execute("BEGIN IMMEDIATE")
        assert store.insert_nowait(project, batch.rows, batch.links) is None
        found = store.key_for_nowait(key)  # a WAL read waits for no writer
        assert found is not WOULD_WAIT and found is not None and found.project_id == project
        other.execute("ROLLBACK")
        assert store.count_events() == 0  # rolled back, nothing half-written
        assert store.insert_nowait(project, batch.rows, batch.links) == (2, 0)
        assert store.insert(project, batch.rows, batch.links) == (0, 2)
        assert store.event_ids() == ["a", "b"]
    finally:
        other.close()
        store.close()


def test_concurrent_senders_on_both_paths_count_each_event_once(collector):
    assert collector.post({"batch": _events(["warm"])}).status_code == 200
    # 4 connections, 10 batches of 40 each; every batch repeats 20 ids of another's.
    batches = [[f"e{b * 20 + i}" for i in range(40)] for b in range(40)]
    sent = sum(len(b) for b in batches)
    distinct = len({e for b in batches for e in b})
    answers: list[dict[str, Any]] = []
    guard = threading.Lock()

    def sender(mine: list[list[str]]) -> None:
        with httpx.Client(timeout=30) as http:
            for ids in mine:
                r = http.post(f"{collector.url}/v1/batch", json={"batch": _events(ids)},
                              headers={"Authorization": f"Bearer {collector.key}"})
                with guard:
                    answers.append(r.json())

    threads = [threading.Thread(target=sender, args=(batches[s::4],)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 40
    assert sum(a["accepted"] for a in answers) == distinct == 820
    assert sum(a["duplicates"] for a in answers) == sent - distinct == 780
    ids = collector.store.event_ids(collector.project_id)
    assert len(ids) == len(set(ids)) == distinct + 1


def test_inline_commits_leave_the_checkpoint_to_insert_and_the_wal_stays_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A small checkpoint mark (200 pages) and run of inline rows (8 batches of 20), so a
    # few thousand events show what 10,000 pages and 2,048 rows would over millions.
    page = sqlite_store._PAGE_SIZE
    monkeypatch.setattr(sqlite_store, "_WAL_AUTOCHECKPOINT", 200)
    monkeypatch.setattr(sqlite_store, "_NOWAIT_ROWS", 8 * 20)
    store = SQLiteStore(tmp_path / "c.db")
    wal = Path(f"{store.path}-wal")
    try:
        project = store.create_project("p").id
        inline = ordinary = 0
        pages = []
        for b in range(450):
            ingested = validate_batch(_events([f"e{b}-{i}" for i in range(20)], pad=400))
            got = store.insert_nowait(project, ingested.rows, ingested.links)
            if got is None:
                got = store.insert(project, ingested.rows, ingested.links)
                ordinary += 1
            else:
                inline += 1
            assert got == (20, 0)
            pages.append(wal.stat().st_size // page)
        assert store.count_events() == 450 * 20 == (inline + ordinary) * 20
        assert inline == store.nowait_inserts and inline >= 8 * ordinary - 8
        # About 2,000 pages written in all; checkpointed by insert()'s commits, the WAL
        # file (reused from its start after a checkpoint) stops growing near the mark.
        assert 200 <= max(pages) < 600
        assert pages[-1] == max(pages[len(pages) // 2:])
        # Inline commits alone never checkpoint: past the mark, the WAL only grows.
        monkeypatch.setattr(sqlite_store, "_NOWAIT_ROWS", 10**9)
        store.insert(project, *_one("reset"))
        grown = []
        for b in range(150):
            ingested = validate_batch(_events([f"f{b}-{i}" for i in range(20)], pad=400))
            assert store.insert_nowait(project, ingested.rows, ingested.links) == (20, 0)
            grown.append(wal.stat().st_size // page)
        assert grown[-1] > 2 * 200 and grown == sorted(grown)
    finally:
        store.close()


def test_an_inline_commit_that_held_the_loop_too_long_pauses_the_inline_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Any commit is "too slow" here: after two in a row, batches take insert() for the
    # pause, then go inline again; every event is stored once whichever path it took.
    monkeypatch.setattr(sqlite_store, "_NOWAIT_SLOW", 0.0)
    monkeypatch.setattr(sqlite_store, "_NOWAIT_PAUSE", 0.3)
    store = SQLiteStore(tmp_path / "p.db")
    try:
        project = store.create_project("p").id
        assert store.insert_nowait(project, *_one("a")) == (1, 0)  # one slow: goes on
        assert store.insert_nowait(project, *_one("a2")) == (1, 0)  # two in a row: pause
        assert store.insert_nowait(project, *_one("b")) is None  # paused: nothing written
        assert store.insert(project, *_one("b")) == (1, 0)
        _wait_until(lambda: time.monotonic() >= store._nowait_from)
        assert store.insert_nowait(project, *_one("c")) == (1, 0)
        assert store.nowait_inserts == 3 and store.count_events() == 4
    finally:
        store.close()
