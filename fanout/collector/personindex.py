"""The SQLite store's person index: a file of its own, filled by a thread of its own.

A timeline is read through ``person_events``, an index of ``(project, person, timestamp,
seq)`` filled in bulk, not per batch (an index updated per batch rewrote about one index
page per event stored, see :mod:`.sqlite`): every event after the mark ``indexed_upto`` is
indexed in one sorted ``INSERT ... SELECT`` that writes each person's page once for
thousands of events, and the mark moves. That pass costs about 2-2.5 µs per event. Run by
the commit of a request, as it once was, it held SQLite's one write lock and delayed every
request behind it; run in another thread on the same file it would still hold that lock.
So the index lives in a database file of its own, ``<events file>-index`` (WAL, its own
write lock), written by one background thread per store with its own connection: SQLite
releases the GIL while it steps, so the pass runs on another core beside the requests, and
a request's only part in it is a wake-up every :data:`~.sqlite.INDEX_EVERY` events.

The index is derived data. Its file holds the events' index and the mark, plus the
``(project, event id)`` of the event at the mark; when the store opens and the file is
missing, or that event is not the events file's (a restored backup of the events file, an
index file from another database), it is rebuilt from ``events``, in passes of at most
:data:`PASS_MAX` events, in the background. A backup of the events file alone is enough.

Correctness does not depend on how far the index is: a timeline read takes the indexed
events from ``person_events`` and every event after the mark from ``events``, in one read
transaction. A read transaction's snapshot of each file starts when it first reads that
file, so the two snapshots may be of different moments; either way the page is exact for
the events file's snapshot: an event is indexed only after it was committed to ``events``
and sequence numbers grow in commit order, so index entries beyond the events snapshot
join no event, and the events after the mark are read from that snapshot.

Several processes on one file (``--workers``) each run passes: a pass holds the index's
write lock from reading the mark to moving it, inserts with ``INSERT OR IGNORE``, and the
mark only moves forward.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Final

__all__ = ["INDEX_SUFFIX", "INDEX_VERSION", "PASS_MAX", "PersonIndex", "index_path"]

logger = logging.getLogger("fanout.collector")

#: The index file is the events file's name plus this (``events.db-index``), beside SQLite's
#: own ``-wal`` and ``-shm`` files.
INDEX_SUFFIX: Final = "-index"
#: The most events one pass indexes in one transaction: a rebuild of a large database goes
#: in steps, each moving the mark, so reads scan fewer unindexed rows as it goes and
#: ``close()`` never waits for a whole rebuild.
PASS_MAX: Final = 1 << 17
#: A thread with nothing to do for this long ends (a new one starts at the next wake-up),
#: so a store that is never closed does not keep its process from exiting.
_IDLE_SECONDS: Final = 1.0
#: Pages of WAL between checkpoints of the index file (see ``_WAL_AUTOCHECKPOINT`` in
#: :mod:`.sqlite`): a pass rewrites most index pages, a checkpoint copies each page once.
_WAL_AUTOCHECKPOINT: Final = 10_000

#: ``PRAGMA user_version`` of an index file this module made. A file of another version (a
#: later fanout's layout, say, after a downgrade) is emptied and made anew in one
#: transaction when it is opened, then rebuilt from the events like a lost one: derived
#: data, so nothing is migrated. Files made before the index had a version read 0 and have
#: this version's layout; they are kept.
INDEX_VERSION: Final = 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS person_events (
    project_id   INTEGER NOT NULL,
    person_id    TEXT NOT NULL,
    timestamp    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (project_id, person_id, timestamp, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexed_upto (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          INTEGER NOT NULL,
    project_id   INTEGER,
    event_id     TEXT
);
INSERT OR IGNORE INTO indexed_upto (id, seq) VALUES (1, 0);
"""
_PASS: Final = (
    "INSERT OR IGNORE INTO person_events (project_id, person_id, timestamp, seq)"
    " SELECT project_id, person_id, timestamp, seq FROM ev.events"
    " WHERE seq > ? AND seq <= ? AND person_id IS NOT NULL"
    " ORDER BY project_id, person_id, timestamp, seq"
)
# The event the mark stands on: the newest one at or below the pass's end.
_MARK_EVENT: Final = (
    "SELECT seq, project_id, event_id FROM ev.events WHERE seq <= ? ORDER BY seq DESC LIMIT 1"
)


#: SQLite's primary result codes for a damaged file (SQLITE_CORRUPT) and for one that is
#: not a database (SQLITE_NOTADB), and their messages (Python 3.10 gives no code).
_DAMAGED_CODES: Final = frozenset({11, 26})
_DAMAGED_TEXT: Final = ("database disk image is malformed", "file is not a database")


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _DAMAGED_CODES  # an extended code's primary one
    return str(exc).startswith(_DAMAGED_TEXT)


def index_path(events: Path) -> Path:
    """Where the index of the events file ``events`` lives."""
    return events.with_name(events.name + INDEX_SUFFIX)


