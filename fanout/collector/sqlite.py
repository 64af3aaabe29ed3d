"""The default store: one SQLite file in WAL mode, one writer, batch inserts.

Throughput comes from doing little per event: one transaction per batch, ``executemany``
with ``INSERT OR IGNORE`` (the primary key on ``event_id`` is the dedupe, so a redelivered
webhook costs one index probe), WAL with ``synchronous=NORMAL`` (a commit is durable
against a process crash, which is what a 200 promises; an OS crash may lose the last
commits, the usual trade of WAL/NORMAL). Every connection is used under one lock, so the
store is safe from any thread and there is never more than one writer.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from .ingest import Link, Row
from .keys import KeyInfo, generate_key, hash_key
from .store import InsertResult

__all__ = ["SQLiteStore"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    timestamp    TEXT NOT NULL,
    person_id    TEXT,
    anonymous_id TEXT,
    name         TEXT,
    key_id       INTEGER NOT NULL,
    received_at  TEXT NOT NULL,
    body         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_person ON events (person_id) WHERE person_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_anonymous ON events (anonymous_id)
    WHERE anonymous_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS identity_links (
    anonymous_id TEXT NOT NULL,
    person_id    TEXT NOT NULL,
    linked_at    TEXT NOT NULL,
    PRIMARY KEY (anonymous_id, person_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identity_links_person ON identity_links (person_id);
CREATE TABLE IF NOT EXISTS server_keys (
    id          INTEGER PRIMARY KEY,
    label       TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
"""

_INSERT: Final = (
    "INSERT OR IGNORE INTO events (event_id, kind, timestamp, person_id, anonymous_id, name,"
    " body, key_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LINK: Final = (
    "INSERT OR IGNORE INTO identity_links (anonymous_id, person_id, linked_at) VALUES (?, ?, ?)"
)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class SQLiteStore:
    """Events, identity links and server keys in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    # -- events ------------------------------------------------------------------------

    def insert(self, rows: Sequence[Row], links: Sequence[Link], *, key_id: int) -> InsertResult:
        now = _now()
        params = [(*r, key_id, now) for r in rows]
        with self._lock:
            db = self._db
            before = db.total_changes
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_INSERT, params)
                accepted = db.total_changes - before
                if links:
                    db.executemany(_LINK, links)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return InsertResult(accepted, len(rows) - accepted)

    def person_events(self, person_id: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        query = """
            SELECT body FROM events
            WHERE person_id = :p
               OR (anonymous_id IN (SELECT anonymous_id FROM identity_links WHERE person_id = :p)
                   AND (person_id IS NULL OR person_id = :p))
            ORDER BY timestamp, seq
            LIMIT :limit
        """
        with self._lock:
            bodies = self._db.execute(query, {"p": person_id, "limit": limit}).fetchall()
        return [json.loads(b) for (b,) in bodies]

    def linked_ids(self, person_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT anonymous_id FROM identity_links WHERE person_id = ? ORDER BY linked_at",
                (person_id,),
            ).fetchall()
        return [a for (a,) in rows]

    def count_events(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM events").fetchone()
        return int(n)

    def event_ids(self) -> list[str]:
        """Every stored event id, in arrival order (tests and tools)."""
        with self._lock:
            return [e for (e,) in self._db.execute("SELECT event_id FROM events ORDER BY seq")]

    def healthy(self) -> bool:
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM server_keys LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return True

    # -- keys --------------------------------------------------------------------------

    def create_key(self, label: str) -> tuple[KeyInfo, str]:
        key = generate_key()
        created = _now()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO server_keys (label, key_hash, created_at) VALUES (?, ?, ?)",
                (label, hash_key(key), created),
            )
            key_id = cur.lastrowid
        assert key_id is not None
        return KeyInfo(key_id, label, created), key

    def list_keys(self) -> list[KeyInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, label, created_at, revoked_at FROM server_keys ORDER BY id"
            ).fetchall()
        return [KeyInfo(*row) for row in rows]

    def revoke_key(self, key_id: int) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE server_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )
        return cur.rowcount == 1

    def key_for(self, key: str) -> KeyInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, label, created_at, revoked_at FROM server_keys"
                " WHERE key_hash = ? AND revoked_at IS NULL",
                (hash_key(key),),
            ).fetchone()
        return KeyInfo(*row) if row else None

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._db.close()
