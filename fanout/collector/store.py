"""The storage interface the collector app needs, and nothing more.

:class:`~fanout.collector.sqlite.SQLiteStore` is the default. A PostgreSQL store (a later
issue) implements the same protocol; the app, the CLI and the demo only see ``Store``.
Every method is called from worker threads, never from the event loop, and a store must
be safe to call from several of them (the SQLite store serialises its one writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from .ingest import Link, Row
from .keys import KeyInfo

__all__ = ["InsertResult", "Store"]


class InsertResult(NamedTuple):
    accepted: int
    duplicates: int


class Store(Protocol):
    def insert(self, rows: Sequence[Row], links: Sequence[Link], *, key_id: int) -> InsertResult:
        """Store ``rows`` (ignoring event ids already stored) and ``links`` in one
        transaction; return only once it is committed."""
        ...

    def person_events(self, person_id: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The person's events plus those of the anonymous ids linked to them, oldest first."""
        ...

    def linked_ids(self, person_id: str) -> list[str]:
        """The anonymous ids linked to ``person_id``."""
        ...

    def count_events(self) -> int: ...

    def healthy(self) -> bool:
        """Whether the store answers a trivial query now."""
        ...

    def create_key(self, label: str) -> tuple[KeyInfo, str]:
        """A new key: its listing and the key itself (shown once, never stored)."""
        ...

    def list_keys(self) -> list[KeyInfo]: ...

    def revoke_key(self, key_id: int) -> bool:
        """Revoke; ``False`` if there is no such active key."""
        ...

    def key_for(self, key: str) -> KeyInfo | None:
        """The active key matching ``key`` (by hash), or ``None``."""
        ...

    def close(self) -> None: ...
