"""Hostile connections and bodies against a real ``fanout collector serve`` process:
slow connections beyond the descriptor limit, header trickling, and memory under
concurrent maximal uploads and amplification bodies (peak RSS read from /proc)."""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from fanout.cli import main
from fanout.collector.protocol import MAX_BATCH_BYTES

from .conftest import FANOUT_CMD

#: The documented bound (docs/collector.md): peak RSS of one collector process.
MEMORY_BOUND_MB = 400


def _serve(db: Path, *extra: str, nofile: int | None = None):
    key = CliRunner().invoke(main, ["collector", "keys", "create", "--db", str(db)])
    assert key.exit_code == 0

    def limit_fds() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [*FANOUT_CMD, "collector", "serve", "--port", "0", "--db", str(db), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit_fds,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), proc.stderr.read() if proc.stderr else line
    return proc, line.removeprefix("listening on "), key.stdout.strip()


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return err


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _batch(n: int, prefix: str, pad: int = 0) -> bytes:
    return json.dumps({"batch": [
        {"event_id": f"{prefix}{i}", "name": "x", "person_id": "p",
         "timestamp": "2024-05-01T10:00:00.000Z", "properties": {"pad": "x" * pad}}
        for i in range(n)]}).encode()


@pytest.mark.slow
def test_1100_slow_connections_at_a_1024_descriptor_limit_do_not_starve_real_clients(
        tmp_path: Path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1300:
        pytest.skip(f"this test needs 1,300 descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    proc, url, key = _serve(tmp_path / "c.db", "--header-timeout", "3", nofile=1024)
    host, port = url.removeprefix("http://").split(":")
    slow: list[socket.socket] = []
    try:
        for _ in range(1100):  # headers started, never finished
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        with httpx.Client(base_url=url, timeout=1.0) as client:  # the bound: 1 s each
            assert client.get("/v1/health").json() == {"ok": True, "protocol": 1}
            sent = client.post("/v1/batch", content=_batch(10, "real"),
                               headers={"Authorization": f"Bearer {key}"})
            assert sent.status_code == 200 and sent.json()["accepted"] == 10

        # A connection trickling one header byte at a time is closed at the deadline (3 s),
        # however active it looks.
        trickle = socket.create_connection((host, int(port)), timeout=10)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 20 and not closed:
            try:
                trickle.sendall(b"X")
                trickle.settimeout(0.5)
                closed = trickle.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        trickle.close()
        assert closed, "the trickling connection was still open after 20 s"
    finally:
        for s in slow:
            s.close()
        err = _stop(proc)
    # Refusals are logged at a bounded rate: a few lines, not one per connection.
    assert len(err.splitlines()) < 40, err[-2000:]
    assert "Traceback" not in err


@pytest.mark.slow
def test_memory_stays_bounded_under_100_maximal_uploads_and_amplification_bodies(
        tmp_path: Path):
    proc, url, key = _serve(tmp_path / "c.db")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # ~5 MB of valid events: 900 events of ~5.7 KB.
    maximal = _batch(900, "big", pad=5_600)
    assert MAX_BATCH_BYTES - 300_000 < len(maximal) <= MAX_BATCH_BYTES
    empty_lists = (b'{"batch":[{"event_id":"a","name":"n","person_id":"p","properties":{"l":['
                   + b"[]," * 1_700_000 + b"[]]}}]}")
    assert len(empty_lists) <= MAX_BATCH_BYTES
    statuses: list[int] = []
    lock = threading.Lock()

    def upload(body: bytes) -> None:
        with httpx.Client(timeout=120) as client:
            status = client.post(f"{url}/v1/batch", content=body, headers=headers).status_code
        with lock:
            statuses.append(status)

    try:
        threads = [threading.Thread(target=upload, args=(maximal,)) for _ in range(100)]
        threads += [threading.Thread(target=upload, args=(empty_lists,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        peak = _peak_rss_mb(proc.pid)
        health = httpx.get(f"{url}/v1/health", timeout=10)
    finally:
        _stop(proc)
    print(f"collector peak RSS: {peak:.0f} MB")  # the figure docs/collector.md quotes
    assert sorted(statuses) == [200] * 100 + [413] * 16
    assert health.status_code == 200
    assert peak < MEMORY_BOUND_MB, f"peak RSS {peak:.0f} MB"
