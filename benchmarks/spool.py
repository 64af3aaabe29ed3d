"""The durable spool and ``fanout import``, timed in one run on this machine.

    python benchmarks/spool.py [--events 100000] [--rounds 5]

1. **Caller cost**: µs per ``track()`` on the caller's thread, memory queue against the
   spool (group commit), same client otherwise (the collector provider to a local sink
   process), rounds alternating; target ≤ 1.5×. ``FANOUT_SPOOL_SYNC=1`` shown for scale.
2. **Sustained**: events/s from the first ``track()`` until ``shutdown()`` has delivered
   everything to the sink, with the spool on; target ≥ 50,000. Beside it, alternating, the
   same client with the memory queue: what ``track()``, validation and delivery cost this
   process anyway, so the ratio is the spool's own share.
3. **Recovery**: a subprocess spools N events to a backend that never answers and kills
   itself with SIGKILL; then the time for a new client to take the spool over (build)
   and to deliver all N to the sink.
4. **Import**: ``fanout import`` of N fanout-format lines into ``fanout collector serve``
   (a subprocess, SQLite), events/s of the whole command (interpreter start included);
   target ≥ 20,000. Beside it, in the same run and alternating, what the same collector
   ingests from a plain client tracking N events in this process (``collector.py``'s
   contender): the collector's own ceiling here, so the ratio is import's own overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from http.server import ThreadingHTTPServer  # noqa: E402

from _sink import Sink, _Handler  # noqa: E402
from collector import _stored, collector, fanout_round  # noqa: E402

import fanout  # noqa: E402


class _CollectorReply(_Handler):
    """The benchmark sink, answering as a collector does (``accepted``), which the
    collector provider requires of a 200 before it counts a batch as delivered."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = b'{"accepted": %d, "duplicates": 0, "rejected": []}' % body.count(b'"event_id"')
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class CollectorSink(Sink):
    """``_sink.Sink``, run as ``spool.py --sink PORT`` with :class:`_CollectorReply`."""

    def __enter__(self) -> str:
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, __file__, "--sink", str(port)])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", data=b"", timeout=1).read()
                return url
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("benchmark sink did not start") from None
                time.sleep(0.05)

FANOUT = [sys.executable, "-c", "from fanout.cli import run; run()"]
PROPS = {"plan": "pro", "amount": 129.5, "currency": "EUR", "items": 3}


def client(url: str, spool: str | None, *, sync: bool = False) -> fanout.Client:
    return fanout.Client(
        providers=["collector"], settings={"collector": {"url": url, "key": "sk_bench"}},
        spool_dir=spool, environ={"FANOUT_SPOOL_SYNC": "1"} if sync else {},
        load_entry_points=False, register_atexit=False, batch_size=1000,
    )


def caller_round(url: str, n: int, spool: str | None, sync: bool = False) -> float:
    c = client(url, spool, sync=sync)
    track = c.track
    start = time.perf_counter()
    for i in range(n):
        track("order.paid", person_id=f"u{i % 1000}", properties=PROPS)
    elapsed = time.perf_counter() - start
    c.shutdown(timeout=120)
    return elapsed / n * 1e6


def sustained_round(url: str, n: int, spool: str | None) -> float:
    c = client(url, spool)
    start = time.perf_counter()
    for i in range(n):
        c.track("order.paid", person_id=f"u{i % 1000}", properties=PROPS)
    report = c.shutdown(timeout=300)
    elapsed = time.perf_counter() - start
    assert report["collector"].delivered == n, report
    return n / elapsed


DEAD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import fanout
    class Hanging:
        name = "collector"
        def send(self, batch):
            threading.Event().wait(3600)
        def close(self):
            pass
    c = fanout.Client(providers=[Hanging()], spool_dir=sys.argv[1], environ={},
                      load_entry_points=False, batch_size=1000)
    for i in range(int(sys.argv[2])):
        c.track("order.paid", person_id=f"u{i % 1000}", properties={"plan": "pro", "i": i})
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def recovery_round(url: str, n: int, spool: str) -> tuple[float, float]:
    subprocess.run([sys.executable, "-c", DEAD, spool, str(n)], check=False)
    start = time.perf_counter()
    c = client(url, spool)
    built = time.perf_counter() - start
    report = c.shutdown(timeout=300)
    total = time.perf_counter() - start
    assert report["collector"].delivered == n, report
    return built, total


