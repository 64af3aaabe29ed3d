"""The SQLite store's insert as one serial connection sees it: batches of 100 events over
1,000 people inserted one after another (each waits for the previous one's commit, as one
keep-alive connection's requests do), with the person index's bulk pass wherever the tree
runs it (in the commit every 8,192 events before, in a thread of its own since).

Per event: the wall time of ``insert`` (what a serial connection waits), the CPU of the
calling thread (the request's worker thread), and the CPU of the whole process (a
background thread's included). Per batch: p50, p99 and the largest wall time. With
``--baseline PYTHON`` the same loop runs under another tree's fanout (e.g. main's
``.venv/bin/python``), alternating round by round, and the ratios are printed::

    python benchmarks/sqlite_insert_path.py [--events 100000] [--rounds 5] [--baseline PYTHON]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_ROUND = r"""
import json, sys, tempfile, time
from pathlib import Path
from fanout.collector.ingest import validate_batch
from fanout.collector.sqlite import SQLiteStore

n, batch = int(sys.argv[1]), int(sys.argv[2])
props = {"plan": "pro", "amount": 42.5, "items": [1, 2, 3], "coupon": None}
batches = [validate_batch([
    {"event_id": f"e{b}_{i}", "name": "checkout.finished", "properties": props,
     "person_id": f"user_{(b * batch + i) % 1000}", "timestamp": "2024-01-01T00:00:00.000Z"}
    for i in range(batch)]).rows for b in range(n // batch)]
with tempfile.TemporaryDirectory() as tmp:
    store = SQLiteStore(Path(tmp) / "bench.db")
    project = store.create_project("bench")
    walls = []
    cpu0, proc0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    for rows in batches:
        t = time.perf_counter()
        store.insert(project.id, rows, [])
        walls.append(time.perf_counter() - t)
    cpu1, proc1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
    if store.count_events() != n:
        raise SystemExit(f"stored {store.count_events()} of {n}")
    store.close()
walls.sort()
print(json.dumps({
    "wall us/ev": (wall1 - wall0) / n * 1e6, "thread us/ev": (cpu1 - cpu0) / n * 1e6,
    "process us/ev": (proc1 - proc0) / n * 1e6, "p50 ms": walls[len(walls) // 2] * 1e3,
    "p99 ms": walls[int(len(walls) * 0.99)] * 1e3, "max ms": walls[-1] * 1e3}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="PYTHON")
    args = parser.parse_args()
    trees = ([("baseline", args.baseline)] if args.baseline else []) + [("this", sys.executable)]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, python in trees:
            # -P: not the working directory first on sys.path, or the baseline's
            # interpreter run from this checkout would import this checkout's fanout.
            out = subprocess.run([python, "-P", "-c", _ROUND, str(args.events), str(args.batch)],
                                 check=True, capture_output=True, text=True).stdout
            row = json.loads(out)
            results[name].append(row)
            print(f"round {r + 1} {name:<8} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()),
                  flush=True)
    keys = list(results["this"][0])
    print(f"\nmedians of {args.rounds} ({args.events:,} events in batches of {args.batch}):")
    print(f"{'':<10}" + "".join(f"{k:>15}" for k in keys))
    medians = {name: {k: statistics.median(row[k] for row in rows) for k in keys}
               for name, rows in results.items()}
    for name, row in medians.items():
        print(f"{name:<10}" + "".join(f"{row[k]:>15.2f}" for k in keys))
    if args.baseline:
        print(f"{'this/base':<10}" + "".join(
            f"{medians['this'][k] / medians['baseline'][k]:>15.2f}" for k in keys))


if __name__ == "__main__":
    main()