class PersonIndex:
    """The index file of one events file: its connection, its passes and its thread."""

    def __init__(self, events: Path) -> None:
        self.path = index_path(events)
        self._lock = threading.Lock()  # the connection, one pass at a time
        self._state = threading.Lock()  # the thread, the wake-up, closing
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # closed: no new pass starts
        try:
            self._open(events)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            # Derived data: a damaged index file is rebuilt, not a store that cannot open.
            logger.warning("the person index %s is damaged (%s); rebuilding it", self.path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._open(events)

    def _open(self, events: Path) -> None:
        # The events file read-only: BEGIN IMMEDIATE takes the write lock of every
        # attached database that is not, and the inserts must not wait for a pass.
        self._db = sqlite3.connect(
            self.path.resolve().as_uri(), uri=True, check_same_thread=False,
            isolation_level=None, timeout=10.0,
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT}")
            # Up to 32 MB of index pages kept between passes (the default is 2 MB): a pass
            # rewrites a page of every person's; 5-12 % less CPU per pass of 8,200 events
            # at 500,000 indexed, in two alternating pairs.
            self._db.execute("PRAGMA cache_size=-32768")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (version,) = self._db.execute("PRAGMA user_version").fetchone()
                if version not in (0, INDEX_VERSION):
                    logger.warning("the person index %s has version %d, not %d; rebuilding it",
                                   self.path, version, INDEX_VERSION)
                    self._db.execute("DROP TABLE IF EXISTS person_events")
                    self._db.execute("DROP TABLE IF EXISTS indexed_upto")
                for statement in SCHEMA.split(";"):  # (executescript would commit first)
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {INDEX_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("ATTACH ? AS ev", (events.resolve().as_uri() + "?mode=ro",))
            self._check()
        except BaseException:
            self._db.close()
            raise

    def _check(self) -> None:
        """Empty the index if the event at its mark is not this events file's (a mark
        that names no event, see :meth:`_pass`, is kept); note whether events wait to be
        indexed (:attr:`behind`)."""
        with self._lock, self._transaction() as db:
            seq, project_id, event_id = db.execute(
                "SELECT seq, project_id, event_id FROM indexed_upto WHERE id = 1").fetchone()
            (top,) = db.execute("SELECT coalesce(max(seq), 0) FROM ev.events").fetchone()
            if seq != 0 and project_id is not None and db.execute(
                "SELECT project_id, event_id FROM ev.events WHERE seq = ?", (seq,)
            ).fetchone() != (project_id, event_id):
                logger.warning("the person index %s is not of this events file; rebuilding it",
                               self.path)
                db.execute("DELETE FROM person_events")
                db.execute("UPDATE indexed_upto SET seq = 0, project_id = NULL,"
                           " event_id = NULL WHERE id = 1")
                seq = 0
            #: Whether events were waiting to be indexed when the index was opened.
            self.behind: bool = top > seq

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def catch_up(self) -> int:
        """Index every event stored so far (in passes, in the caller's thread); the mark."""
        while True:
            with self._lock:
                if self._stop.is_set():
                    raise sqlite3.ProgrammingError("the person index is closed")
                mark, more = self._pass()
            if not more:
                return mark

    def _pass(self) -> tuple[int, bool]:
        """Index up to :data:`PASS_MAX` events after the mark; (mark, whether more wait)."""
        with self._transaction() as db:
            (mark,) = db.execute("SELECT seq FROM indexed_upto WHERE id = 1").fetchone()
            (top,) = db.execute("SELECT coalesce(max(seq), 0) FROM ev.events").fetchone()
            if top <= mark:
                return mark, False
            end = min(top, mark + PASS_MAX)
            db.execute(_PASS, (mark, end))
            found = db.execute(_MARK_EVENT, (end,)).fetchone()
            if found is None or found[0] <= mark:
                # Every event after the mark up to ``end`` was deleted by hand (the mark
                # would stand still, and catch_up() would loop): the mark moves to
                # ``end`` and names no event, which :meth:`_check` cannot verify.
                found = (end, None, None)
            seq, project_id, event_id = found
            db.execute("UPDATE indexed_upto SET seq = ?, project_id = ?, event_id = ?"
                       " WHERE id = 1", (seq, project_id, event_id))
            return seq, end < top

    def wake(self) -> None:
        """Have the thread index what was stored (started if none runs); returns at once."""
        with self._state:
            if self._stop.is_set():
                return
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"fanout-person-index {self.path.name}")
                self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                if not self._wake.wait(_IDLE_SECONDS):
                    with self._state:
                        if not self._wake.is_set():
                            self._thread = None  # under the lock: wake() starts another
                            return
                self._wake.clear()
                try:
                    while not self._stop.is_set():
                        with self._lock:
                            if self._stop.is_set():
                                return
                            _, more = self._pass()
                        if not more:
                            break
                except sqlite3.Error as exc:
                    # Another process's pass held the index past the busy timeout, the
                    # disk is full, or close() interrupted the pass: the events are safe,
                    # the next wake-up (or opening the store) indexes them.
                    if not self._stop.is_set():
                        logger.warning("the person index pass failed: %s", exc)
                if self._stop.is_set():
                    return
        finally:  # ended by an error: the next wake-up starts another
            with self._state:
                if self._thread is threading.current_thread():
                    self._thread = None

    def close(self) -> None:
        """Stop the thread (interrupting a pass under way) and close the connection."""
        with self._state:
            self._stop.set()
            thread = self._thread
            self._wake.set()
        if thread is not None:
            self._db.interrupt()
            thread.join()
        with self._lock:
            self._db.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` on the index (a read snapshot of the events) ... ``COMMIT``, or
    ``ROLLBACK`` on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")
