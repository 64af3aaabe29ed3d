"""Rate limits counted in events (reads too, before the body), health that means it,
and a clear error for a database that cannot be used."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fanout.collector.server import ServerThread
from fanout.collector.sqlite import SQLiteStore

from .conftest import FANOUT_CMD
from .postgres_cluster import free_port


def _events(n: int, prefix: str = "e"):
    return {"batch": [{"event_id": f"{prefix}{i}", "name": "x", "person_id": "p",
                       "timestamp": "2024-05-01T10:00:00.000Z"} for i in range(n)]}


def test_the_rate_limit_counts_events_and_refuses_before_reading_the_body(start_collector):
    collector = start_collector(rate_limit=100, burst=100)
    first = collector.post(_events(1000))
    assert first.status_code == 200 and first.json()["accepted"] == 1000
    # 1,000 events at 100/s: the key owes 900 events, nine seconds, whatever the batch size.
    second = collector.post(_events(1, "late"))
    assert second.status_code == 429
    assert 5 <= int(second.headers["Retry-After"]) <= 10  # ~9 s, minus a slow machine's delay
    # Not even read: a body that is not JSON gets the 429, not a 400.
    assert collector.post(b"not json at all").status_code == 429
    assert collector.store.count_events() == 1000


def test_reads_are_rate_limited_by_the_events_they_return(start_collector):
    # 0.1 event/s: the bucket refills too slowly for a slow machine to change the outcome.
    collector = start_collector(rate_limit=0.1, burst=5)
    assert collector.post(_events(3)).status_code == 200  # the ingest key's own bucket
    url = f"{collector.url}/v1/persons/p/events"
    headers = {"Authorization": f"Bearer {collector.read_key}"}
    with httpx.Client(headers=headers) as http:
        statuses = [http.get(url).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # 5 tokens: 3 + 3 events read, then in debt


def test_the_rate_limit_is_shared_by_every_collector_on_one_database(start_collector,
                                                                    make_store, store_kind):
    """Two collectors (two stores, as two processes have) on one database spend one bucket
    per key. In memory (SQLite's single process) each collector would have its own."""
    if store_kind != "postgresql":
        pytest.skip("SQLite's collector is one process; its limiter is in memory")
    first = start_collector(rate_limit=100, burst=100)
    store = make_store(first.store.url)  # type: ignore[attr-defined]
    second = ServerThread(store, limiter=store.limiter(100, 100)).start()
    try:
        sent = first.post(_events(1000))
        assert sent.status_code == 200 and sent.json()["accepted"] == 1000
        other = httpx.post(f"{second.url}/v1/batch", json=_events(1, "late"), timeout=10,
                           headers={"Authorization": f"Bearer {first.key}"})
        assert other.status_code == 429
        assert 5 <= int(other.headers["Retry-After"]) <= 10
        read = httpx.get(f"{second.url}/v1/persons/p/events", timeout=10,
                         headers={"Authorization": f"Bearer {first.read_key}"})
        assert read.status_code == 200  # the read key has its own bucket
    finally:
        second.stop()
    assert first.store.count_events() == 1000


@contextlib.contextmanager
def _database_locked(store) -> Iterator[None]:
    """Another connection holds the lock every write needs, until the block ends."""
    if isinstance(store, SQLiteStore):
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    import psycopg

    with psycopg.connect(store.url) as conn:
        conn.execute("LOCK TABLE health IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def test_health_is_503_while_the_database_cannot_commit(collector):
    health = f"{collector.url}/v1/health"
    assert httpx.get(health).status_code == 200
    with _database_locked(collector.store):
        locked = httpx.get(health, timeout=15)
        assert locked.status_code == 503 and locked.json() == {"ok": False, "protocol": 1}
    assert httpx.get(health).status_code == 200


def test_a_database_that_cannot_be_used_is_a_clear_error_at_start(tmp_path: Path):
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("these are not the tables you are looking for\n" * 100)
    for db in (tmp_path, not_a_db, tmp_path / "missing-dir" / "c.db"):
        result = subprocess.run([*FANOUT_CMD, "collector", "serve", "--port", "0", "--db",
                                 str(db)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1, db
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("Error: cannot ") and str(db) in result.stderr


def test_a_postgresql_database_that_cannot_be_used_is_a_clear_error_without_the_password():
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    url = f"postgresql://fanout:hunter2secret@127.0.0.1:{free_port()}/nothing"
    result = subprocess.run([*FANOUT_CMD, "collector", "serve", "--port", "0", "--db", url],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: cannot ") and "127.0.0.1" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