def import_round(n: int, workdir: Path) -> float:
    path = workdir / "events.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"kind": "track", "name": "order.paid", "event_id": f"imp-{i}",
                                "person_id": f"u{i % 1000}", "timestamp": "2023-05-06T07:08:09Z",
                                "properties": PROPS}) + "\n")
    db = workdir / "collector.db"
    with collector(db) as (url, key, _pid):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
        env.update(FANOUT_PROVIDERS="collector", FANOUT_COLLECTOR_URL=url,
                   FANOUT_COLLECTOR_KEY=key, FANOUT_BATCH_SIZE="1000")
        start = time.perf_counter()
        subprocess.run([*FANOUT, "import", str(path), "--no-progress", "--state",
                        str(workdir / "state")], env=env, check=True, capture_output=True)
        elapsed = time.perf_counter() - start
    assert _stored(db) == n
    return n / elapsed


def plain_round(n: int, workdir: Path) -> float:
    """What ``fanout collector serve`` ingests from a plain client: the import's ceiling."""
    db = workdir / "plain.db"
    with collector(db) as (url, key, _pid):
        elapsed, _ = fanout_round(url, key, n, 1000, False)
    assert _stored(db) == n
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        server = ThreadingHTTPServer(("127.0.0.1", args.sink), _CollectorReply)
        server.daemon_threads = True
        server.serve_forever()
    n = args.events
    with CollectorSink() as url, tempfile.TemporaryDirectory() as tmp:
        memory, spooled = [], []
        for r in range(args.rounds):
            memory.append(caller_round(url, n // 2, None))
            spooled.append(caller_round(url, n // 2, f"{tmp}/caller{r}"))
        sync = caller_round(url, 2000, f"{tmp}/sync", sync=True)
        m, s = statistics.median(memory), statistics.median(spooled)
        print(f"caller cost, track() µs/call (median of {args.rounds}, {n // 2} calls):")
        print(f"  memory queue      {m:7.2f}")
        print(f"  spool             {s:7.2f}   {s / m:.2f}x memory (target <= 1.5x)")
        print(f"  spool, SYNC=1     {sync:7.2f}   {sync / m:.1f}x memory (one fdatasync per call)")
        rates, plain = [], []
        for r in range(3):
            plain.append(sustained_round(url, n, None))
            rates.append(sustained_round(url, n, f"{tmp}/sustained{r}"))
        sr, pr = statistics.median(rates), statistics.median(plain)
        print(f"sustained to a local sink, spool on: {sr:,.0f} events/s "
              f"(median of 3, {n} events; target >= 50,000)")
        print(f"  the same client with the memory queue: {pr:,.0f} events/s; "
              f"the spool runs at {sr / pr:.2f}x of it")
        built, total = recovery_round(url, n, f"{tmp}/recovery")
        print(f"recovery of {n} events killed in a spool: take-over {built:.2f}s, "
              f"delivered {total:.2f}s after start")
    with tempfile.TemporaryDirectory() as tmp:
        rates, plain = [], []
        for r in range(3):
            (Path(tmp) / f"r{r}").mkdir()
            plain.append(plain_round(n, Path(tmp) / f"r{r}"))
            rates.append(import_round(n, Path(tmp) / f"r{r}"))
        i, p = statistics.median(rates), statistics.median(plain)
        print(f"fanout import to the collector: {i:,.0f} events/s "
              f"(median of 3, {n} events; target >= 20,000)")
        print(f"  the same collector from a plain client: {p:,.0f} events/s; "
              f"import runs at {i / p:.2f}x of it")


if __name__ == "__main__":
    main()
