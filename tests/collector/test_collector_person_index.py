"""SQLite's person index, filled in bulk in a file and a thread of its own: a timeline reads
the indexed events and the ones stored after the last pass as one history, exactly, while
passes run beside the inserts, after a restart, after the index file is lost or belongs to
another history, with two stores or two processes on one file; databases of schemas 2 and 3
are migrated on start."""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fanout.collector import personindex
from fanout.collector.ingest import validate_batch
from fanout.collector.personindex import INDEX_VERSION, index_path
from fanout.collector.sqlite import SCHEMA_VERSION, SQLiteStore


def _pages(store: SQLiteStore, project_id: int, person: str, limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = store.timeline(project_id, person, limit=limit, max_bytes=1 << 20, after=after)
        seen += [_event_id(body) for body in page.events]
        if page.next_cursor is None:
            return seen
        after = page.next_cursor


def _event_id(body: bytes) -> str:
    return body.decode().split('"event_id":"')[1].split('"')[0]


def _mark(path: Path) -> tuple[int, int, int]:
    """(indexed_upto, rows in person_events, the highest seq), from the two files."""
    db = sqlite3.connect(index_path(path))
    try:
        (mark,) = db.execute("SELECT seq FROM indexed_upto").fetchone()
        (indexed,) = db.execute("SELECT count(*) FROM person_events").fetchone()
        db.execute("ATTACH ? AS ev", (str(path),))
        (top,) = db.execute("SELECT max(seq) FROM ev.events").fetchone()
        (distinct,) = db.execute("SELECT count(DISTINCT seq) FROM person_events").fetchone()
        assert distinct == indexed  # no event indexed twice
        (beyond,) = db.execute("SELECT count(*) FROM person_events WHERE seq > ?",
                               (mark,)).fetchone()
        assert beyond == 0  # nothing indexed past the mark
    finally:
        db.close()
    return mark, indexed, top


def _people_events(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (n,) = db.execute("SELECT count(*) FROM events WHERE person_id IS NOT NULL").fetchone()
    finally:
        db.close()
    return int(n)


def _batch(rnd: random.Random, tag: str, size: int, people: list[str],
           expected: dict[str, list[tuple[str, int, str]]], order: list[int]) -> list[dict]:
    """``size`` events of random people at random (out of order, tied) times; each one's
    (timestamp, arrival, event id) appended to ``expected[person]``."""
    batch = []
    for i in range(size):
        person = rnd.choice(people)
        ts = f"2024-01-01T00:00:{rnd.randint(0, 20):02d}.000Z"
        batch.append({"event_id": f"{tag}_{i}", "name": "x", "person_id": person,
                      "timestamp": ts})
        expected.setdefault(person, []).append((ts, order[0], f"{tag}_{i}"))
        order[0] += 1
    return batch


def _timeline(expected: dict[str, list[tuple[str, int, str]]], person: str) -> list[str]:
    return [e for _, _, e in sorted(expected.get(person, []))]


def test_a_timeline_spans_the_indexed_events_and_the_newest(tmp_path: Path):
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=7)
    project = store.create_project("p")
    rnd = random.Random(7)
    expected: dict[str, list[tuple[str, int, str]]] = {}
    order = [0]
    for b in range(9):
        batch = _batch(rnd, f"e{b}", rnd.randint(1, 6), ["ada", "bob"], expected, order)
        ingested = validate_batch(batch)
        assert ingested.rejected == []
        assert store.insert(project.id, ingested.rows, ingested.links) == (len(batch), 0)
        for limit in (1, 2, 5, 100):  # however far the index's thread got
            assert _pages(store, project.id, "ada", limit) == _timeline(expected, "ada")
    sent = order[0]
    assert store.catch_up_index() == sent
    assert _mark(path) == (sent, sent, sent)  # every event has a person here
    for limit in (1, 3, 100):
        assert _pages(store, project.id, "ada", limit) == _timeline(expected, "ada")
    # A redelivered batch is a duplicate whether its events are indexed yet or not.
    again = validate_batch([{"event_id": "e0_0", "name": "x", "person_id": "ada",
                             "timestamp": "2024-01-01T00:00:00.000Z"},
                            {"event_id": "e8_0", "name": "x", "person_id": "ada",
                             "timestamp": "2024-01-01T00:00:00.000Z"}])
    assert store.insert(project.id, again.rows, again.links) == (0, 2)
    late = _batch(rnd, "late", 5, ["ada"], expected, order)
    assert store.insert(project.id, validate_batch(late).rows, []) == (5, 0)  # unindexed
    store.close()

    reopened = SQLiteStore(path, index_every=7)  # opening indexes what is left (a thread)
    assert _pages(reopened, project.id, "ada", 3) == _timeline(expected, "ada")
    assert reopened.catch_up_index() == sent + 5
    assert _mark(path) == (sent + 5, sent + 5, sent + 5)
    assert _pages(reopened, project.id, "ada", 3) == _timeline(expected, "ada")
    assert reopened.count_events(project.id) == sent + 5
    reopened.close()


def test_passes_beside_inserts_and_reads_keep_every_page_exact(tmp_path: Path):
    """The index's thread (woken every 16 events) and a thread forcing passes run beside
    the inserts; every single-page read is one snapshot: exactly the person's events of
    the batches committed up to some batch, none missing, none twice."""
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=16)
    project = store.create_project("p")
    rnd = random.Random(11)
    people = [f"u{i}" for i in range(12)]
    expected: dict[str, list[tuple[str, int, str]]] = {}
    order = [0]
    batches = [_batch(rnd, f"b{b}", rnd.randint(1, 12), people, expected, order)
               for b in range(300)]
    batch_of = {e["event_id"]: b for b, batch in enumerate(batches) for e in batch}
    committed = [0]  # batches whose insert returned
    done = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def insert() -> None:
        try:
            for batch in batches:
                rows = validate_batch(batch).rows
                assert store.insert(project.id, rows, []) == (len(batch), 0)
                committed[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)
        finally:
            done.set()

    def force_passes() -> None:
        try:
            while not done.is_set():
                store.catch_up_index()
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=insert), threading.Thread(target=force_passes)]
    for t in threads:
        t.start()
    try:
        while not done.is_set() or reads[0] == 0:
            person = people[reads[0] % len(people)]
            before = committed[0]
            page = store.timeline(project.id, person, limit=10_000, max_bytes=1 << 30)
            got = [_event_id(body) for body in page.events]
            # Up to the newest batch it shows, and at least every batch committed before.
            upto = max([before - 1, *(batch_of[e] for e in got)])
            want = sorted(x for x in expected[person] if batch_of[x[2]] <= upto)
            assert got == [e for _, _, e in want]
            reads[0] += 1
    finally:
        for t in threads:
            t.join()
    assert errors == []
    assert reads[0] > 0
    total = order[0]
    assert store.count_events(project.id) == total
    for person in people:
        assert _pages(store, project.id, person, 7) == _timeline(expected, person)
    assert store.catch_up_index() == total
    assert _mark(path) == (total, total, total)
    store.close()


