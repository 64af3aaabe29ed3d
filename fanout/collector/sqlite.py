"""The default store: one SQLite file in WAL mode, one writer, batch inserts.

Throughput comes from doing little per event: one transaction per batch (or per group of
the batches that arrived while the previous one committed, :mod:`.groupcommit`), multi-row
``INSERT OR IGNORE`` statements (the unique index on ``(project_id, event_id)`` is the dedupe,
so a redelivered webhook costs one index probe), WAL with ``synchronous=NORMAL`` (a commit
is durable against a process crash, which is what a 200 promises; an OS crash may lose the
last commits, the usual trade of WAL/NORMAL). Each of the store's connections (the events'
writer, the timelines' reader, the person index's) is used under a lock of its own, so the
store is safe from any thread and the events file has never more than one writer.

A person's timeline is read through ``person_events``, an index of ``(project, person,
timestamp, seq)`` filled in bulk, not per batch: the events of a batch belong to different
people, so an index updated per batch rewrote about one index page into the WAL per event
stored, half of the insert's cost. It lives in a file of its own beside the events file,
filled by a thread of its own (:mod:`.personindex`), woken once :data:`INDEX_EVERY` events
have been stored since the last time and when the store is opened, so the pass never holds
the events file's write lock. A timeline read takes the indexed events from the index and
the few thousand after its mark from a scan of the newest rows, both in one read
transaction, on a connection of its own that never waits for a write.

A database made before projects existed (schema 1: no ``projects`` table, ``user_version``
0) is migrated in one transaction when it is opened: a ``default`` project is created and
owns every event, link and key, and each key becomes an ``ingest`` + ``read`` key. A
database of schema 2 (the person index on ``events``) loses that index, and one of schema 3
loses the ``person_events`` and ``indexed_upto`` tables it kept in the events file; either
way the index file is built from ``events`` in the background when it is opened, as any
unindexed events are, timelines reading the unindexed rows meanwhile.
"""

from __future__ import annotations

import datetime as _dt
import heapq
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple

from .groupcommit import GroupCommit
from .ingest import Link, Row
from .keys import (
    DEFAULT_PROJECT,
    KeyInfo,
    Project,
    check_project_name,
    generate_key,
    hash_key,
    parse_scopes,
    scopes_text,
)
from .personindex import PersonIndex
from .ratelimit import Limiter, RateLimiter
from .store import WOULD_WAIT, InsertResult, StoreError, WouldWait
from .timeline import Cursor, Page, cut

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

