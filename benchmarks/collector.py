"""The reference collector's throughput, CPU per event and timeline latency, beside the
official PostHog and Segment SDKs sending the same events. One run, side by side, on this
machine:

- **Stores and server processes**: SQLite and PostgreSQL, 1 and 2 server processes
  (``fanout collector serve --workers 2``), fed two ways: by the **lean loader**, one
  process posting batches a fanout client encoded beforehand (default size, 100 events,
  fresh event ids) over 1 or 2 keep-alive connections, each waiting for its 200, which
  shows the collector's own capacity; and by **fanout clients** in their own processes
  (1 or 2, the client's default batches of 100), which adds the client's CPU on the same
  cores. The ``[no guard]`` row is the hardening's A/B: the same app and loader under
  uvicorn's stock httptools protocol, without the connection guard. Events/s is every
  sender's N over the wall time from "go" to the last batch answered (a client's last
  ``flush()`` returning), i.e. to the last *commit* (the server answers 200 only after
  it). Server CPU is the collector processes' CPU (all workers) per event, database CPU
  the PostgreSQL processes' CPU per event, both read from ``/proc`` before and after;
  ``(loop)``, for one server process, is the part of its CPU spent on the event loop's
  thread (HTTP, hand-offs, responses), the rest being its worker threads' (decode,
  validate, insert, key check). The stored count is checked against N every round.
  PostgreSQL is a throwaway cluster of the Debian binaries with ``fsync=on`` and
  ``synchronous_commit=on`` (each batch durable before its 200); SQLite is WAL with
  ``synchronous=NORMAL`` (durable against a process crash, not an OS crash).
- **Where the SQLite path's time goes**: decode, validate and insert of one client-encoded
  batch, timed in this process, per event: the worker threads' part of the server's CPU
  (a served batch's cost more, the caches being colder there than in a tight loop).
- **Timeline pages** at 1,000,000 stored events (bulk-loaded straight into each store's
  tables, not through HTTP): p50/p99 of ``GET /v1/persons/{id}/events`` pages over HTTP.
- **fanout vs the SDKs**: a ``fanout.Client`` in this process → the collector (SQLite),
  and posthog-python and segment-analytics-python → a local sink that stores nothing.
  Client CPU is ``time.process_time()`` of this process per event.

- **Server instructions per event** (``--instructions``, needs valgrind): a one-process
  SQLite collector under cachegrind, fed 2,000 and then 12,000 events by the lean loader;
  the difference of the totals per event. Deterministic, so an A/B with ``--baseline``
  shows a change of a per cent on a machine whose CPU-time figures vary by half between
  rounds; it does not see cache misses or the kernel, which the CPU columns do.

Rounds alternate between contenders and medians are reported, with the slowest and fastest
round of each row and the machine's speed before each round (``machine ms``: a fixed
pure-Python loop, :func:`machine_ms`). The machine is shared and its speed moves by half
between runs minutes apart: read the figures of one run against each other, not against
another run's.

    python benchmarks/collector.py [--events 50000] [--rounds 3] [--batch 100]
        [--timeline-events 1000000] [--skip-timeline] [--skip-sdks] [--skip-postgres]
        [--no-ab] [--lean] [--instructions] [--baseline OTHER_CHECKOUT/.venv/bin/python]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Set to "1" (by ``--http-client-loader``): the loader processes this script starts post
#: through ``http.client`` instead of a plain socket.
_HTTP_CLIENT_LOADER_ENV = "FANOUT_BENCH_HTTP_CLIENT_LOADER"
PROPERTIES = {
    "plan": "pro",
    "amount": 2900,
    "currency": "USD",
    "items": [{"sku": "A-1", "qty": 2}],
    "coupon": None,
}
#: The CLI of the fanout installed beside this interpreter. Not ``python -c``, whose
#: sys.path starts with the working directory: run from another checkout, its servers
#: would import that checkout's fanout instead (an A/B of two trees measured one).
_CLI = Path(sys.executable).with_name("fanout")
FANOUT = ([str(_CLI)] if _CLI.exists() else
          [sys.executable, "-P", "-c", "from fanout.cli import main; main()"])
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _proc import CLOCK, tree_cpu  # noqa: E402

# -- servers ------------------------------------------------------------------------------


async def _sink_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: read the whole body, answer 200 with what the SDKs expect; store nothing."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"status": 1}'})


def _wait_up(url: str, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.05)


@contextmanager
def sink() -> Iterator[str]:
    """The do-nothing sink in a uvicorn subprocess."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--sink"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        _wait_up(url + "/", proc)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def _serve_sink() -> None:
    import uvicorn

    from fanout.collector.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    print(url_of(sock), flush=True)
    config = uvicorn.Config(_sink_app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _bare_serve(db: str) -> None:
    """The collector app under uvicorn's stock httptools protocol: no connection cap, no
    header deadline (the hardening's A/B; the app's own checks still run)."""
    import uvicorn

    from fanout.collector.app import create_app
    from fanout.collector.database import open_store
    from fanout.collector.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    print(f"listening on {url_of(sock)}", flush=True)
    config = uvicorn.Config(create_app(open_store(db)), log_level="warning", access_log=False,
                            lifespan="on", http="httptools", ws="none")
    uvicorn.Server(config).run(sockets=[sock])


def _fanout_of(python: str) -> list[str]:
    """The ``fanout`` CLI installed beside another interpreter (``--baseline``)."""
    cli = Path(python).with_name("fanout")
    return [str(cli)] if cli.exists() else [python, "-P", "-c",
                                            "from fanout.cli import main; main()"]


@contextmanager
def collector(db: Path | str, workers: int = 1, guard: bool = True,
              fanout: list[str] | None = None,
              serve_with: list[str] | None = None) -> Iterator[tuple[str, str, int]]:
    """``fanout collector serve`` in a subprocess on a fresh database: (url, key, pid).
    ``guard=False``: the same app under uvicorn's stock httptools protocol, without the
    connection guard (this script's ``--bare-serve``), for the hardening's A/B.
    ``fanout``: another installation's CLI (``--baseline``), else this one's.
    ``serve_with``: the server's whole command line instead of ``fanout`` (valgrind, for
    ``--instructions``), followed by the ``collector serve`` arguments."""
    fanout = fanout or FANOUT
    created = subprocess.run(
        [*fanout, "collector", "keys", "create", "--label", "bench", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    serve = ([*(serve_with or fanout), "collector", "serve", "--port", "0", "--db", str(db),
              "--workers", str(workers)] if guard else
             [sys.executable, os.path.abspath(__file__), "--bare-serve", str(db)])
    proc = subprocess.Popen(
        serve,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("listening on ")
        _wait_up(url + "/v1/health", proc, 300 if serve_with else 30)
        yield url, key, proc.pid
    finally:
        proc.terminate()
        proc.communicate(timeout=300 if serve_with else 30)


def _stored(db: Path | str) -> int:
    from fanout.collector.database import open_store

    store = open_store(str(db))
    try:
        return store.count_events()
    finally:
        store.close()




def _loop_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s main thread: a one-process collector's event loop (uvicorn
    runs it there; the worker threads decode, validate and insert)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK


# -- contenders: each returns (wall seconds, client CPU seconds) for n events -------------


def fanout_round(url: str, key: str, n: int, batch: int, gzip: bool) -> tuple[float, float]:
    import fanout
    from fanout.providers.collector import CollectorProvider

    provider = CollectorProvider(url, key, gzip_min_bytes=1024 if gzip else None)
    client = fanout.Client(
        providers=[provider],
        environ={},
        register_atexit=False,
        load_entry_points=False,
        batch_size=batch,
        queue_size=n + 1,
    )
    # The provider object carries the same limits the registered spec declares.
    try:
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(n):
            client.track("checkout.finished", person_id=f"user_{i % 1000}", properties=PROPERTIES)
        report = client.flush(timeout=300)
        end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        client.shutdown(timeout=10)
    got = report[provider.name]
    if got.delivered != n:
        raise RuntimeError(f"fanout delivered {got.delivered} of {n}: {got}")
    return end - start, cpu_end - cpu


def posthog_round(url: str, n: int, batch: int) -> tuple[float, float]:
    from posthog import Posthog

    errors: list[object] = []
    client = Posthog(
        "phc_bench",
        host=url,
        flush_at=batch,
        max_queue_size=n + 1,
        on_error=lambda e, b: errors.append(e),
        gzip=False,
    )
    try:
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(n):
            client.capture(
                "checkout.finished", distinct_id=f"user_{i % 1000}", properties=PROPERTIES
            )
        client.flush()
        end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        client.shutdown()
    if errors:
        raise RuntimeError(f"posthog reported errors: {errors[:3]}")
    return end - start, cpu_end - cpu


def segment_round(url: str, n: int, batch: int) -> tuple[float, float]:
    from segment.analytics import Client

    errors: list[object] = []
    client = Client(
        "bench-key",
        host=url,
        upload_size=min(batch, 100),
        gzip=False,
        max_queue_size=n + 1,
        on_error=lambda e, b: errors.append(e),
    )
    try:
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(n):
            client.track(f"user_{i % 1000}", "checkout.finished", PROPERTIES)
        client.flush()
        end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        client.join()
    if errors:
        raise RuntimeError(f"segment reported errors: {errors[:3]}")
    return end - start, cpu_end - cpu


# -- stores and server processes ----------------------------------------------------------


def _client_main(url: str, key: str, n: int, batch: int, prefix: str) -> None:
    """A client process: ready once imported, sends ``n`` events on "go", reports."""
    import fanout
    from fanout.providers.collector import CollectorProvider

    provider = CollectorProvider(url, key, gzip_min_bytes=None)
    client = fanout.Client(providers=[provider], environ={}, register_atexit=False,
                           load_entry_points=False, batch_size=batch, queue_size=n + 1)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    for i in range(n):
        client.track("checkout.finished", person_id=f"user_{i % 1000}", properties=PROPERTIES,
                     event_id=f"{prefix}{i}")
    report = client.flush(timeout=600)
    cpu = time.process_time() - cpu
    client.shutdown(timeout=10)
    print(json.dumps({"delivered": report[provider.name].delivered, "cpu": cpu}), flush=True)


def _loader_bodies(n: int, batch: int, prefix: str) -> list[bytes]:
    """Request bodies of ``n`` events as a fanout client encodes them (the provider's own
    encoder), each event with a fresh id, encoded before the clock starts."""
    import fanout
    from fanout.providers.collector import CollectorProvider

    provider = CollectorProvider("http://127.0.0.1:9", "sk_x", gzip_min_bytes=None)
    bodies = []
    for start in range(0, n, batch):
        events = [fanout.Event(kind="track", name="checkout.finished",
                               person_id=f"user_{i % 1000}", properties=PROPERTIES,
                               event_id=f"{prefix}{i}")
                  for i in range(start, min(n, start + batch))]
        bodies.append(provider.encode(events))
    return bodies


def _post_all(url: str, key: str, bodies: list[bytes]) -> int:
    """POST ``bodies`` one after the other over one keep-alive connection, each answered
    (so committed) before the next; the events the server accepted.

    On a plain socket: the request's head is built once, and the answer is split at its
    blank line and its ``Content-Length`` (the collector always sends one). With one
    connection, the loader's CPU per batch lies in the same serial chain as the server's
    (send, wait for the 200, send the next), so it lowers the row's events/s without
    being the server's. ``http.client`` spent about 3 µs of CPU per event there (most of
    it parsing each answer's headers with the ``email`` package), this about 1; the
    ``--http-client-loader`` option keeps the old loader for that A/B."""
    parts = urlsplit(url)
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}"
            "\r\nContent-Type: application/json\r\nContent-Length: ").encode()
    accepted = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        # As http.client sets it: the request never waits for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        for body in bodies:
            sock.sendall(b"%s%d\r\n\r\n%s" % (head, len(body), body))
            status, answer, pending = _read_answer(sock, pending)
            if status != 200:
                raise RuntimeError(f"loader: HTTP {status}: {answer[:200]!r}")
            accepted += json.loads(answer)["accepted"]
    return accepted


def _read_answer(sock: socket.socket, data: bytes) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 answer from ``sock`` (``data``: bytes already read): its status, its
    body, and the bytes read beyond it."""
    while (end := data.find(b"\r\n\r\n")) < 0:
        data += _recv(sock)
    head = data[:end].decode("latin-1")
    status_line, *fields = head.split("\r\n")
    length = None
    for field in fields:
        name, _, value = field.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise RuntimeError(f"loader: an answer without Content-Length: {head!r}")
    start = end + 4
    while len(data) < start + length:
        data += _recv(sock)
    return int(status_line.split()[1]), data[start:start + length], data[start + length:]


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise RuntimeError("loader: the server closed the connection")
    return chunk


def _post_all_http_client(url: str, key: str, bodies: list[bytes]) -> int:
    """:func:`_post_all` through ``http.client`` (``--http-client-loader``)."""
    import http.client

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    accepted = 0
    try:
        for body in bodies:
            conn.request("POST", "/v1/batch", body, headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"loader: HTTP {response.status}: {answer[:200]!r}")
            accepted += json.loads(answer)["accepted"]
    finally:
        conn.close()
    return accepted


def _loader_main(url: str, key: str, n: int, batch: int, prefix: str, connections: int) -> None:
    """The lean loader: pre-encoded batches over ``connections`` keep-alive connections
    (one thread each), no fanout.Client, so the collector's own capacity shows."""
    import threading

    bodies = _loader_bodies(n, batch, prefix)
    http_client = os.environ.get(_HTTP_CLIENT_LOADER_ENV) == "1"
    post = _post_all_http_client if http_client else _post_all
    shares = [bodies[c::connections] for c in range(connections)]
    counts = [0] * connections

    def run(c: int) -> None:
        counts[c] = post(url, key, shares[c])

    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu
    print(json.dumps({"delivered": sum(counts), "cpu": cpu}), flush=True)


def _pg_cluster() -> Any:
    """The tests' throwaway PostgreSQL cluster helper, with fsync on."""
    sys.path.insert(0, str(ROOT / "tests"))
    from collector.postgres_cluster import Cluster, missing_reason

    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    return Cluster(fsync=True)


def machine_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop in this process: the machine's speed
    at the moment, printed beside each round. On a shared virtual machine it moves by
    half between runs a minute apart, more than most changes measured here, so a round
    is read against its neighbours' speed, never alone."""
    start = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.process_time() - start) * 1000


