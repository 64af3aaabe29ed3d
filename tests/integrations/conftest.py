"""Fixtures for the integration tests: the reference collector, and what it stored.

Every test counts what the collector stored (and how many copies of each event id were
sent, via the duplicates the collector ignored) and asserts exact numbers.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from collector.conftest import (  # noqa: F401 - fixtures used by these tests
    Collector,
    clients,
    collector,
    make_store,
    start_collector,
)


@pytest.fixture
def store_kind() -> str:
    """The integrations read what was stored straight from SQLite (see :func:`stored`); the
    collector's own suite runs against both stores."""
    return "sqlite"

ROOT = Path(__file__).resolve().parents[2]


def stored(target: Collector) -> list[dict[str, Any]]:
    """Every event body the collector stored, in arrival order."""
    with sqlite3.connect(target.store.path) as db:
        rows = db.execute("SELECT body FROM events ORDER BY seq").fetchall()
    return [json.loads(body) for (body,) in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def app_env(target: Collector, **extra: str) -> dict[str, str]:
    """The environment of an app process that sends to the ``target`` collector only."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "POSTHOG_"))
    }
    env.update(
        FANOUT_PROVIDERS="collector",
        FANOUT_COLLECTOR_URL=target.url,
        FANOUT_COLLECTOR_KEY=target.key,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "integrations" / "apps"), str(ROOT)]),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


PYTHON = sys.executable


@pytest.fixture
def default_client(collector: Collector) -> Any:  # noqa: F811 - the fixture imported above
    """fanout's default client, for the duration of a test: the collector's provider only."""
    from collector.conftest import collector_client

    import fanout

    client = collector_client(collector.url, collector.key)
    previous = fanout.set_default_client(client)
    yield client
    fanout.set_default_client(previous)
    client.shutdown(timeout=10)
