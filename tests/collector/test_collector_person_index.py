"""SQLite's person index, filled in bulk: a timeline reads the indexed events and the ones
stored after the last bulk update as one history, and a schema 2 database (the index on
``events``) is migrated on start."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from fanout.collector.ingest import validate_batch
from fanout.collector.sqlite import SCHEMA_VERSION, SQLiteStore


def _pages(store: SQLiteStore, project_id: int, person: str, limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = store.timeline(project_id, person, limit=limit, max_bytes=1 << 20, after=after)
        seen += [body.decode().split('"event_id":"')[1].split('"')[0] for body in page.events]
        if page.next_cursor is None:
            return seen
        after = page.next_cursor


def _mark(path: Path) -> tuple[int, int, int]:
    """(indexed_upto, rows in person_events, the highest seq)."""
    db = sqlite3.connect(path)
    try:
        (mark,) = db.execute("SELECT seq FROM indexed_upto").fetchone()
        (indexed,) = db.execute("SELECT count(*) FROM person_events").fetchone()
        (top,) = db.execute("SELECT max(seq) FROM events").fetchone()
    finally:
        db.close()
    return mark, indexed, top


def test_a_timeline_spans_the_indexed_events_and_the_newest(tmp_path: Path):
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=7)
    project = store.create_project("p")
    rnd = random.Random(7)
    expected: list[tuple[str, int, str]] = []  # (timestamp, arrival, event_id) of ada's
    sent = 0
    for b in range(9):
        batch = []
        for i in range(rnd.randint(1, 6)):
            person = rnd.choice(["ada", "bob"])
            ts = f"2024-01-01T00:00:{rnd.randint(0, 20):02d}.000Z"  # out of order, ties
            batch.append({"event_id": f"e{b}_{i}", "name": "x", "person_id": person,
                          "timestamp": ts})
            if person == "ada":
                expected.append((ts, sent, f"e{b}_{i}"))
            sent += 1
        ingested = validate_batch(batch)
        assert ingested.rejected == []
        assert store.insert(project.id, ingested.rows, ingested.links) == (len(batch), 0)
        mark, indexed, top = _mark(path)
        assert top == sent and top - mark < 7  # never more than index_every behind
        for limit in (1, 2, 5, 100):
            assert _pages(store, project.id, "ada", limit) == [e for _, _, e in sorted(expected)]
    # A redelivered batch is a duplicate whether its events are indexed yet or not.
    again = validate_batch([{"event_id": "e0_0", "name": "x", "person_id": "ada",
                             "timestamp": "2024-01-01T00:00:00.000Z"},
                            {"event_id": f"e8_{0}", "name": "x", "person_id": "ada",
                             "timestamp": "2024-01-01T00:00:00.000Z"}])
    assert store.insert(project.id, again.rows, again.links) == (0, 2)
    store.close()

    reopened = SQLiteStore(path, index_every=7)  # opening indexes what is left
    mark, indexed, top = _mark(path)
    assert mark == top == sent
    assert indexed == sent  # every event has a person here
    assert _pages(reopened, project.id, "ada", 3) == [e for _, _, e in sorted(expected)]
    assert reopened.count_events(project.id) == sent
    reopened.close()


# Schema 2 as fanout wrote it (projects, the person index on events), verbatim.
_SCHEMA_V2 = """
CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                       created_at TEXT NOT NULL);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, event_id TEXT NOT NULL,
    kind TEXT NOT NULL, timestamp TEXT NOT NULL, person_id TEXT, anonymous_id TEXT,
    name TEXT, key_id INTEGER NOT NULL, received_at TEXT NOT NULL, body BLOB NOT NULL,
    UNIQUE (project_id, event_id)
);
CREATE TABLE identity_links (
    project_id INTEGER NOT NULL, anonymous_id TEXT NOT NULL, person_id TEXT NOT NULL,
    linked_at TEXT NOT NULL, PRIMARY KEY (project_id, anonymous_id, person_id)
) WITHOUT ROWID;
CREATE TABLE server_keys (
    id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects (id),
    scopes TEXT NOT NULL, label TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE health (id INTEGER PRIMARY KEY, checked_at TEXT NOT NULL);
CREATE INDEX events_person ON events (project_id, person_id, timestamp)
    WHERE person_id IS NOT NULL;
CREATE INDEX events_anonymous ON events (project_id, anonymous_id, timestamp)
    WHERE anonymous_id IS NOT NULL AND person_id IS NULL;
CREATE INDEX identity_links_person ON identity_links (project_id, person_id);
PRAGMA user_version = 2;
"""


def test_a_schema_2_database_is_migrated_on_start(tmp_path: Path):
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V2)
    db.execute("INSERT INTO projects VALUES (1, 'default', '2024-01-01T00:00:00+00:00')")
    rows = validate_batch(
        [{"event_id": f"old{i}", "name": "x", "person_id": "ada" if i % 2 else "bob",
          "timestamp": f"2024-01-01T00:00:{59 - i:02d}.000Z"} for i in range(30)]
        + [{"event_id": "anon", "name": "x", "anonymous_id": "a1",
            "timestamp": "2024-01-01T00:00:00.000Z"}]).rows
    db.executemany(
        "INSERT INTO events (project_id, event_id, kind, timestamp, person_id, anonymous_id,"
        " name, key_id, received_at, body) VALUES (1, ?, ?, ?, ?, ?, ?, 1, 'now', ?)", rows)
    db.commit()
    db.close()

    store = SQLiteStore(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master"
                                              " WHERE type = 'index'")}
        assert "events_person" not in indexes and "events_anonymous" in indexes
    finally:
        conn.close()
    assert _mark(path) == (31, 30, 31)  # every event with a person indexed, none twice
    ada = [f"old{i}" for i in range(29, 0, -2)]  # event time order: the reverse
    assert _pages(store, 1, "ada", 4) == ada
    assert len(_pages(store, 1, "bob", 1000)) == 15
    more = validate_batch([{"event_id": "old1", "name": "x", "person_id": "ada",
                            "timestamp": "2024-01-01T00:00:00.000Z"},
                           {"event_id": "new", "name": "x", "person_id": "ada",
                            "timestamp": "2024-01-01T00:00:00.000Z"}])
    assert store.insert(1, more.rows, more.links) == (1, 1)  # old1 is still a duplicate
    assert _pages(store, 1, "ada", 4) == ["new", *ada]
    assert store.count_events(1) == 32
    store.close()
