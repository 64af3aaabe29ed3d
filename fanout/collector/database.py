"""Opening the store that ``--db`` names: the one place that knows every store class.

Kept apart from :mod:`fanout.collector.store` (the interface), which the stores import:
the interface importing a store back was an import cycle.
"""

from __future__ import annotations

from .store import Store

__all__ = ["open_store", "is_postgres_url"]


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def open_store(db: str) -> Store:
    """The store for ``--db``: a ``postgresql://`` URL or a SQLite file path.

    Raises :class:`StoreError` with a message fit for the command line when the database
    cannot be opened, created or migrated.
    """
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(db)
    from .sqlite import SQLiteStore

    return SQLiteStore(db)
