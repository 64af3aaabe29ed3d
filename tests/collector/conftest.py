"""A real reference collector on 127.0.0.1 for each test, and clients that talk to it.

The server runs in a thread of the test process (uvicorn, Starlette); ``stop()`` shuts it
down gracefully and joins, so no test leaves a server behind. Tests that need a separate
process (restart, SIGTERM, the demo) start ``fanout`` through :data:`FANOUT_CMD` and stop
it themselves.

**One suite, both stores.** ``store_kind`` is parametrised over ``sqlite`` (a temporary
file) and ``postgresql`` (a fresh database in the session's throwaway cluster, see
:mod:`postgres_cluster`), and ``make_store`` builds a store of that kind; every test that
uses ``collector``, ``start_collector`` or ``make_store`` runs against both. A test about
one store only parametrises ``store_kind`` itself. The PostgreSQL half is skipped, with the
reason, where the server binaries or psycopg are missing.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fanout import Client, DeliveryFailure
from fanout.collector.app import AppOptions
from fanout.collector.guard import ServingLimits
from fanout.collector.keys import INGEST, READ
from fanout.collector.protocol import Limits
from fanout.collector.server import ServerThread
from fanout.collector.sqlite import SQLiteStore
from fanout.collector.store import Store

from .postgres_cluster import Cluster, missing_reason

FANOUT_CMD = [sys.executable, "-c", "from fanout.cli import main; main()"]


@dataclasses.dataclass
class Collector:
    url: str
    key: str  # an ingest key of project "tests"
    read_key: str  # a read key of the same project
    project_id: int
    store: Store
    server: ServerThread

    def post(self, body: bytes | Any, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}", **kwargs.pop("headers", {})}
        content = body if isinstance(body, bytes) else None
        return httpx.post(
            f"{self.url}/v1/batch",
            content=content,
            json=None if content is not None else body,
            headers=headers,
            timeout=10,
            **kwargs,
        )

    def timeline(self, person_id: str, *, key: str | None = None,
                 **params: Any) -> dict[str, Any]:
        r = httpx.get(
            f"{self.url}/v1/persons/{person_id}/events",
            headers={"Authorization": f"Bearer {key or self.read_key}"},
            params=params,
            timeout=10,
        )
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


StartCollector = Callable[..., Collector]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the session, stopped and removed after."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with Cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@dataclasses.dataclass
class StoreFactory:
    """New, empty stores of one kind; ``new_db()`` is what ``--db`` takes for another."""

    kind: str
    new_db: Callable[[], str]
    opened: list[Store] = dataclasses.field(default_factory=list)

    def __call__(self, db: str | None = None) -> Store:
        db = db or self.new_db()
        store: Store
        if self.kind == "sqlite":
            store = SQLiteStore(db)
        else:
            from fanout.collector.postgres import PostgresStore

            store = PostgresStore(db)
        self.opened.append(store)
        return store


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path,
               request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    if store_kind == "sqlite":
        count = iter(range(1_000_000))
        factory = StoreFactory("sqlite", lambda: str(tmp_path / f"collector{next(count)}.db"))
    else:
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        factory = StoreFactory("postgresql", cluster.create_database)
    yield factory
    for store in factory.opened:
        store.close()


@pytest.fixture
def start_collector(make_store: StoreFactory) -> Iterator[StartCollector]:
    """Start collectors with chosen rate limits / server limits; all stopped at teardown."""
    servers: list[ServerThread] = []

    def start(
        *, rate_limit: float | None = None, burst: float | None = None,
        limits: Limits | None = None, db: Path | None = None,
        options: AppOptions | None = None, serving: ServingLimits | None = None,
    ) -> Collector:
        store = SQLiteStore(db) if db is not None else make_store()
        project = store.project("tests") or store.create_project("tests")
        _, key = store.create_key("tests", (INGEST,), "tests-ingest")
        _, read_key = store.create_key("tests", (READ,), "tests-read")
        if options is None:
            options = AppOptions(limits=limits or Limits())
        server = ServerThread(store, limiter=store.limiter(rate_limit, burst), options=options,
                              serving=serving)
        servers.append(server)
        server.start()
        return Collector(server.url, key, read_key, project.id, store, server)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def collector(start_collector: StartCollector) -> Collector:
    return start_collector()


@dataclasses.dataclass
class Failures:
    items: list[DeliveryFailure] = dataclasses.field(default_factory=list)

    def __call__(self, failure: DeliveryFailure) -> None:
        self.items.append(failure)

    @property
    def events(self) -> list[Any]:
        return [e for f in self.items for e in f.events]


def collector_client(
    url: str, key: str, *, on_error: Any = None, delivery: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Client:
    """A client with only the collector provider, quick to flush and to retry.
    Callers shut it down (``with`` or the ``clients`` fixture)."""
    options = {"retry_base": 0.02, "retry_cap": 0.3, **(delivery or {})}
    kwargs.setdefault("flush_interval", 0.05)
    return Client(
        providers=["collector"],
        settings={"collector": {"url": url, "key": key}},
        delivery={"collector": options},
        on_error=on_error,
        load_entry_points=False,
        environ={},
        register_atexit=False,
        **kwargs,
    )


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """``clients(url, key, ...)`` builds collector clients, all shut down at teardown."""
    made: list[Client] = []

    def make(url: str, key: str, **kwargs: Any) -> Client:
        client = collector_client(url, key, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout=5)


def spawn_serve(db: Path | str, port: int = 0, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``fanout collector serve`` in a subprocess; returns it and the URL it printed."""
    proc = subprocess.Popen(
        [*FANOUT_CMD, "collector", "serve", "--port", str(port), "--db", str(db), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on http://127.0.0.1:"):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"serve did not start: {line!r} {err}")
    return proc, line.removeprefix("listening on ")
