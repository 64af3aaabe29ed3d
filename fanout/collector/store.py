"""The storage interface the collector app needs, and nothing more.

Two stores implement it: :class:`~fanout.collector.sqlite.SQLiteStore` (one file, the
embedded default) and :class:`~fanout.collector.postgres.PostgresStore` (several collector
processes on one database server). The app, the CLI and the demo only see ``Store``.
Every method is called from worker threads, never from the event loop, and a store must be
safe to call from several of them; the two ``*_nowait`` calls are the exception: the app
calls them on the event loop's thread, so they return at once, answering or declining.

Everything about events is per project: an event id is unique within its project (the
dedupe key is ``(project, event_id)``), identity links and timelines never cross projects.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Sequence
from typing import Any, Final, NamedTuple, Protocol

from .ingest import Link, Row
from .keys import KeyInfo, Project
from .ratelimit import Limiter
from .timeline import DEFAULT_PAGE_BYTES, Cursor, Page

__all__ = ["WOULD_WAIT", "InsertResult", "Store", "StoreError", "WouldWait", "read_timeline"]


class StoreError(Exception):
    """The store cannot be opened or written; the message is safe to show (no secrets)."""


class InsertResult(NamedTuple):
    accepted: int
    duplicates: int


class WouldWait(enum.Enum):
    """What :meth:`Store.key_for_nowait` answers when it could only answer by waiting
    (``None`` there already means "no such key")."""

    WOULD_WAIT = "would wait"


WOULD_WAIT: Final = WouldWait.WOULD_WAIT


class Store(Protocol):
    def insert(
        self, project_id: int, rows: Sequence[Row], links: Sequence[Link], *, key_id: int = 0
    ) -> InsertResult:
        """Store ``rows`` (ignoring event ids the project already has) and ``links`` in one
        transaction; return only once it is committed."""
        ...

    def timeline(
        self, project_id: int, person_id: str, *, limit: int, max_bytes: int,
        after: Cursor | None = None,
    ) -> Page:
        """One page of the person's events plus those of the anonymous ids linked to them,
        in event time then arrival order, starting after ``after``."""
        ...

    def linked_ids(self, project_id: int, person_id: str) -> list[str]:
        """The anonymous ids linked to ``person_id`` in the project."""
        ...

    def count_events(self, project_id: int | None = None) -> int: ...

    def event_ids(self, project_id: int | None = None) -> list[str]:
        """Stored event ids in arrival order (tests and tools)."""
        ...

    def healthy(self) -> bool:
        """Whether the store can commit a write now."""
        ...

    def limiter(self, rate: float | None, burst: float | None = None) -> Limiter:
        """The per-key rate limiter for this store's collectors: in memory for SQLite (one
        process), in the database for PostgreSQL (shared by every process on it)."""
        ...

    def create_project(self, name: str) -> Project:
        """A new project; ``ValueError`` if the name is taken or not a valid name."""
        ...

    def list_projects(self) -> list[Project]: ...

    def project(self, name: str) -> Project | None: ...

    def create_key(self, project: str, scopes: tuple[str, ...], label: str) -> tuple[KeyInfo, str]:
        """A new key of ``project``: its listing and the key itself (shown once, never
        stored). ``ValueError`` for an unknown project."""
        ...

    def list_keys(self, project: str | None = None) -> list[KeyInfo]: ...

    def revoke_key(self, key_id: int) -> bool:
        """Revoke; ``False`` if there is no such active key."""
        ...

    def key_for(self, key: str) -> KeyInfo | None:
        """The active key matching ``key`` (by hash), or ``None``."""
        ...

    def key_for_nowait(self, key: str) -> KeyInfo | None | WouldWait:
        """:meth:`key_for` if it can be answered without waiting for anything (a lock, a
        busy database, the network), else :data:`WOULD_WAIT` at once. Called on the event
        loop's thread. A store that cannot (PostgreSQL: a lookup is a round trip) always
        answers :data:`WOULD_WAIT`, and the app then hands the request to a worker thread
        before decoding anything."""
        ...

    def insert_nowait(
        self, project_id: int, rows: Sequence[Row], links: Sequence[Link], *, key_id: int = 0
    ) -> InsertResult | None:
        """:meth:`insert`, committed, if that needs no waiting at all; else ``None`` at once,
        with nothing written (the caller then calls :meth:`insert` in a worker thread).
        Called on the event loop's thread; a store that cannot always returns ``None``."""
        ...

    def close(self) -> None: ...


def read_timeline(
    store: Store, project_id: int, person_id: str, *, page_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every event of a person's timeline, page by page (the CLI and the demo)."""
    after = None
    while True:
        page = store.timeline(project_id, person_id, limit=page_size,
                              max_bytes=DEFAULT_PAGE_BYTES, after=after)
        for body in page.events:
            yield json.loads(body)
        if page.next_cursor is None:
            return
        after = page.next_cursor
