"""SQLite stores each row exactly as validated, whatever the parameters are bound as: the
body as bytes (a BLOB), a missing person id, anonymous id or name as NULL (never ``''``),
across every chunk size of the multi-row ``INSERT``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fanout.collector.ingest import validate_batch
from fanout.collector.sqlite import SQLiteStore


def _event(i: int) -> dict[str, object]:
    shape = i % 4
    event: dict[str, object] = {"event_id": f"ev_{i}", "timestamp": "2024-05-01T10:00:00.000Z",
                                "properties": {"i": i, "text": "żółw ✓" * (i % 3)}}
    if shape == 0:  # a track of a known person
        event.update(name="x", person_id=f"user_{i}")
    elif shape == 1:  # a track of an anonymous visitor: no person id
        event.update(name="x", anonymous_id=f"anon_{i}")
    elif shape == 2:  # a page without a name
        event.update(kind="page", anonymous_id=f"anon_{i}")
    else:  # an identify: both ids, a link
        event.update(kind="identify", person_id=f"user_{i}", anonymous_id=f"anon_{i}")
    return event


def _stored(path: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT event_id, kind, timestamp, person_id, anonymous_id, name, body, typeof(body),"
            " project_id, key_id FROM events ORDER BY seq").fetchall()
    finally:
        db.close()


def test_rows_are_stored_exactly_in_every_chunk_size(tmp_path: Path):
    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    project = store.create_project("p")
    batch = [_event(i) for i in range(127)]  # chunks of 64, 32, 16, 8, 4, 2 and 1 rows
    ingested = validate_batch(batch)
    assert ingested.rejected == []
    assert len(ingested.links) == 31
    assert store.insert(project.id, ingested.rows, ingested.links, key_id=5) == (127, 0)
    again = validate_batch([_event(i) for i in range(120, 130)])
    assert store.insert(project.id, again.rows, again.links, key_id=5) == (3, 7)
    store.close()

    rows = ingested.rows + again.rows[7:]
    stored = _stored(path)
    assert [tuple(s[:7]) for s in stored] == [tuple(r) for r in rows]
    assert {s[7] for s in stored} == {"blob"}
    assert {(s[8], s[9]) for s in stored} == {(project.id, 5)}
    assert sum(s[3] is None for s in stored) == 65  # anonymous tracks and pages
    assert sum(s[5] is None for s in stored) == 64  # pages and identifies
    assert not any("" in s[3:6] for s in stored)
    assert {type(v) for s in stored for v in s[3:6]} == {str, type(None)}  # never a float


def test_sqlite_binds_a_nan_as_null():
    """The store binds a missing id or name as a float NaN, relying on SQLite to store NULL
    for it (it stores no NaN): if a SQLite ever stored the NaN, this fails, not the data."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE t (a TEXT, b TEXT)")
        db.execute("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)",
                   [float("nan"), "x", "y", float("nan")])
        assert db.execute("SELECT a, typeof(a), b, typeof(b) FROM t").fetchall() == [
            (None, "null", "x", "text"), ("y", "text", None, "null")]
        assert db.execute("SELECT count(*) FROM t WHERE a IS NULL OR b IS NULL").fetchone() == (2,)
    finally:
        db.close()
