"""The PostgreSQL store alone (no HTTP): CPU per event on both sides and WAL per event,
two trees side by side in one run.

    python benchmarks/postgres_store.py [--events 20000] [--rounds 3] [--threads 8]
        [--batch 100] [--baseline OTHER_CHECKOUT/.venv/bin/python] [--variant NAME=SQL]

Each round writes ``--events`` events of the HTTP benchmark's shape (``track`` calls,
five properties, 1,000 people, fresh ids) through ``PostgresStore.insert`` from
``--threads`` threads, batches of ``--batch`` with one ``key_for`` each, as the
collector's request handlers do; group commit groups what queues. The writer is a
process of its own, run by this interpreter's tree and by ``--baseline``'s in turn,
each round on a fresh database of one throwaway cluster (Debian's binaries,
``fsync=on``, ``synchronous_commit=on``). Figures per event: the writer process's CPU
(the store's part of a collector's, plus a thread hand-off per batch) and its minor
page faults (per 1,000 events), the database
processes' CPU (read from ``/proc``), the WAL written (``pg_current_wal_lsn()``), and
the rate. Medians over rounds; the load average at the end. Stored counts are checked.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _proc import tree_cpu  # noqa: E402

PROPERTIES = '{"plan":"pro","amount":2900,"currency":"USD","items":[{"sku":"A-1","qty":2}],' \
             '"coupon":null}'




def _rows(n: int, prefix: str) -> list[Any]:
    from fanout.collector.ingest import Row

    rows = []
    for i in range(n):
        ts = f"2026-03-01T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z"
        person = f"user_{i % 1000}"
        event_id = f"{prefix}{i}"
        body = (f'{{"v":1,"kind":"track","event_id":"{event_id}","timestamp":"{ts}",'
                f'"person_id":"{person}","anonymous_id":null,"name":"checkout.finished",'
                f'"properties":{PROPERTIES},"traits":{{}},"context":{{}},"group":null,'
                f'"previous_id":null}}').encode()
        rows.append(Row(event_id, "track", ts, person, None, "checkout.finished", body))
    return rows


def child(url: str, n: int, threads: int, batch: int, setup: str) -> None:
    """The writer: prints ``ready``, waits for a line, writes, prints its report.
    ``setup``: SQL run once the store made its schema (a variant's change)."""
    from fanout.collector.postgres import PostgresStore

    store = PostgresStore(url)
    if setup:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(setup)
    store.create_project("bench")
    _, key = store.create_key("bench", ("ingest",), "bench")
    rows = _rows(n, "l_")
    batches = [rows[i:i + batch] for i in range(0, n, batch)]
    shares = [batches[t::threads] for t in range(threads)]
    store.insert(1, _rows(1, "warm_"), [], key_id=1)  # partitions, connections, prepares
    accepted = [0] * threads

    def run(t: int) -> None:
        for b in shares[t]:
            info = store.key_for(key)
            assert info is not None
            accepted[t] += store.insert(info.project_id, b, [], key_id=info.id).accepted

    print("ready", flush=True)
    sys.stdin.readline()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu, start = time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"accepted": sum(accepted), "cpu": cpu, "wall": wall, "faults": faults}),
          flush=True)
    sys.stdin.readline()  # the backends' CPU is read while they live
    store.close()


def _lsn(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        assert row is not None
        return int(row[0])


def _count(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        assert row is not None
        return int(row[0])


def one_round(python: str, cluster: Any, n: int, threads: int, batch: int,
              setup: str = "") -> dict[str, float]:
    url = cluster.create_database()
    proc = subprocess.Popen([python, "-P", str(Path(__file__).resolve()), "--child", url,
                             str(n), str(threads), str(batch), setup],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the writer did not start")
    db_cpu, lsn = tree_cpu(cluster.pid), _lsn(url)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    report = json.loads(proc.stdout.readline())
    db_cpu, lsn = tree_cpu(cluster.pid) - db_cpu, _lsn(url) - lsn
    proc.communicate("done\n", timeout=60)
    stored = _count(url) - 1  # the warm-up's event
    if report["accepted"] != n or stored != n:
        raise RuntimeError(f"accepted {report['accepted']}, stored {stored} of {n}")
    return {"events/s": n / report["wall"], "writer µs/ev": report["cpu"] / n * 1e6,
            "db µs/ev": db_cpu / n * 1e6, "WAL B/ev": lsn / n,
            "writer faults/kev": report["faults"] / n * 1000}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--baseline", help="another tree's Python, alternating with this one")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SQL",
                        help="also this tree with SQL run after the schema is made (a "
                             "schema or setting to try), alternating with the others")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from collector.postgres_cluster import Cluster, missing_reason

    reason = missing_reason()
    if reason is not None:
        raise SystemExit(reason)
    trees = ([("baseline", args.baseline, "")] if args.baseline else []) + [
        ("this", sys.executable, "")] + [
        (name, sys.executable, sql) for name, sql in (v.split("=", 1) for v in args.variant)]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in trees}
    cluster = Cluster(fsync=True).start()
    try:
        one_round(sys.executable, cluster, 2_000, args.threads, args.batch)  # warm-up
        for r in range(args.rounds):
            for name, python, setup in trees:
                got = one_round(python, cluster, args.events, args.threads, args.batch, setup)
                results[name].append(got)
                print(f"round {r + 1} {name:<8} " + "  ".join(
                    f"{k} {v:,.1f}" for k, v in got.items()), file=sys.stderr, flush=True)
    finally:
        cluster.stop()
    print(f"\nPostgreSQL store: {args.events} events per round, {args.threads} threads, "
          f"batches of {args.batch}, {args.rounds} rounds, medians; load average "
          f"{os.getloadavg()[0]:.2f}")
    for name, runs in results.items():
        print(f"{name:<8} " + "  ".join(
            f"{k} {statistics.median(x[k] for x in runs):,.1f}" for k in runs[0]))


if __name__ == "__main__":
    main()
