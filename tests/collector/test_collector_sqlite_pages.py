"""SQLite's page size: a database the store creates has pages of 8 KiB; one made before
with another size (4 KiB, every database made before this one) keeps it and works as
before: inserts, dedupe against its old events, timelines and reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fanout.collector.ingest import validate_batch
from fanout.collector.sqlite import SQLiteStore


def _page_size(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (size,) = db.execute("PRAGMA page_size").fetchone()
        return int(size)
    finally:
        db.close()


def _batch(first: int, count: int) -> list[dict[str, object]]:
    return [{"event_id": f"ev_{i}", "name": "x", "person_id": f"user_{i % 3}",
             "timestamp": f"2024-05-01T10:00:{i % 60:02d}.000Z", "properties": {"i": i}}
            for i in range(first, first + count)]


def _timeline(store: SQLiteStore, project_id: int, person: str) -> list[bytes]:
    return list(store.timeline(project_id, person, limit=1000, max_bytes=1 << 22).events)


def test_a_new_database_has_pages_of_8k(tmp_path: Path):
    path = tmp_path / "new.db"
    store = SQLiteStore(path)
    project = store.create_project("p")
    rows = validate_batch(_batch(0, 100)).rows
    assert store.insert_nowait(project.id, rows, []) == (100, 0)
    store.close()
    assert _page_size(path) == 8192


@pytest.mark.parametrize("page_size", [1024, 4096, 16384])
def test_a_database_made_with_other_pages_keeps_them_and_works(tmp_path: Path, page_size: int):
    path = tmp_path / "old.db"
    # What an earlier fanout made: a WAL database of its page size (4 KiB, SQLite's
    # default), with the current schema and events in it.
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA page_size={page_size}")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    store = SQLiteStore(path)
    project = store.create_project("p")
    first = validate_batch(_batch(0, 300)).rows
    assert store.insert(project.id, first, []) == (300, 0)
    before = {person: _timeline(store, project.id, person) for person in ("user_0", "user_1")}
    store.close()
    assert _page_size(path) == page_size

    store = SQLiteStore(path)  # reopened by this version: left as it is
    again = validate_batch(_batch(250, 100)).rows  # 50 stored before, 50 new
    assert store.insert_nowait(project.id, again, []) == (50, 50)
    assert store.insert(project.id, again, []) == (0, 100)
    assert store.count_events(project.id) == 350
    assert store.event_ids(project.id) == [f"ev_{i}" for i in range(350)]
    for person, old in before.items():
        now = _timeline(store, project.id, person)
        assert set(old) <= set(now)
        assert len(now) == len(old) + sum(1 for i in range(300, 350) if f"user_{i % 3}" == person)
    store.close()
    assert _page_size(path) == page_size
