"""The durable spool and ``fanout import``, timed in one run on this machine.

    python benchmarks/spool.py [--events 100000] [--rounds 5]

1. **Caller cost**: µs per ``track()`` on the caller's thread, memory queue against the
   spool (group commit), same client otherwise (the collector provider to a local sink
   process), rounds alternating; target ≤ 1.5×. ``FANOUT_SPOOL_SYNC=1`` shown for scale.
2. **Sustained**: events/s from the first ``track()`` until ``shutdown()`` has delivered
   everything to the sink, with the spool on; target ≥ 50,000. Beside it, alternating, the
   same client with the memory queue: what ``track()``, validation and delivery cost this
   process anyway, so the ratio is the spool's own share. The CPU per event is split into
   the caller's thread (``track()``) and the rest (the channel's worker, the spool's
   writer): all of it runs on one GIL, so ``1e6 / CPU`` is the rate's ceiling, and on a
   loaded machine the wall-clock rate falls far below it while the CPU stays put.
3. **Recovery**: a subprocess spools N events to a backend that never answers and kills
   itself with SIGKILL; then the time for a new client to take the spool over (build)
   and to deliver all N to the sink.
4. **Import**: ``fanout import`` of N fanout-format lines, events/s and CPU µs per event of
   the whole command (interpreter start included), first into the local sink (which stores
   nothing: import's own speed), then into ``fanout collector serve`` (a subprocess,
   SQLite, a fresh database per round, stored counts checked); target ≥ 20,000. Beside
   each, alternating, a plain ``fanout.Client`` script sending the same events from the
   same file (``json.loads`` + ``track()``): the ratio is import's own overhead, and to the
   collector, how close import comes to the collector's ingest ceiling. The other formats
   (segment, posthog, mixpanel) once each, to the sink.

``--only spool`` / ``--only import`` runs one half; the load average is printed at both ends.
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
from collector import _stored, collector  # noqa: E402

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
#: The working directory of every ``python -c`` this script starts: ``-c`` puts the working
#: directory first on ``sys.path``, so run from another checkout (an A/B against main from a
#: worktree) the child would import that checkout's fanout instead of this interpreter's.
HERE = Path(__file__).resolve().parent
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


def sustained_round(url: str, n: int, spool: str | None) -> tuple[float, float, float]:
    """(events/s, this process's CPU µs per event, every thread, user + system, and of it
    the caller's thread: ``track()``; the rest is the channel's worker and the spool's
    writer, which share the GIL with it, so a rate is at most 1e6 / CPU per event)."""
    c = client(url, spool)
    cpu = time.process_time()
    caller = time.thread_time()
    start = time.perf_counter()
    for i in range(n):
        c.track("order.paid", person_id=f"u{i % 1000}", properties=PROPS)
    caller = time.thread_time() - caller
    report = c.shutdown(timeout=300)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    assert report["collector"].delivered == n, report
    return n / elapsed, cpu / n * 1e6, caller / n * 1e6


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
    subprocess.run([sys.executable, "-c", DEAD, spool, str(n)], check=False, cwd=HERE)
    start = time.perf_counter()
    c = client(url, spool)
    built = time.perf_counter() - start
    report = c.shutdown(timeout=300)
    total = time.perf_counter() - start
    # The losses by reason say which way a shortfall went (expired, spool_corrupt, ...).
    assert report["collector"].delivered == n, (report, report["collector"].losses)
    return built, total


PLAIN = textwrap.dedent(
    """
    import json, sys
    import fanout
    client = fanout.Client(register_atexit=False)
    track = client.track
    with open(sys.argv[1], "rb") as f:
        for line in f:
            r = json.loads(line)
            track(r["name"], person_id=r["person_id"], properties=r["properties"],
                  event_id=r["event_id"], timestamp=r["timestamp"])
    report = client.shutdown(timeout=300)
    assert report.ok, report
    """
)


def events_file(n: int, workdir: Path, fmt: str = "fanout") -> Path:
    """N events of one export format, as JSON lines (the same events in every format)."""
    path = workdir / f"events-{fmt}.jsonl"
    if path.exists():
        return path
    ts = "2023-05-06T07:08:09Z"
    with open(path, "w") as f:
        for i in range(n):
            who, eid = f"u{i % 1000}", f"imp-{i}"
            row: dict[str, object] = {
                "fanout": {"kind": "track", "name": "order.paid", "event_id": eid,
                           "person_id": who, "timestamp": ts, "properties": PROPS},
                "segment": {"type": "track", "event": "order.paid", "messageId": eid,
                            "userId": who, "timestamp": ts, "properties": PROPS},
                "posthog": {"uuid": eid, "event": "order.paid", "distinct_id": who,
                            "timestamp": ts, "properties": PROPS},
                "mixpanel": {"event": "order.paid",
                             "properties": {**PROPS, "time": 1683356889, "distinct_id": who,
                                            "$insert_id": eid}},
            }[fmt]
            f.write(json.dumps(row) + "\n")
    return path


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a subprocess, interpreter start included."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=HERE)
    elapsed = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user
           + after.children_system - before.children_system)
    return elapsed, cpu


def _env(url: str, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    env.update(FANOUT_PROVIDERS="collector", FANOUT_COLLECTOR_URL=url,
               FANOUT_COLLECTOR_KEY=key, FANOUT_BATCH_SIZE="1000")
    return env


def import_round(n: int, workdir: Path, url: str, key: str, fmt: str = "fanout",
                 ) -> tuple[float, float]:
    """``fanout import`` of N lines as a user runs it: (events/s, CPU µs per event)."""
    state = workdir / f"state-{time.monotonic_ns()}"
    elapsed, cpu = _timed([*FANOUT, "import", str(events_file(n, workdir, fmt)), "--format",
                           fmt, "--no-progress", "--state", str(state)], _env(url, key))
    return n / elapsed, cpu / n * 1e6


def plain_round(n: int, workdir: Path, url: str, key: str) -> tuple[float, float]:
    """The same events from a plain ``fanout.Client`` in a script reading the same file with
    ``json.loads`` and calling ``track()``: what import is measured against."""
    elapsed, cpu = _timed([sys.executable, "-c", PLAIN, str(events_file(n, workdir))],
                          _env(url, key))
    return n / elapsed, cpu / n * 1e6


def import_figures(n: int, rounds: int, url: str | None) -> None:
    """Import and a plain client, alternating, to ``url`` (the non-storing sink) or, when
    ``None``, to a fresh ``fanout collector serve`` per round (SQLite; stored counts
    checked)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rates: list[tuple[float, float]] = []
        plain: list[tuple[float, float]] = []
        for r in range(rounds):
            for contender, out in ((plain_round, plain), (import_round, rates)):
                if url is not None:
                    out.append(contender(n, work, url, "sk_bench"))
                    continue
                db = work / f"c{r}-{contender.__name__}.db"
                with collector(db) as (curl, key, _pid):
                    out.append(contender(n, work, curl, key))
                assert _stored(db) == n
        i = statistics.median(x for x, _ in rates)
        p = statistics.median(x for x, _ in plain)
        icpu = statistics.median(c for _, c in rates)
        pcpu = statistics.median(c for _, c in plain)
        where = "a local sink that stores nothing" if url else "the collector (SQLite)"
        print(f"fanout import to {where}: {i:,.0f} events/s (median of {rounds}, {n} events, "
              f"whole command; target >= 20,000), CPU {icpu:.1f} µs/event")
        print(f"  a plain fanout.Client sending the same events: {p:,.0f} events/s, "
              f"CPU {pcpu:.1f} µs/event; import runs at {i / p:.2f}x of it, "
              f"CPU {icpu / pcpu:.2f}x")
        if url is not None:
            for fmt in ("segment", "posthog", "mixpanel"):
                rate, cpu = import_round(n, work, url, "sk_bench", fmt)
                print(f"  --format {fmt:9s} {rate:9,.0f} events/s, CPU {cpu:.1f} µs/event")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("spool", "import"), help="One half of the run.")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        server = ThreadingHTTPServer(("127.0.0.1", args.sink), _CollectorReply)
        server.daemon_threads = True
        server.serve_forever()
    n = args.events
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with CollectorSink() as url, tempfile.TemporaryDirectory() as tmp:
        if args.only == "import":
            import_figures(n, args.rounds, url)
            import_figures(n, args.rounds, None)
            return
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
        for r in range(args.rounds):
            plain.append(sustained_round(url, n, None))
            rates.append(sustained_round(url, n, f"{tmp}/sustained{r}"))
        sr, sc, st = (statistics.median(x[i] for x in rates) for i in range(3))
        pr, pc, pt = (statistics.median(x[i] for x in plain) for i in range(3))
        print(f"sustained to a local sink, spool on: {sr:,.0f} events/s "
              f"(median of {args.rounds}, {n} events; target >= 50,000), "
              f"CPU {sc:.1f} µs/event (caller's track() {st:.1f}, "
              f"worker + spool writer {sc - st:.1f}; ceiling {1e6 / sc:,.0f}/s on one GIL)")
        print(f"  the same client with the memory queue: {pr:,.0f} events/s, "
              f"CPU {pc:.1f} µs/event (caller {pt:.1f}, worker {pc - pt:.1f}); the spool "
              f"runs at {sr / pr:.2f}x of it (its own CPU: {sc - pc:+.1f} µs/event)")
        built, total = recovery_round(url, n, f"{tmp}/recovery")
        print(f"recovery of {n} events killed in a spool: take-over {built:.2f}s, "
              f"delivered {total:.2f}s after start")
        if args.only == "spool":
            return
        import_figures(n, args.rounds, url)
    import_figures(n, args.rounds, None)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