def _fill(store: SQLiteStore, project_id: int, rnd: random.Random, tag: str, n: int,
          people: list[str], expected: dict[str, list[tuple[str, int, str]]],
          order: list[int]) -> None:
    for b in range(n):
        batch = _batch(rnd, f"{tag}{b}", 10, people, expected, order)
        assert store.insert(project_id, validate_batch(batch).rows, []) == (10, 0)


def _index_version(path: Path) -> int:
    db = sqlite3.connect(index_path(path))
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_an_index_file_made_before_it_had_a_version_is_kept(tmp_path: Path):
    # Files made before INDEX_VERSION read user_version 0 and have its layout: kept as
    # they are (no rebuild: the mark and the indexed rows stay), then marked.
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=20)
    project = store.create_project("p")
    expected: dict[str, list[tuple[str, int, str]]] = {}
    _fill(store, project.id, random.Random(5), "a", 6, ["ada", "bob"], expected, [0])
    assert store.catch_up_index() == 60
    store.close()
    unversioned = sqlite3.connect(index_path(path))
    unversioned.execute("PRAGMA user_version = 0")
    # A row no pass would write (no event has seq 10**9): a rebuild would lose it, however
    # fast the background pass had indexed the 60 events again.
    unversioned.execute("INSERT INTO person_events VALUES (?, 'sentinel', '2000', ?)",
                        (project.id, 10**9))
    unversioned.commit()
    unversioned.close()

    store = SQLiteStore(path, index_every=20)
    db = sqlite3.connect(index_path(path))
    try:
        assert db.execute("SELECT count(*) FROM person_events WHERE seq = ?",
                          (10**9,)).fetchone() == (1,)
        (mark,) = db.execute("SELECT seq FROM indexed_upto").fetchone()
        assert mark == 60
    finally:
        db.close()
    assert _index_version(path) == INDEX_VERSION
    for person in ("ada", "bob"):
        assert _pages(store, project.id, person, 7) == _timeline(expected, person)
    store.close()