def store_round(db: str, servers: int, sender: str, clients: int, n: int, batch: int,
                db_pid: int | None, guard: bool = True,
                fanout: list[str] | None = None) -> dict[str, float]:
    """One round: ``clients`` fanout client processes (``sender="fanout"``), or one lean
    loader process with ``clients`` connections (``sender="loader"``), send ``n`` events
    in all to ``servers`` collector processes on ``db``; events/s and CPU µs per event.
    ``guard=False`` serves with uvicorn's stock protocol (the A/B of the hardening)."""
    per = n // clients
    if sender == "fanout":
        commands = [[sys.executable, os.path.abspath(__file__), "--client", "{url}", "{key}",
                     str(per), str(batch), f"c{c}_"] for c in range(clients)]
    else:
        commands = [[sys.executable, os.path.abspath(__file__), "--loader", "{url}", "{key}",
                     str(per * clients), str(batch), "l_", str(clients)]]
    with collector(db, servers, guard=guard, fanout=fanout) as (url, key, server_pid):
        procs = [subprocess.Popen([a.format(url=url, key=key) for a in command],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for command in commands]
        try:
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            server_cpu, db_cpu = tree_cpu(server_pid), tree_cpu(db_pid) if db_pid else 0.0
            loop_cpu = _loop_cpu(server_pid)
            start = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            reports = [json.loads(p.stdout.readline()) for p in procs if p.stdout]
            wall = time.perf_counter() - start
            server_cpu = tree_cpu(server_pid) - server_cpu
            loop_cpu = _loop_cpu(server_pid) - loop_cpu
            db_cpu = (tree_cpu(db_pid) - db_cpu) if db_pid else 0.0
        finally:
            for p in procs:
                p.communicate(timeout=60)
    total = per * clients
    delivered = sum(r["delivered"] for r in reports)
    stored = _stored(db)
    if delivered != total or stored != total:
        raise RuntimeError(f"{db}: delivered {delivered}, stored {stored} of {total}")
    # With one server process, the part of its CPU spent on the event loop's thread (HTTP,
    # hand-offs, responses); the rest is the worker threads' (decode, validate, insert).
    loop = loop_cpu / total * 1e6 if servers == 1 else float("nan")
    return {"events/s": total / wall, "server µs/ev": server_cpu / total * 1e6,
            "loop µs/ev": loop, "db µs/ev": db_cpu / total * 1e6,
            "client µs/ev": sum(r["cpu"] for r in reports) / total * 1e6}


#: (store, server processes, sender, clients or connections, hardening on).
Config = tuple[str, int, str, int, bool]


def _configs(postgres: bool, ab: bool, lean: bool = False) -> list[Config]:
    if lean:  # the SQLite target's row: one lean loader connection, one server
        return [("sqlite", 1, "loader", 1, True)]
    configs: list[Config] = []
    for store in ["sqlite"] + (["postgresql"] if postgres else []):
        # 8 connections: a commit that waits for the disk (PostgreSQL's fsync) bounds
        # what 1 or 2 senders that each wait for their 200 can reach, not the server.
        configs += [(store, 1, "loader", 1, True), (store, 1, "loader", 2, True),
                    (store, 2, "loader", 2, True), (store, 2, "loader", 8, True),
                    (store, 1, "fanout", 1, True), (store, 2, "fanout", 2, True)]
        if ab:
            configs.insert(len(configs) - 5, (store, 1, "loader", 1, False))
    return configs


def store_matrix(n: int, rounds: int, batch: int, postgres: bool, ab: bool = True,
                 lean: bool = False,
                 baseline: str | None = None) -> dict[str, dict[str, float]]:
    """``baseline``: another installation's Python; each row is run with its servers
    too, alternating with this one's (an A/B of two trees in one run)."""
    configs = _configs(postgres, ab, lean)
    trees: list[tuple[str, list[str] | None]] = [("", None)]
    if baseline:
        trees.insert(0, (" [baseline]", _fanout_of(baseline)))
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        cluster = stack.enter_context(_pg_cluster()) if postgres else None
        for r, (i, (store, servers, sender, clients, guard)), (j, (tree, fanout)) in (
                (r, c, t) for r in range(rounds) for c in enumerate(configs)
                for t in enumerate(trees)):
            unit = "conn" if sender == "loader" else "client"
            name = (f"{store:<10} {servers} server(s) {sender} {clients} {unit}(s)"
                    + ("" if guard else " [no guard]") + tree)
            if store == "sqlite":
                db, db_pid = str(Path(tmp) / f"m{r}_{i}_{j}.db"), None
            else:
                db, db_pid = cluster.create_database(), cluster.pid
            speed = machine_ms()
            got = store_round(db, servers, sender, clients, n, batch, db_pid, guard, fanout)
            got["machine ms"] = speed
            results.setdefault(name, []).append(got)
            print(f"round {r + 1} {name}: " + "  ".join(
                f"{k} {v:,.1f}" for k, v in got.items()), file=sys.stderr)
    table = {name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
             for name, runs in results.items()}
    for name, runs in results.items():
        table[name]["events/s min"] = min(x["events/s"] for x in runs)
        table[name]["events/s max"] = max(x["events/s"] for x in runs)
    print(f"\ncollector: {n} events per round (batches of {batch}), {rounds} rounds, medians; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(f"{'store / processes / sender':<48} {'events/s':>9} {'(rounds)':>15} "
          f"{'server µs/ev':>13} {'(loop)':>7} {'db µs/ev':>9} {'client µs/ev':>13} "
          f"{'machine ms':>11}")
    for name, row in table.items():
        spread = f"{row['events/s min'] / 1000:.1f}k-{row['events/s max'] / 1000:.1f}k"
        print(f"{name:<48} {row['events/s']:>9,.0f} {spread:>15} {row['server µs/ev']:>13.1f} "
              f"{row['loop µs/ev']:>7.1f} {row['db µs/ev']:>9.1f} {row['client µs/ev']:>13.1f} "
              f"{row['machine ms']:>11.1f}")
    print("(rounds): the slowest and fastest round; machine ms: the median time of a fixed "
          "pure-Python loop taken before each round (lower is faster; see machine_ms)")
    return table


# -- server instructions per event (cachegrind) --------------------------------------------


def _load(url: str, key: str, n: int, batch: int, connections: int = 1) -> None:
    """The lean loader (a process of its own) sends ``n`` events and is checked."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--loader", url, key,
                             str(n), str(batch), "i_", str(connections)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate("go\n", timeout=600)
    ready, report = out.splitlines()
    if ready != "ready" or json.loads(report)["delivered"] != n:
        raise RuntimeError(f"the loader delivered {report} of {n}")


def server_instructions(python: str, batch: int, small: int = 2_000,
                        large: int = 12_000) -> float:
    """Instructions a one-process SQLite collector (the fanout installed beside
    ``python``) executes per event: the server under valgrind's cachegrind, fed ``small``
    and then ``large`` events by the lean loader over one connection, each on a fresh
    database; the difference of the two totals over ``large - small`` events leaves out
    start and shutdown. Deterministic, unlike CPU time on a shared machine, but blind to
    what costs time without instructions (cache misses, the kernel)."""
    totals = []
    for n in (small, large):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cachegrind.out"
            valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                        f"--cachegrind-out-file={out}", python, "-P", "-c",
                        "from fanout.cli import main; main()"]
            with collector(Path(tmp) / "i.db", fanout=_fanout_of(python),
                           serve_with=valgrind) as (url, key, _):
                _load(url, key, n, batch)
            summary = [line for line in out.read_text().splitlines()
                       if line.startswith("summary:")]
            totals.append(int(summary[0].split()[1]))
    return (totals[1] - totals[0]) / (large - small)


def instructions_table(batch: int, baseline: str | None) -> dict[str, float]:
    trees = ([("baseline", baseline)] if baseline else []) + [("this tree", sys.executable)]
    table = {name: server_instructions(python, batch) for name, python in trees}
    print(f"\nserver instructions per event (cachegrind, SQLite, 1 server, lean loader over 1 "
          f"connection, batches of {batch}):")
    for name, per_event in table.items():
        print(f"  {name:<10} {per_event:>10,.0f}")
    return table


# -- where the SQLite path's time goes ----------------------------------------------------


def stage_profile(batch: int, repeats: int = 200) -> dict[str, float]:
    """CPU µs per event (this thread's CPU time, so a loaded machine's waits are not
    counted) of decode, validate and SQLite insert for client-encoded batches."""
    import fanout
    from fanout.collector.ingest import decode_body, validate_batch
    from fanout.collector.sqlite import SQLiteStore
    from fanout.providers.collector import CollectorProvider

    provider = CollectorProvider("http://127.0.0.1:9", "sk_x", gzip_min_bytes=None)
    events = [fanout.Event(kind="track", name="checkout.finished", person_id=f"user_{i}",
                           properties=PROPERTIES) for i in range(batch)]
    body = provider.encode(events)
    times = {"decode": 0.0, "validate": 0.0, "insert": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "p.db")
        project = store.create_project("p")
        for r in range(repeats):
            t0 = time.thread_time()
            decoded = decode_body(bytearray(body))
            t1 = time.thread_time()
            ingested = validate_batch(decoded)
            t2 = time.thread_time()
            # Fresh ids, and people spread as the loader spreads them (1,000): each
            # commit then rewrites as many person-index pages as a served batch does.
            rows = [row._replace(event_id=f"{r}_{row.event_id}",
                                 person_id=f"user_{(r * batch + k) % 1000}")
                    for k, row in enumerate(ingested.rows)]
            t3 = time.thread_time()
            store.insert(project.id, rows, ingested.links)
            t4 = time.thread_time()
            times["decode"] += t1 - t0
            times["validate"] += t2 - t1
            times["insert"] += t4 - t3
        store.close()
    out = {k: v / (repeats * batch) * 1e6 for k, v in times.items()}
    print(f"\nSQLite path per event (batches of {batch}, {len(body) // batch} bytes/event): "
          + ", ".join(f"{k} {v:.1f} µs" for k, v in out.items())
          + "; the (loop) column above is the event loop's thread: HTTP and hand-offs, and"
            " the whole batch when it handles one itself (docs/collector.md)")
    return out


# -- timeline pages -----------------------------------------------------------------------


def _bulk_rows(n: int, heavy: int) -> Iterator[tuple[str, str, str, bytes]]:
    """(event_id, person_id, timestamp, body) of ``n`` events: ``heavy`` of them one
    person's, the rest spread over 1,000 people, 50 events per second of event time."""
    props = json.dumps(PROPERTIES, separators=(",", ":"))
    every = n // heavy
    for i in range(n):
        person = "heavy" if i % every == 0 else f"user_{i % 1000}"
        second = i // 50
        ts = (f"2024-{1 + second // 2_600_000 % 12:02d}-01T{second // 3600 % 24:02d}:"
              f"{second // 60 % 60:02d}:{second % 60:02d}.{i % 1000:03d}Z")
        body = (f'{{"v":1,"kind":"track","event_id":"e{i}","timestamp":"{ts}",'
                f'"person_id":"{person}","anonymous_id":null,"name":"checkout.finished",'
                f'"properties":{props},"traits":{{}},"context":{{}},"group":null,'
                f'"previous_id":null}}').encode()
        yield f"e{i}", person, ts, body


def _bulk_sqlite(path: Path, project_id: int, n: int, heavy: int) -> None:
    import sqlite3

    now = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO events (event_id, kind, timestamp, person_id, anonymous_id, name,"
            " body, project_id, key_id, received_at) VALUES (?, 'track', ?, ?, NULL,"
            " 'checkout.finished', ?, ?, 0, ?)",
            ((e, ts, p, body, project_id, now) for e, p, ts, body in _bulk_rows(n, heavy)))
        db.execute("ANALYZE")


def _bulk_postgres(url: str, project_id: int, n: int, heavy: int) -> None:
    import datetime as dt

    import psycopg

    now = dt.datetime.now(dt.timezone.utc)
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY event_ids (project_id, event_id) FROM STDIN") as copy:
                for e, _, _, _ in _bulk_rows(n, heavy):
                    copy.write_row((project_id, e))
            with cur.copy("COPY events (project_id, event_id, kind, timestamp, person_id,"
                          " name, key_id, received_at, body) FROM STDIN") as copy:
                for e, p, ts, body in _bulk_rows(n, heavy):
                    copy.write_row((project_id, e, "track", ts, p, "checkout.finished", 0,
                                    now, body))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE events")


def timeline_bench(kind: str, n: int, heavy: int, pages: int,
                   cluster: Any = None) -> dict[str, float]:
    """p50/p99 of one ``GET /v1/persons/{id}/events`` page (1,000 events) over HTTP, from
    the request to the last byte of the response (the client decoding the JSON after is
    not counted), and of the same pages read from the store alone."""
    import httpx

    from fanout.collector.database import open_store
    from fanout.collector.keys import INGEST, READ
    from fanout.collector.server import ServerThread

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "timeline.db") if kind == "sqlite" else cluster.create_database()
        store = open_store(db)
        project = store.create_project("bench")
        store.create_key("bench", (INGEST,), "in")
        _, key = store.create_key("bench", (READ,), "read")
        if kind == "postgresql":
            import datetime as dt

            store._ensure_partition(dt.datetime.now(dt.timezone.utc))  # type: ignore[attr-defined]
        started = time.perf_counter()
        if kind == "sqlite":
            _bulk_sqlite(Path(db), project.id, n, heavy)
            # Rows written behind the store's back: opening it again indexes them for the
            # timeline (as opening any database with unindexed events does, in the
            # background; waited for here, so the pages read are the indexed case).
            store.close()
            store = open_store(db)
            catch_up = getattr(store, "catch_up_index", None)
            if catch_up is not None:
                catch_up()
        else:
            _bulk_postgres(db, project.id, n, heavy)
        loaded = time.perf_counter() - started
        if store.count_events() != n:
            raise RuntimeError(f"bulk load stored {store.count_events()} of {n}")
        print(f"{kind}: bulk-loaded {n:,} events in {loaded:.1f} s", file=sys.stderr)
        times: dict[str, list[float]] = {"heavy (walk)": [], "random person": [],
                                         "store only (walk)": []}
        with ServerThread(store) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            cursor = None
            for _ in range(pages):  # walk the heavy person's history page by page
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                t = time.perf_counter()
                fetched = http.get("/v1/persons/heavy/events", params=params)
                times["heavy (walk)"].append(time.perf_counter() - t)
                page = fetched.json()  # the reader's own decoding is not the page's latency
                if len(page["events"]) != 1000:
                    raise RuntimeError(f"short page: {len(page['events'])}")
                cursor = page["next_cursor"] or None
            for i in range(pages):
                t = time.perf_counter()
                r = http.get(f"/v1/persons/user_{(i * 7919) % 1000 or 1}/events",
                             params={"limit": 1000})
                times["random person"].append(time.perf_counter() - t)
                assert r.status_code == 200
            after = None
            for _ in range(pages):  # the same walk, the store alone (no HTTP, no JSON)
                t = time.perf_counter()
                got = store.timeline(project.id, "heavy", limit=1000, max_bytes=1 << 20,
                                     after=after)
                times["store only (walk)"].append(time.perf_counter() - t)
                after = got.next_cursor
    out: dict[str, float] = {"bulk load events/s": n / loaded}
    for name, values in times.items():
        values.sort()
        p50 = values[len(values) // 2] * 1e3
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1e3
        print(f"timeline {kind:<10} {name:<17} {len(values)} pages of 1000 events at "
              f"{n:,} stored: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        out[f"{name} p50 ms"], out[f"{name} p99 ms"] = p50, p99
    return out


# -- the run ------------------------------------------------------------------------------


def sdk_comparison(n: int, rounds: int, batch: int, gzip: bool,
                   contenders: list[str]) -> None:
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory() as tmp, sink() as sink_url:
        runs: dict[str, Callable[[int], tuple[float, float]]] = {
            "posthog": lambda r: posthog_round(sink_url, n, batch),
            "segment": lambda r: segment_round(sink_url, n, batch),
        }

        def fanout_once(r: int) -> tuple[float, float]:
            db = Path(tmp) / f"bench{r}.db"
            with collector(db) as (url, key, _):
                result = fanout_round(url, key, n, batch, gzip)
            stored = _stored(db)
            if stored != n:
                raise RuntimeError(f"the collector committed {stored} of {n} events")
            return result

        runs["fanout"] = fanout_once
        for r in range(rounds):
            for name in contenders:
                results[name].append(runs[name](r))
                wall, cpu = results[name][-1]
                print(
                    f"round {r + 1} {name:<8} {n / wall:>9,.0f} ev/s  "
                    f"{cpu / n * 1e6:6.1f} µs CPU/ev",
                    file=sys.stderr,
                )
    _table(n, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100,
                        help="client batch size (default: the client's default, 100)")
    parser.add_argument("--gzip", action="store_true", help="fanout gzips bodies above 1 KiB")
    parser.add_argument("--only", choices=["fanout", "posthog", "segment"], action="append")
    parser.add_argument("--timeline-events", type=int, default=1_000_000)
    parser.add_argument("--skip-timeline", action="store_true")
    parser.add_argument("--skip-sdks", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--loader", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--bare-serve", help=argparse.SUPPRESS)
    parser.add_argument("--lean", action="store_true",
                        help="only SQLite with one lean loader connection (the target's row) "
                             "and the stage timings; no timeline, no SDKs, no PostgreSQL")
    parser.add_argument("--baseline", metavar="PYTHON",
                        help="also serve each row with the fanout installed beside PYTHON "
                             "(e.g. main's .venv/bin/python), alternating with this one")
    parser.add_argument("--instructions", action="store_true",
                        help="only the server's instructions per event under valgrind's "
                             "cachegrind (deterministic; with --baseline, both trees)")
    parser.add_argument("--no-ab", action="store_true",
                        help="skip the hardening's A/B row (the app under uvicorn's stock "
                             "protocol)")
    parser.add_argument("--http-client-loader", action="store_true",
                        help="the lean loader on http.client (as before 2026-12), not on a "
                             "plain socket: what the loader's own CPU costs the rows")
    args = parser.parse_args()
    if args.http_client_loader:
        os.environ[_HTTP_CLIENT_LOADER_ENV] = "1"
    if args.sink:
        _serve_sink()
        return
    if args.client:
        url, key, n, batch, prefix = args.client
        _client_main(url, key, int(n), int(batch), prefix)
        return
    if args.loader:
        url, key, n, batch, prefix, connections = args.loader
        _loader_main(url, key, int(n), int(batch), prefix, int(connections))
        return
    if args.bare_serve:
        _bare_serve(args.bare_serve)
        return
    logging.basicConfig(level=logging.ERROR)
    summary: dict[str, Any] = {}
    if args.instructions:
        if shutil.which("valgrind") is None:
            parser.error("--instructions needs valgrind (apt-get install valgrind)")
        summary["server_instructions"] = instructions_table(args.batch, args.baseline)
        print(json.dumps(summary))
        return
    postgres = not (args.skip_postgres or args.lean)
    summary["stores"] = store_matrix(args.events, args.rounds, args.batch, postgres,
                                     not args.no_ab, args.lean, args.baseline)
    summary["sqlite_stages_us"] = stage_profile(args.batch)
    if args.lean:
        print(json.dumps(summary))
        return
    if not args.skip_timeline:
        n = args.timeline_events
        kinds = ["sqlite"] + ([] if args.skip_postgres else ["postgresql"])
        with contextlib.ExitStack() as stack:
            cluster = None if args.skip_postgres else stack.enter_context(_pg_cluster())
            summary["timeline"] = {
                kind: timeline_bench(kind, n, heavy=max(1, n // 10), pages=100,
                                     cluster=cluster) for kind in kinds}
    print(json.dumps(summary))
    if not args.skip_sdks:
        sdk_comparison(args.events, args.rounds, args.batch, args.gzip,
                       args.only or ["fanout", "posthog", "segment"])


def _table(n: int, results: dict[str, list[tuple[float, float]]]) -> None:
    labels = {
        "fanout": "fanout → collector (committed)",
        "posthog": "posthog-python → sink",
        "segment": "segment-analytics-python → sink",
    }
    rate = {k: n / statistics.median(w for w, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) / n * 1e6 for k, v in results.items()}
    base = "fanout" if "fanout" in results else next(iter(results))
    from fanout import _json

    encoder = "orjson" if _json.FAST else "json (standard library)"
    print(
        f"\n{n} events per round, {len(next(iter(results.values())))} rounds, medians; "
        f"{os.cpu_count()} CPUs; fanout's JSON encoder: {encoder}"
    )
    print(
        f"{'contender':<34} {'events/s':>10} {'vs fanout':>10} {'client CPU µs/ev':>17} "
        f"{'vs fanout':>10}"
    )
    for k in results:
        print(
            f"{labels[k]:<34} {rate[k]:>10,.0f} {rate[k] / rate[base]:>9.2f}x "
            f"{cpu[k]:>17.1f} {cpu[k] / cpu[base]:>9.2f}x"
        )
    print(json.dumps({"events": n, "events_per_s": rate, "client_cpu_us_per_event": cpu}))


if __name__ == "__main__":
    main()
