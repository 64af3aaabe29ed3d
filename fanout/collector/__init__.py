"""The reference collector: fanout's native protocol over HTTP, stored in SQLite or PostgreSQL.

``fanout collector serve`` runs it; ``fanout demo`` and the tests embed it. Importing this
package is cheap and needs only the standard library: the HTTP parts (Starlette, uvicorn)
are imported by :mod:`fanout.collector.app` and :mod:`fanout.collector.server`, which say
``pip install 'fanout-analytics[collector]'`` when the extra is missing.

Modules, one noun each: :mod:`.protocol` (the limits both sides share), :mod:`.ingest`
(decoding and validating a request body), :mod:`.store` (the storage interface),
:mod:`.sqlite` and :mod:`.postgres` (the stores), :mod:`.keys` (projects and scoped keys),
:mod:`.timeline` (pages and cursors), :mod:`.ratelimit`, :mod:`.refusals` (bounded logging
of refused requests), :mod:`.budget` (memory for request bodies), :mod:`.app` (the ASGI
app), :mod:`.guard` (connection cap and deadlines) and :mod:`.server` (running it all
under uvicorn).
"""

from __future__ import annotations

from .protocol import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, PROTOCOL_VERSION

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_EVENTS", "MAX_EVENT_BYTES", "PROTOCOL_VERSION",
           "require_extra"]


def require_extra() -> None:
    """Raise a clear ``ImportError`` when the ``collector`` extra is not installed."""
    missing = []
    for module in ("starlette", "uvicorn", "httptools"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"the fanout collector server needs {' and '.join(missing)}: "
            "pip install 'fanout-analytics[collector]'"
        )