def _remove_index(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index_path(path)}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("damage", ["lost", "not a database", "another version"])
def test_a_lost_or_damaged_index_file_is_rebuilt_from_the_events(tmp_path: Path, damage: str):
    # Derived data: a missing index file, one SQLite cannot read (SQLITE_NOTADB), or one
    # of another layout (a later fanout's, after a downgrade) is rebuilt, not a store that
    # cannot open nor one that reads tables it does not know.
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=20)
    project = store.create_project("p")
    rnd = random.Random(3)
    people = ["ada", "bob", "cy"]
    expected: dict[str, list[tuple[str, int, str]]] = {}
    order = [0]
    _fill(store, project.id, rnd, "a", 12, people, expected, order)
    assert store.catch_up_index() == 120
    store.close()
    _remove_index(path)
    assert not index_path(path).exists()
    if damage == "not a database":
        index_path(path).write_bytes(b"not a database, " * 512)
    if damage == "another version":
        other = sqlite3.connect(index_path(path))
        other.executescript(
            "CREATE TABLE person_events (person TEXT, seqs BLOB);"
            "INSERT INTO person_events VALUES ('ada', x'00');"
            "CREATE TABLE indexed_upto (upto INTEGER);"
            "INSERT INTO indexed_upto VALUES (999);"
            f"PRAGMA user_version = {INDEX_VERSION + 1};")
        other.close()

    store = SQLiteStore(path, index_every=20)
    for person in people:  # exact before the rebuild is done, and after
        assert _pages(store, project.id, person, 9) == _timeline(expected, person)
    assert store.catch_up_index() == 120
    assert _mark(path) == (120, 120, 120)
    assert _index_version(path) == INDEX_VERSION
    assert store.count_events() == 120
    for person in people:
        assert _pages(store, project.id, person, 9) == _timeline(expected, person)
    store.close()


def test_an_index_of_another_history_is_rebuilt(tmp_path: Path):
    """The events file restored from a backup taken before the index moved on: the index's
    mark names an event the file does not hold, so it is rebuilt, not trusted."""
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=20)
    project = store.create_project("p")
    rnd = random.Random(5)
    people = ["ada", "bob"]
    expected: dict[str, list[tuple[str, int, str]]] = {}
    order = [0]
    _fill(store, project.id, rnd, "a", 5, people, expected, order)
    backup = sqlite3.connect(tmp_path / "backup.db")
    live = sqlite3.connect(path)
    live.backup(backup)  # the events file alone, as a backup takes it
    live.close()
    backup.close()
    kept = {p: list(v) for p, v in expected.items()}
    _fill(store, project.id, rnd, "b", 7, people, expected, order)
    assert store.catch_up_index() == 120
    store.close()

    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "backup.db", path)  # the index file stays, 70 events ahead
    store = SQLiteStore(path, index_every=20)
    assert store.count_events(project.id) == 50
    order = [50]
    # New events take the sequence numbers the lost ones had, for other people.
    _fill(store, project.id, rnd, "c", 8, ["cy", "dee"], kept, order)
    for person in ["ada", "bob", "cy", "dee"]:
        assert _pages(store, project.id, person, 6) == _timeline(kept, person)
    assert store.catch_up_index() == 130
    assert _mark(path) == (130, 130, 130)
    for person in ["ada", "bob", "cy", "dee"]:
        assert _pages(store, project.id, person, 6) == _timeline(kept, person)
    store.close()


