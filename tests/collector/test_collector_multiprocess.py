"""Several collector processes on one database: every event id stored exactly once.

Two ``fanout collector serve`` processes (as behind a load balancer) and one ``serve
--workers 2`` receive the same event ids at the same time from concurrent clients, the way
redeliveries and retries spread over servers do. The database's dedupe key is the only
thing that can keep them apart, so the counts must come out exact: every response's
``accepted`` summed is the number of distinct ids, ``duplicates`` summed is the rest, and
the store holds each id once. Runs against both stores (SQLite's file is shared by
processes too, one writer at a time).
"""

from __future__ import annotations

import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from fanout.collector.keys import INGEST, READ

from .conftest import collector_client, spawn_serve

UNIQUE = 3000
BATCH = 100


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def _batches(ids: list[str]) -> list[dict]:
    return [{"batch": [{"event_id": i, "name": "order.paid", "person_id": f"p{int(i[4:]) % 7}",
                        "timestamp": "2024-05-01T10:00:00.000Z"} for i in ids[s:s + BATCH]]}
            for s in range(0, len(ids), BATCH)]


def _keys(store) -> tuple[str, str]:
    store.project("tests") or store.create_project("tests")
    _, key = store.create_key("tests", (INGEST,), "in")
    _, read_key = store.create_key("tests", (READ,), "read")
    return key, read_key


def test_two_server_processes_on_one_database_store_each_id_exactly_once(make_store):
    db = make_store.new_db()
    store = make_store(db)
    key, read_key = _keys(store)
    servers = [spawn_serve(db), spawn_serve(db)]
    ids = [f"evt_{n}" for n in range(UNIQUE)]
    # Four senders, two per server; each sends every id (so each id arrives 4 times, at
    # both servers, in overlapping order: two senders walk the ids backwards).
    plans = [(servers[0][1], ids), (servers[1][1], ids),
             (servers[0][1], ids[::-1]), (servers[1][1], ids[::-1])]
    try:
        def send(plan: tuple[str, list[str]]) -> tuple[int, int, int]:
            url, order = plan
            accepted = duplicates = rejected = 0
            with httpx.Client(base_url=url, timeout=30,
                              headers={"Authorization": f"Bearer {key}"}) as http:
                for body in _batches(order):
                    r = http.post("/v1/batch", json=body)
                    assert r.status_code == 200, r.text
                    result = r.json()
                    accepted += result["accepted"]
                    duplicates += result["duplicates"]
                    rejected += len(result["rejected"])
            return accepted, duplicates, rejected

        with ThreadPoolExecutor(len(plans)) as pool:
            results = list(pool.map(send, plans))
        page = httpx.get(f"{servers[1][1]}/v1/persons/p3/events", params={"limit": 10_000},
                         headers={"Authorization": f"Bearer {read_key}"}, timeout=30).json()
    finally:
        stops = [_stop(proc) for proc, _ in servers]
    sent = len(plans) * UNIQUE
    assert sum(a for a, _, _ in results) == UNIQUE
    assert sum(d for _, d, _ in results) == sent - UNIQUE
    assert sum(r for _, _, r in results) == 0
    stored = store.event_ids()
    assert len(stored) == UNIQUE and sorted(stored) == sorted(ids)
    assert store.count_events() == UNIQUE
    assert len(page["events"]) == len([i for i in ids if int(i[4:]) % 7 == 3])
    assert [code for code, _ in stops] == [0, 0], stops
    assert not any("Traceback" in err for _, err in stops), stops


def test_serve_workers_2_stores_each_id_once_and_stops_every_worker(make_store):
    db = make_store.new_db()
    store = make_store(db)
    key, _ = _keys(store)
    proc, url = spawn_serve(db, 0, "--workers", "2")
    ids = [f"evt_{n}" for n in range(UNIQUE)]
    failures: list[object] = []
    try:
        # Two fanout clients with the caller's own event ids (a webhook's id, say), both
        # sending every id: each one is a redelivery of the other's.
        clients = [collector_client(url, key, batch_size=BATCH, on_error=failures.append)
                   for _ in range(2)]

        def produce(client, order: list[str]) -> None:
            for event_id in order:
                client.track("order.paid", person_id="p", event_id=event_id)

        threads = [threading.Thread(target=produce, args=(c, o))
                   for c, o in zip(clients, (ids, ids[::-1]), strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        reports = [c.shutdown(timeout=60) for c in clients]
        workers = _children(proc.pid)
    finally:
        code, err = _stop(proc)
    assert failures == []
    assert all(r.ok for r in reports), reports
    assert sum(r["collector"].delivered for r in reports) == 2 * UNIQUE
    stored = store.event_ids()
    assert len(stored) == UNIQUE and sorted(stored) == sorted(ids)
    assert len(workers) == 2, workers  # two worker processes under the parent
    assert code == 0, err
    assert "Traceback" not in err
    assert all(not _alive(pid) for pid in workers)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