#: ``PRAGMA user_version`` of a database this module made or migrated.
SCHEMA_VERSION: Final = 4
#: Events stored between two bulk updates of the person index (see the module docstring):
#: about the most rows a timeline read scans beyond the index, per process writing. A pass
#: rewrites about every page of the index whatever its number of events, so doubling this
#: from 4,096 took the insert from 10.4 to 7.7 µs per event (medians of 4, 40,000 events
#: over 1,000 people) and the scan of the unindexed rows from 0.4 to 1.9 ms (p50).
INDEX_EVERY: Final = 8192

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,
    project_id   INTEGER NOT NULL,
    event_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    timestamp    TEXT NOT NULL,
    person_id    TEXT,
    anonymous_id TEXT,
    name         TEXT,
    key_id       INTEGER NOT NULL,
    received_at  TEXT NOT NULL,
    body         BLOB NOT NULL,
    UNIQUE (project_id, event_id)
);
CREATE TABLE IF NOT EXISTS identity_links (
    project_id   INTEGER NOT NULL,
    anonymous_id TEXT NOT NULL,
    person_id    TEXT NOT NULL,
    linked_at    TEXT NOT NULL,
    PRIMARY KEY (project_id, anonymous_id, person_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS server_keys (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects (id),
    scopes      TEXT NOT NULL,
    label       TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE TABLE IF NOT EXISTS health (
    id          INTEGER PRIMARY KEY,
    checked_at  TEXT NOT NULL
);
"""
_INDEXES: Final = """
CREATE INDEX IF NOT EXISTS events_anonymous ON events (project_id, anonymous_id, timestamp)
    WHERE anonymous_id IS NOT NULL AND person_id IS NULL;
CREATE INDEX IF NOT EXISTS identity_links_person ON identity_links (project_id, person_id);
"""

# Schema 1 -> 2, in one transaction (see the module docstring).
_MIGRATE_1: Final = """
BEGIN IMMEDIATE;
CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
INSERT INTO projects (id, name, created_at) VALUES (1, '{default}', '{now}');
DROP INDEX IF EXISTS events_person;
DROP INDEX IF EXISTS events_anonymous;
DROP INDEX IF EXISTS identity_links_person;
ALTER TABLE events RENAME TO events_v1;
ALTER TABLE identity_links RENAME TO identity_links_v1;
ALTER TABLE server_keys RENAME TO server_keys_v1;
{tables}
INSERT INTO events (seq, project_id, event_id, kind, timestamp, person_id, anonymous_id, name,
                    key_id, received_at, body)
    SELECT seq, 1, event_id, kind, timestamp, person_id, anonymous_id, name, key_id,
           received_at, body FROM events_v1;
INSERT INTO identity_links (project_id, anonymous_id, person_id, linked_at)
    SELECT 1, anonymous_id, person_id, linked_at FROM identity_links_v1;
INSERT INTO server_keys (id, project_id, scopes, label, key_hash, created_at, revoked_at)
    SELECT id, 1, 'ingest,read', label, key_hash, created_at, revoked_at FROM server_keys_v1;
DROP TABLE events_v1;
DROP TABLE identity_links_v1;
DROP TABLE server_keys_v1;
{indexes}
PRAGMA user_version = {version};
COMMIT;
"""

#: Rows per multi-row ``INSERT``; a batch is cut into chunks of this many, then of the
#: powers of two below it, so at most 7 statement shapes are ever prepared (and cached).
_CHUNK: Final = 64
#: The page size of a database this module creates. A database keeps the page size it was
#: made with (WAL forbids changing it, even by ``VACUUM``), so one made before with 4,096
#: is left as it is and works as before. A batch of 100 events with fanout's time-ordered
#: ids rewrites 14 pages of 8 KiB instead of 21 of 4 KiB, and a checkpoint copies half as
#: many pages, each read from the WAL and written to the file by a system call of its own:
#: the insert's thread 7.8 -> 7.2 µs per event, system time 3.0 -> 2.5 (medians of 9
#: alternating runs of 100,000 events, checkpoints included). Random ids (UUID4) touch a
#: page of the dedupe index per event, 8 KiB instead of 4: the same CPU, and the same wall
#: time only with the checkpoint kept at 10,000 pages (below); at 5,000 (40 MB), it was a
#: quarter slower. 16 KiB pages wrote 150 KB of WAL per batch instead of 85 KB, and cost
#: more.
_PAGE_SIZE: Final = 8192
#: WAL pages between automatic checkpoints (the default is 1,000 pages): 40 MB of 4 KiB
#: pages, 80 MB of 8 KiB ones. A commit rewrites the pages of the events table and of its
#: dedupe index it touches; a checkpoint copies only each page's latest version, so a
#: longer WAL copies and syncs fewer pages per event stored.
_WAL_AUTOCHECKPOINT: Final = 10_000
#: Rows :meth:`SQLiteStore.insert_nowait` commits at most between two commits of the
#: ordinary path (:meth:`SQLiteStore.insert`, in a worker thread); the batch that would
#: pass it takes that path. An inline commit runs with the automatic checkpoint off (a
#: checkpoint can take 100 ms, too long for the event loop), so it is the ordinary path's
#: commit that checkpoints once the WAL is past :data:`_WAL_AUTOCHECKPOINT` pages. A row
#: rewrites at most about one page of the dedupe index (random event ids, such as UUID4,
#: touch a page each; fanout's time-ordered ids share a few), so the WAL outgrows that mark
#: by at most about this many pages, and with fanout's batches of 100 one batch in about
#: 20 pays the two worker-thread hand-offs.
_NOWAIT_ROWS: Final = 2048
#: Two inline commits in a row that each held the event loop longer than this (seconds)...
_NOWAIT_SLOW: Final = 0.005
#: ...make batches take the ordinary path for this long (seconds): with random event ids
#: in a large database, inserting a batch reads pages from the disk (8-18 ms for 320
#: events at 235,000 stored), and the event loop is then held by at most two such batches
#: a second. One slow commit alone does not: a 100-event commit takes about 1 ms, and this
#: machine's scheduler stalls a thread for 5 ms now and then (a pause after any slow
#: commit sent most batches of a busy second to the worker path for nothing).
_NOWAIT_PAUSE: Final = 1.0


def _insert_sql(rows: int) -> str:
    """A multi-row ``INSERT`` whose parameters are all of the types Python's sqlite3 binds
    without looking for an adapter: ``str``, ``int``, ``float`` and ``bytearray``.

    For any other type (``bytes``, ``None``) the module first looks for an adapter, and
    that lookup formats and discards an ``AttributeError`` twice per parameter: binding a
    row's body (bytes) and its missing ids (None) took more CPU than SQLite's own insert
    of the row. So a row's body is bound as a ``bytearray`` copy, and a missing id or name
    as a float NaN, which SQLite binds as NULL (``sqlite3VdbeMemSetDouble`` stores no NaN;
    a test pins it). The NaN replaced ``NULLIF(?, '')`` around a ``''``: that expression,
    evaluated for three values of every row, was 1,600-2,200 of the insert's 20,100
    instructions per event. The parameters go column by column (every event id, then
    every kind, ...), each column gathered by C code; project, key and arrival time, the
    same for every row, last.
    """
    columns = ("event_id", "kind", "timestamp", "person_id", "anonymous_id", "name", "body")
    n = len(columns)
    shared = ", ".join(f"?{rows * n + i}" for i in (1, 2, 3))
    values = ",".join(
        "(" + ", ".join(f"?{c * rows + r + 1}" for c in range(n)) + f", {shared})"
        for r in range(rows))
    return (
        f"INSERT OR IGNORE INTO events ({', '.join(columns)}, project_id, key_id,"
        f" received_at) VALUES {values}"
    )


#: ``_NULL.get(value, value)``: NaN (bound as NULL, see :func:`_insert_sql`) for None,
#: anything else unchanged (C code per value).
_NULL: Final[dict[object, float]] = {None: float("nan")}
_INSERTS: Final = {n: _insert_sql(n) for n in (64, 32, 16, 8, 4, 2, 1)}
_LINK: Final = (
    "INSERT OR IGNORE INTO identity_links (anonymous_id, person_id, linked_at, project_id)"
    " VALUES (?, ?, ?, ?)"
)
_KEY_COLUMNS: Final = (
    "k.id, k.label, k.created_at, k.revoked_at, k.project_id, p.name, k.scopes"
    " FROM server_keys k JOIN projects p ON p.id = k.project_id"
)
#: The active key of a hash (``key_for`` and ``key_for_nowait``).
_KEY_LOOKUP: Final = f"SELECT {_KEY_COLUMNS} WHERE k.key_hash = ? AND k.revoked_at IS NULL"
# The timeline's two halves, each read lazily in index order and merged in Python. The
# person's own events stream with their bodies straight from the index order (no sort);
# the linked anonymous ids' events need a sort, so only their keys are sorted and their
# bodies fetched one by one for the events that make the page.
_PERSON_EVENTS: Final = (
    "SELECT p.timestamp, p.seq, e.body FROM ix.person_events p JOIN events e ON e.seq = p.seq"
    " WHERE p.project_id = ? AND p.person_id = ? AND (p.timestamp, p.seq) > (?, ?)"
    " ORDER BY p.timestamp, p.seq LIMIT ?"
)
# The events after the mark, not in person_events yet: the newest rows, by rowid range
# (the unary + keeps the planner off the (project_id, event_id) index).
_PERSON_TAIL: Final = (
    "SELECT timestamp, seq, body FROM events"
    " WHERE seq > (SELECT seq FROM ix.indexed_upto WHERE id = 1)"
    " AND +project_id = ? AND +person_id = ? AND (timestamp, seq) > (?, ?)"
    " ORDER BY timestamp, seq LIMIT ?"
)
_ANONYMOUS_KEYS: Final = (
    "SELECT timestamp, seq FROM events WHERE project_id = ? AND person_id IS NULL"
    " AND anonymous_id IS NOT NULL AND anonymous_id IN"
    " (SELECT anonymous_id FROM identity_links WHERE project_id = ? AND person_id = ?)"
    " AND (timestamp, seq) > (?, ?) ORDER BY timestamp, seq LIMIT ?"
)
_START: Final = Cursor("", -1)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class _Insert(NamedTuple):
    """One request's batch, waiting to be committed (alone or in a group)."""

    project_id: int
    rows: Sequence[Row]
    links: Sequence[Link]
    key_id: int


def _insert_rows(db: sqlite3.Connection, rows: Sequence[Row], project_id: int, key_id: int,
                 now: str) -> None:
    """``rows`` in multi-row ``INSERT OR IGNORE`` statements: one statement step per
    chunk instead of one per row (a third less CPU per event than ``executemany``), its
    parameters gathered by C code (``zip``, ``map``), no bytecode per field."""
    start, total = 0, len(rows)
    null = _NULL.get
    while start < total:
        size = _CHUNK
        while size > total - start:
            size //= 2
        event_ids, kinds, timestamps, persons, anonymous, names, bodies = zip(
            *rows[start:start + size], strict=True)
        db.execute(_INSERTS[size], [
            *event_ids, *kinds, *timestamps, *map(null, persons, persons),
            *map(null, anonymous, anonymous), *map(null, names, names),
            *map(bytearray, bodies), project_id, key_id, now])
        start += size


def _key(row: tuple[int, str, str, str | None, int, str, str]) -> KeyInfo:
    key_id, label, created, revoked, project_id, project, scopes = row
    return KeyInfo(key_id, label, created, revoked, project_id, project, parse_scopes(scopes))


class SQLiteStore:
    """Projects, events, identity links and server keys in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, index_every: int = INDEX_EVERY) -> None:
        self.path = Path(path)
        self._index_every = index_every
        self._unindexed = 0  # events this store stored since it last indexed
        self._nowait_rows = 0  # insert_nowait's rows since insert's last commit
        self._nowait_from = 0.0  # insert_nowait declines until this time.monotonic()
        self._nowait_slow = 0  # insert_nowait's slow commits in a row
        #: Batches committed by :meth:`insert_nowait` since the store was opened (tests).
        self.nowait_inserts = 0
        self._lock = threading.Lock()
        self._writes: GroupCommit[_Insert, InsertResult] = GroupCommit(
            self._lock, self._insert_group)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {str(self.path)!r}: {exc}") from None
        nowait: sqlite3.Connection | None = None
        try:
            with self._lock:
                # Before anything writes: it sets the page size of a new (empty) file
                # only; an existing database keeps its own.
                self._db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA busy_timeout=10000")
                self._db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT}")
                self._prepare()
                # The *_nowait calls' own connection, on the event loop's thread: busy
                # timeout 0 (SQLite answers SQLITE_BUSY at once instead of retrying for
                # 10 s) and no automatic checkpoint (one can take 100 ms), set once.
                # Switching the main connection's two PRAGMAs there and back cost about
                # 15,000 instructions per PRAGMA, 90,000 per request (4 around the
                # commit, 2 around the key lookup). Both connections are used under this
                # store's lock only; the worker path's commits on the main one make this
                # one reread the few pages an insert walks.
                nowait = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None, timeout=0)
                nowait.execute("PRAGMA synchronous=NORMAL")
                nowait.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as exc:
            if nowait is not None:
                nowait.close()
            self._db.close()
            raise StoreError(
                f"cannot use the SQLite database {str(self.path)!r}: {exc}"
            ) from None
        self._nowait_db = nowait
        # Timelines read on a connection of their own, with the index file attached, so a
        # read never waits for a commit, nor a commit for a read (WAL).
        self._read_lock = threading.Lock()
        index = reader = None
        try:
            index = PersonIndex(self.path)
            reader = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            reader.execute("ATTACH ? AS ix", (str(index.path),))
        except sqlite3.Error as exc:
            for opened in (reader, index, nowait, self._db):
                if opened is not None:
                    opened.close()
            raise StoreError(
                f"cannot use the person index of {str(self.path)!r}: {exc}") from None
        self._index, self._reader = index, reader
        if self._index.behind:
            self._index.wake()  # events stored before (or by another process): index them

    def _prepare(self) -> None:
        db = self._db
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this fanout ({SCHEMA_VERSION})"
            )
        old = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        if version == 0 and old is not None:
            script = _MIGRATE_1.format(
                default=DEFAULT_PROJECT, now=_now(), tables=_TABLES, indexes=_INDEXES,
                version=SCHEMA_VERSION,
            )
            try:
                db.executescript(script)
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return
        # Schemas 2 and 3 as well: the person index moves to a file of its own (built
        # when the store is opened, see .personindex).
        db.executescript(
            f"BEGIN IMMEDIATE; {_TABLES} {_INDEXES} DROP INDEX IF EXISTS events_person;"
            " DROP TABLE IF EXISTS person_events; DROP TABLE IF EXISTS indexed_upto;"
            f" PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        )

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    # -- events ------------------------------------------------------------------------

    def insert(
        self, project_id: int, rows: Sequence[Row], links: Sequence[Link], *, key_id: int = 0
    ) -> InsertResult:
        result = self._writes.submit(_Insert(project_id, rows, links, key_id))
        self._nowait_rows = 0  # committed with the automatic checkpoint on
        return result

    def insert_nowait(
        self, project_id: int, rows: Sequence[Row], links: Sequence[Link], *, key_id: int = 0
    ) -> InsertResult | None:
        """:meth:`insert` on the caller's thread (the event loop's) if nothing on the way
        waits, else ``None`` with nothing written. It declines when this store's lock is
        taken (a group commit, a lookup of identity links or counts) or batches are queued
        for the next group commit (they commit together, in order), past
        :data:`_NOWAIT_ROWS` inline rows (the checkpoint is left to :meth:`insert`), for
        :data:`_NOWAIT_PAUSE` after two inline commits slower than :data:`_NOWAIT_SLOW`, and
        when another connection or process holds SQLite's write lock: the transaction
        begins with the busy timeout at 0, so SQLite answers SQLITE_BUSY at once instead
        of retrying for 10 s. Its COMMIT runs with the automatic checkpoint off. With WAL
        and ``synchronous=NORMAL`` a commit appends to the WAL without an fsync. A commit
        that makes the person index's pass due only wakes the index's thread, as any
        commit does (the pass never runs on the commit's thread, nor holds this file's
        write lock)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if (self._writes.queued or self._nowait_rows + len(rows) > _NOWAIT_ROWS
                    or time.monotonic() < self._nowait_from):
                return None
            started = time.monotonic()
            try:
                (result,) = self._insert_group([_Insert(project_id, rows, links, key_id)],
                                               self._nowait_db)
            except sqlite3.Error:  # SQLITE_BUSY (or worse) before or at COMMIT: rolled
                return None  # back, nothing stored; insert() then waits, or reports it
            ended = time.monotonic()
            if ended - started <= _NOWAIT_SLOW:
                self._nowait_slow = 0
            else:
                self._nowait_slow += 1
                if self._nowait_slow >= 2:
                    self._nowait_slow = 0
                    self._nowait_from = ended + _NOWAIT_PAUSE
            self._nowait_rows += len(rows)
            self.nowait_inserts += 1
            return result
        finally:
            self._lock.release()

    def _insert_group(
        self, inserts: Sequence[_Insert], db: sqlite3.Connection | None = None
    ) -> list[InsertResult]:
        """Several requests' batches in one transaction (see :mod:`.groupcommit`) on ``db``
        (the main connection by default); each batch's accepted count is its own, so a
        batch repeating an id another batch of the group stored first counts it a
        duplicate, as it would one commit later."""
        now = _now()
        if db is None:
            db = self._db
        results = []
        stored = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for project_id, rows, links, key_id in inserts:
                before = db.total_changes
                _insert_rows(db, rows, project_id, key_id, now)
                accepted = db.total_changes - before
                stored += accepted
                if links:
                    db.executemany(_LINK, [(*link, project_id) for link in links])
                results.append(InsertResult(accepted, len(rows) - accepted))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # (SQLite rolls back itself on some errors: FULL, IOERR)
                db.execute("ROLLBACK")
            raise
        self._unindexed += stored
        if self._unindexed >= self._index_every:
            self._unindexed = 0
            self._index.wake()  # the pass runs in the index's thread, on its own file
        return results

    def catch_up_index(self) -> int:
        """Index every event stored so far now, in the caller's thread (the index's thread
        does it on its own; for tests, benchmarks and tools); returns the mark."""
        return self._index.catch_up()

    def timeline(
        self, project_id: int, person_id: str, *, limit: int, max_bytes: int,
        after: Cursor | None = None,
    ) -> Page:
        ts, seq = after or _START
        with self._read_lock:
            db = self._reader
            # One read transaction: the index, its mark and the rows after it are read
            # as of one commit of each file (see .personindex for why that is exact).
            db.execute("BEGIN")
            try:
                mine = db.execute(_PERSON_EVENTS, (project_id, person_id, ts, seq, limit + 1))
                tail = db.execute(_PERSON_TAIL, (project_id, person_id, ts, seq, limit + 1))
                linked = db.execute(
                    _ANONYMOUS_KEYS, (project_id, project_id, person_id, ts, seq, limit + 1)
                ).fetchall()
                rows = heapq.merge(mine, tail, self._bodies(linked))
                page = cut(((body, ts, seq) for ts, seq, body in rows), limit, max_bytes)
                mine.close()
                tail.close()
            finally:
                db.execute("COMMIT")
            return page

    def _bodies(self, keys: list[tuple[str, int]]) -> Iterator[tuple[str, int, bytes]]:
        for ts, seq in keys:
            (body,) = self._reader.execute("SELECT body FROM events WHERE seq = ?",
                                           (seq,)).fetchone()
            yield ts, seq, body

    def linked_ids(self, project_id: int, person_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT anonymous_id FROM identity_links WHERE project_id = ? AND person_id = ?"
                " ORDER BY linked_at, anonymous_id",
                (project_id, person_id),
            ).fetchall()
        return [a for (a,) in rows]

    def count_events(self, project_id: int | None = None) -> int:
        with self._lock:
            if project_id is None:
                (n,) = self._db.execute("SELECT count(*) FROM events").fetchone()
            else:
                (n,) = self._db.execute(
                    "SELECT count(*) FROM events WHERE project_id = ?", (project_id,)
                ).fetchone()
        return int(n)

    def event_ids(self, project_id: int | None = None) -> list[str]:
        query = "SELECT event_id FROM events WHERE ? IS NULL OR project_id = ? ORDER BY seq"
        with self._lock:
            return [e for (e,) in self._db.execute(query, (project_id, project_id))]

    def healthy(self) -> bool:
        """Commit a one-row write, waiting at most 2 s for another writer's lock."""
        try:
            with self._lock:
                db = self._db
                db.execute("PRAGMA busy_timeout=2000")
                try:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        db.execute("INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)",
                                   (_now(),))
                        db.execute("COMMIT")
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                finally:
                    db.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error:
            return False
        return True

    def limiter(self, rate: float | None, burst: float | None = None) -> Limiter:
        """In memory: one process owns a SQLite file's collector (see ``--workers``)."""
        return RateLimiter(rate, burst)

    # -- projects and keys -------------------------------------------------------------

    def create_project(self, name: str) -> Project:
        check_project_name(name)
        created = _now()
        try:
            with self._lock:
                cur = self._db.execute(
                    "INSERT INTO projects (name, created_at) VALUES (?, ?)", (name, created)
                )
        except sqlite3.IntegrityError:
            raise ValueError(f"project {name!r} already exists") from None
        assert cur.lastrowid is not None
        return Project(cur.lastrowid, name, created)

    def list_projects(self) -> list[Project]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created_at FROM projects ORDER BY id"
            ).fetchall()
        return [Project(*row) for row in rows]

    def project(self, name: str) -> Project | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, created_at FROM projects WHERE name = ?", (name,)
            ).fetchone()
        return Project(*row) if row else None

    def create_key(self, project: str, scopes: tuple[str, ...], label: str) -> tuple[KeyInfo, str]:
        found = self.project(project)
        if found is None:
            raise ValueError(f"no project {project!r}; create it with `projects create`")
        key = generate_key()
        created = _now()
        stored_scopes = scopes_text(scopes)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO server_keys (project_id, scopes, label, key_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (found.id, stored_scopes, label, hash_key(key), created),
            )
        assert cur.lastrowid is not None
        info = KeyInfo(cur.lastrowid, label, created, None, found.id, found.name,
                       parse_scopes(stored_scopes))
        return info, key

    def list_keys(self, project: str | None = None) -> list[KeyInfo]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_KEY_COLUMNS} WHERE ? IS NULL OR p.name = ? ORDER BY k.id",
                (project, project),
            ).fetchall()
        return [_key(row) for row in rows]

    def revoke_key(self, key_id: int) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE server_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )
        return cur.rowcount == 1

    def key_for(self, key: str) -> KeyInfo | None:
        with self._lock:
            row = self._db.execute(_KEY_LOOKUP, (hash_key(key),)).fetchone()
        return _key(row) if row else None

    def key_for_nowait(self, key: str) -> KeyInfo | None | WouldWait:
        """:meth:`key_for` on the event loop's thread: :data:`WOULD_WAIT` when this store's
        lock is taken or SQLite would wait (a WAL reader waits for nothing but rare
        recovery; the busy timeout is 0 for this read all the same)."""
        digest = hash_key(key)
        if not self._lock.acquire(blocking=False):
            return WOULD_WAIT
        try:
            try:
                row = self._nowait_db.execute(_KEY_LOOKUP, (digest,)).fetchone()
            except sqlite3.Error:  # key_for, in a worker thread, waits or reports it
                return WOULD_WAIT
        finally:
            self._lock.release()
        return _key(row) if row else None

    def close(self) -> None:
        self._index.close()
        with self._read_lock:
            self._reader.close()
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._nowait_db.close()
            self._db.close()