def test_inserts_do_not_wait_for_the_index_file(tmp_path: Path):
    """Another connection holds the index file's write lock (as a long pass would): the
    inserts commit and the reads answer meanwhile; the index catches up after."""
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=10)
    project = store.create_project("p")
    rnd = random.Random(9)
    expected: dict[str, list[tuple[str, int, str]]] = {}
    order = [0]
    blocker = sqlite3.connect(index_path(path), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        _fill(store, project.id, rnd, "a", 6, ["ada", "bob"], expected, order)
        assert _pages(store, project.id, "ada", 4) == _timeline(expected, "ada")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.catch_up_index() == 60
    assert _mark(path) == (60, 60, 60)
    assert _pages(store, project.id, "bob", 4) == _timeline(expected, "bob")
    store.close()


def test_two_stores_on_one_file_index_each_event_once(tmp_path: Path):
    path = tmp_path / "c.db"
    first = SQLiteStore(path, index_every=8)
    project = first.create_project("p")
    second = SQLiteStore(path, index_every=5)
    people = [f"u{i}" for i in range(5)]
    expected: dict[str, list[tuple[str, int, str]]] = {}
    lock = threading.Lock()
    counts = {"accepted": 0, "duplicates": 0}

    def feed(store: SQLiteStore, seed: int) -> None:
        rnd = random.Random(seed)
        for b in range(60):
            # Each batch repeats the other store's ids half the time: one of them stores it.
            tag = f"s{b}" if rnd.random() < 0.5 else f"s{seed}_{b}"
            batch = [{"event_id": f"{tag}_{i}", "name": "x", "person_id": rnd.choice(people),
                      "timestamp": f"2024-01-01T00:00:{rnd.randint(0, 30):02d}.000Z"}
                     for i in range(6)]
            result = store.insert(project.id, validate_batch(batch).rows, [])
            with lock:
                counts["accepted"] += result.accepted
                counts["duplicates"] += result.duplicates

    threads = [threading.Thread(target=feed, args=(s, i)) for i, s in enumerate([first, second])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = first.count_events(project.id)
    assert counts["accepted"] == stored and counts["accepted"] + counts["duplicates"] == 720
    db = sqlite3.connect(path)
    for seq, event_id, person, ts in db.execute(
            "SELECT seq, event_id, person_id, timestamp FROM events ORDER BY seq"):
        expected.setdefault(person, []).append((ts, seq, event_id))
    db.close()
    for store in (first, second):
        for person in people:
            assert _pages(store, project.id, person, 11) == _timeline(expected, person)
    assert second.catch_up_index() == stored
    assert first.catch_up_index() == stored
    assert _mark(path) == (stored, stored, stored)
    for person in people:
        assert _pages(first, project.id, person, 11) == _timeline(expected, person)
    second.close()
    first.close()


def test_close_stops_a_rebuild_under_way_and_the_next_open_finishes_it(tmp_path: Path):
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=10**9)  # no pass while filling
    project = store.create_project("p")
    rnd = random.Random(13)
    expected: dict[str, list[tuple[str, int, str]]] = {}
    order = [0]
    _fill(store, project.id, rnd, "a", 2000, ["ada", "bob", "cy"], expected, order)
    store.close()
    _remove_index(path)
    store = SQLiteStore(path)  # starts the rebuild of 20,000 events in its thread
    store.close()  # interrupts it, or finds it done: either way no error, no thread left
    assert not [t for t in threading.enumerate() if t.name.startswith("fanout-person-index")]
    store = SQLiteStore(path)
    assert _pages(store, project.id, "cy", 5000) == _timeline(expected, "cy")
    assert store.catch_up_index() == 20_000
    assert _mark(path) == (20_000, 20_000, 20_000)
    assert _pages(store, project.id, "ada", 5000) == _timeline(expected, "ada")
    store.close()


_UNCLOSED = """
import sys
from fanout.collector import personindex
from fanout.collector.ingest import validate_batch
from fanout.collector.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1], index_every=10)
project = store.create_project("p")
rows = validate_batch([{"event_id": f"e{i}", "name": "x", "person_id": "ada",
                        "timestamp": "2024-01-01T00:00:00.000Z"} for i in range(50)]).rows
print(store.insert(project.id, rows, []).accepted)  # wakes the index's thread; never closed
"""


def test_a_store_never_closed_does_not_keep_its_process_alive(tmp_path: Path):
    """The index's thread is not a daemon (a pass is never cut by the interpreter's exit),
    so it ends on its own once idle."""
    path = tmp_path / "c.db"
    proc = subprocess.run([sys.executable, "-c", _UNCLOSED, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["50"]
    store = SQLiteStore(path)
    assert store.count_events() == 50
    assert store.catch_up_index() == 50
    assert _mark(path) == (50, 50, 50)
    store.close()


_FEEDER = """
import random, sys
from fanout.collector import personindex
from fanout.collector.ingest import validate_batch
from fanout.collector.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1], index_every=16)
rnd = random.Random(int(sys.argv[2]))
accepted = duplicates = 0
for b in range(80):
    tag = f"s{b}" if b % 3 == 0 else f"p{sys.argv[2]}_{b}"  # every third batch: both send it
    batch = [{"event_id": f"{tag}_{i}", "name": "x", "person_id": f"u{rnd.randrange(6)}",
              "timestamp": f"2024-01-01T00:00:{rnd.randint(0, 30):02d}.000Z"} for i in range(5)]
    result = store.insert(1, validate_batch(batch).rows, [])
    accepted += result.accepted
    duplicates += result.duplicates
store.close()
print(accepted, duplicates)
"""


def test_two_processes_on_one_file_keep_one_exact_index(tmp_path: Path):
    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    project = store.create_project("p")
    assert project.id == 1
    store.close()
    procs = [subprocess.Popen([sys.executable, "-c", _FEEDER, str(path), str(seed)],
                              stdout=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        results.append(tuple(map(int, out.split())))
    accepted = sum(a for a, _ in results)
    duplicates = sum(d for _, d in results)
    shared = len(range(0, 80, 3)) * 5
    assert accepted + duplicates == 800
    assert duplicates == shared and accepted == 800 - shared
    store = SQLiteStore(path)
    assert store.count_events(1) == accepted
    expected: dict[str, list[tuple[str, int, str]]] = {}
    db = sqlite3.connect(path)
    for seq, event_id, person, ts in db.execute(
            "SELECT seq, event_id, person_id, timestamp FROM events ORDER BY seq"):
        expected.setdefault(person, []).append((ts, seq, event_id))
    db.close()
    for person in expected:
        assert _pages(store, 1, person, 13) == _timeline(expected, person)
    assert store.catch_up_index() == accepted
    assert _mark(path) == (accepted, accepted, accepted)
    store.close()


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
    assert _pages(store, 1, "ada", 4) == [f"old{i}" for i in range(29, 0, -2)]  # unindexed
    assert store.catch_up_index() == 31
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


# Schema 3 as fanout wrote it: the person index in the events file, verbatim (the tables
# the person index and the migration touch; the others as in schema 2).
_SCHEMA_V3_INDEX = """
CREATE TABLE person_events (
    project_id   INTEGER NOT NULL,
    person_id    TEXT NOT NULL,
    timestamp    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (project_id, person_id, timestamp, seq)
) WITHOUT ROWID;
CREATE TABLE indexed_upto (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          INTEGER NOT NULL
);
INSERT INTO indexed_upto (id, seq) VALUES (1, 0);
"""


def test_a_schema_3_database_moves_its_index_to_its_own_file(tmp_path: Path):
    """A schema 3 database: 40 events, the first 24 indexed in the events file by the
    previous version's pass; the table goes, the index file is built from ``events``."""
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V2.replace("CREATE INDEX events_person ON events"
                                        " (project_id, person_id, timestamp)\n"
                                        "    WHERE person_id IS NOT NULL;", "")
                     .replace("PRAGMA user_version = 2;", "PRAGMA user_version = 3;")
                     + _SCHEMA_V3_INDEX)
    db.execute("INSERT INTO projects VALUES (1, 'default', '2024-01-01T00:00:00+00:00')")
    rows = validate_batch(
        [{"event_id": f"old{i}", "name": "x", "person_id": "ada" if i % 2 else "bob",
          "timestamp": f"2024-01-01T00:00:{59 - i:02d}.000Z"} for i in range(40)]).rows
    db.executemany(
        "INSERT INTO events (project_id, event_id, kind, timestamp, person_id, anonymous_id,"
        " name, key_id, received_at, body) VALUES (1, ?, ?, ?, ?, ?, ?, 1, 'now', ?)", rows)
    db.execute("INSERT INTO person_events SELECT project_id, person_id, timestamp, seq"
               " FROM events WHERE seq <= 24")
    db.execute("UPDATE indexed_upto SET seq = 24")
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone() == (3,)
    db.close()

    store = SQLiteStore(path)
    ada = [f"old{i}" for i in range(39, 0, -2)]  # event time order: the reverse
    assert _pages(store, 1, "ada", 6) == ada  # exact while the index file is built
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master"
                                             " WHERE type = 'table'")}
        assert "person_events" not in tables and "indexed_upto" not in tables
    finally:
        conn.close()
    assert store.catch_up_index() == 40
    assert _mark(path) == (40, 40, 40)
    assert _pages(store, 1, "ada", 6) == ada
    assert len(_pages(store, 1, "bob", 1000)) == 20
    store.close()


def test_events_deleted_by_hand_after_the_mark_do_not_stop_the_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # More consecutive events deleted after the mark than one pass takes (PASS_MAX, made
    # small here): the pass finds no event to stand its mark on, moves it to its end
    # anyway, and the next passes index what is left; the next open keeps that mark.
    monkeypatch.setattr(personindex, "PASS_MAX", 10)
    path = tmp_path / "c.db"
    store = SQLiteStore(path, index_every=10**6)
    project = store.create_project("p")
    expected: dict[str, list[tuple[str, int, str]]] = {}
    _fill(store, project.id, random.Random(7), "a", 5, ["ada", "bob"], expected, [0])
    assert store.catch_up_index() == 50
    _fill(store, project.id, random.Random(8), "b", 3, ["ada", "bob"], expected, [50])
    events = sqlite3.connect(path)
    deleted = {row[0] for row in events.execute(
        "SELECT event_id FROM events WHERE seq BETWEEN 51 AND 70")}
    events.execute("DELETE FROM events WHERE seq BETWEEN 51 AND 70")
    events.commit()
    events.close()
    for person in expected:
        expected[person] = [e for e in expected[person] if e[2] not in deleted]
    assert len(deleted) == 20

    done: list[int] = []
    passes = threading.Thread(target=lambda: done.append(store.catch_up_index()), daemon=True)
    passes.start()
    passes.join(30)
    assert done == [80]
    for person in ("ada", "bob"):
        assert _pages(store, project.id, person, 4) == _timeline(expected, person)
    store.close()
    store = SQLiteStore(path, index_every=10**6)
    assert store.catch_up_index() == 80  # kept, not rebuilt
    for person in ("ada", "bob"):
        assert _pages(store, project.id, person, 4) == _timeline(expected, person)
    store.close()
