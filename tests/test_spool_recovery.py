"""Hard deaths in mid-delivery, end to end: real processes, the real collector.

A process tracks 10,000 events to the reference collector (rate-limited, so delivery takes
seconds) with a spool directory, and dies once part of them arrived: SIGKILL from outside,
SIGTERM with no handler, or ``os._exit``. A second process on the same directory (a client
that starts, or ``fanout spool drain``) delivers the rest. The collector then holds each of
the 10,000 exactly once, nothing is dead-lettered, and no spool is left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout._spoolfile import spool_dirs
from fanout.collector.keys import INGEST
from fanout.collector.ratelimit import RateLimiter
from fanout.collector.server import ServerThread
from fanout.collector.sqlite import SQLiteStore

N = 10_000
FANOUT = [sys.executable, "-c", "from fanout.cli import run; run()"]

TRACKER = textwrap.dedent(
    """
    import os, sys, time
    import fanout
    url, key, root, how = sys.argv[1:5]
    client = fanout.Client(
        providers=["collector"], settings={"collector": {"url": url, "key": key}},
        spool_dir=root, environ={}, load_entry_points=False, batch_size=100,
        flush_interval=0.05, max_retries=1000,
        delivery={"collector": {"retry_base": 0.02, "retry_cap": 0.2}},
    )
    for i in range(10_000):  # N
        client.track("order.paid", person_id=f"p{i % 50}", event_id=f"ev-{i:05d}",
                     properties={"i": i, "amount": i * 3})
    while client.stats()["collector"].delivered < 1000:
        time.sleep(0.005)
    time.sleep(0.1)  # settle: longer than the spool's 50 ms loss window
    print("go", flush=True)
    if how == "exit":
        os._exit(0)
    time.sleep(60)  # the test kills us here
    """
)

RESTARTED = textwrap.dedent(
    """
    import sys
    import fanout
    url, key, root = sys.argv[1:4]
    client = fanout.Client(
        providers=["collector"], settings={"collector": {"url": url, "key": key}},
        spool_dir=root, environ={}, load_entry_points=False, max_retries=1000,
        delivery={"collector": {"retry_base": 0.02, "retry_cap": 0.2}},
    )
    client.track("restarted", person_id="p0", event_id="after-restart")
    report = client.shutdown(timeout=60)
    print(report["collector"].delivered, report.ok, flush=True)
    """
)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    store = SQLiteStore(tmp_path / "collector.db")
    store.create_project("spool")
    _, key = store.create_key("spool", (INGEST,), "spool-ingest")
    # 4,000 events/s: the 10,000 take seconds, so the kill lands in mid-delivery.
    server = ServerThread(store, limiter=RateLimiter(4000, 400))
    server.start()
    yield server, key
    server.stop()


def _expected() -> set[str]:
    return {f"ev-{i:05d}" for i in range(N)}


def _die_midway(url: str, key: str, root: Path, how: str) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", TRACKER, url, key, str(root), how],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "go"
        if how == "kill":
            proc.send_signal(signal.SIGKILL)
        elif how == "term":
            proc.send_signal(signal.SIGTERM)
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "status"), [("kill", -signal.SIGKILL), ("term", -signal.SIGTERM), ("exit", 0)]
)
def test_a_process_dying_midway_loses_nothing_and_duplicates_nothing(
    collector: tuple[ServerThread, str], tmp_path: Path, how: str, status: int
) -> None:
    server, key = collector
    root = tmp_path / "spool"
    dead_letters = tmp_path / "dead"
    assert _die_midway(server.url, key, root, how) == status
    before = server.store.count_events()
    assert 1000 <= before < N, "the process must die in mid-delivery"

    if how == "kill":  # the next process of the app takes over as it starts
        out = subprocess.run(
            [sys.executable, "-c", RESTARTED, server.url, key, str(root)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout.split()
        delivered, ok = int(out[0]), out[1] == "True"
        expected = _expected() | {"after-restart"}
    else:  # a deploy hook drains the spool
        done = subprocess.run(
            [*FANOUT, "spool", "drain", "--dir", str(root), "--timeout", "60"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "FANOUT_PROVIDERS": "collector",
                 "FANOUT_COLLECTOR_URL": server.url, "FANOUT_COLLECTOR_KEY": key,
                 "FANOUT_MAX_RETRIES": "1000", "FANOUT_DEAD_LETTER_DIR": str(dead_letters)},
        )
        assert done.returncode == 0, done.stderr
        taken = int(re.search(r"collector: took over (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
        delivered, ok = taken, True
        # What the dead process had not acknowledged, and at most what it sent in its
        # last moments again (deduplicated by the collector).
        assert N - before <= taken <= N
        expected = _expected()

    stored = server.store.event_ids()
    assert ok
    assert len(stored) == len(set(stored)) == len(expected)  # stored once each
    assert set(stored) == expected
    redelivered = delivered - (len(expected) - before)
    assert 0 <= redelivered < N - before  # resent, deduplicated by event id, never lost
    assert not dead_letters.exists()  # nothing dead-lettered
    assert list(spool_dirs(root)) == []  # nothing left behind


@pytest.mark.slow
def test_a_gunicorn_worker_killed_by_sigkill_loses_nothing(
    collector: tuple[ServerThread, str], tmp_path: Path
) -> None:
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    if gunicorn is None:
        pytest.skip("gunicorn is not installed (pip install gunicorn)")
    server, key = collector
    root = tmp_path / "spool"
    app = tmp_path / "spoolapp.py"
    app.write_text(textwrap.dedent(
        f"""
        import fanout
        client = fanout.Client(
            providers=["collector"], settings={{"collector": {{"url": {server.url!r}, "key": {key!r}}}}},
            spool_dir={str(root)!r}, environ={{}}, load_entry_points=False, batch_size=100,
            flush_interval=0.05, max_retries=1000,
            delivery={{"collector": {{"retry_base": 0.02, "retry_cap": 0.2}}}},
        )

        def app(environ, start_response):
            start = int(environ["QUERY_STRING"])
            for i in range(start, start + 1000):
                client.track("order.paid", person_id="p", event_id=f"ev-{{i:05d}}")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        """
    ))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [gunicorn, "--preload", "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path),
         "spoolapp:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    import httpx

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                for start in range(0, N, 1000):
                    assert httpx.get(f"http://127.0.0.1:{port}/?{start}", timeout=10).text == "ok"
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "gunicorn did not start"
                time.sleep(0.1)
        time.sleep(0.1)  # settle: longer than the 50 ms loss window
        [worker] = [int(p.name.split("-")[0]) for p in spool_dirs(root, "collector")]
        os.kill(worker, signal.SIGKILL)
        before = server.store.count_events()
        assert before < N, "the worker must die in mid-delivery"
    finally:
        proc.terminate()
        proc.wait(30)
        assert proc.stderr is not None
        proc.stderr.close()
    done = subprocess.run(
        [*FANOUT, "spool", "drain", "--dir", str(root), "--timeout", "60"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "FANOUT_PROVIDERS": "collector", "FANOUT_COLLECTOR_URL": server.url,
             "FANOUT_COLLECTOR_KEY": key, "FANOUT_MAX_RETRIES": "1000"},
    )
    assert done.returncode == 0, done.stderr
    stored = server.store.event_ids()
    assert len(stored) == len(set(stored)) == N and set(stored) == _expected()
