"""The ASGI middleware under real servers: SIGTERM right after the last response loses nothing.

uvicorn re-raises SIGTERM after its graceful stop, so the exit hook never runs; the
middleware's lifespan shutdown must deliver what is queued (``FANOUT_FLUSH_INTERVAL=30``
keeps every event queued until then). 300 requests carry 280 distinct event ids: the
collector must store exactly 280, once each.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .conftest import PYTHON, app_env, free_port, stored

REQUESTS = 300
UNIQUE = 280


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    # Each worker imports the app on its own; poll until the health route answers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


def _drive(url: str) -> list[str]:
    ids = []
    with httpx.Client(timeout=10) as http:
        for n in range(REQUESTS):
            r = http.get(f"{url}/track", params={"i": n % UNIQUE})
            r.raise_for_status()
            ids.append(r.json()["event_id"])
    return ids


def _sigterm_and_wait(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


def _run(collector, argv: list[str], log: Path) -> tuple[list[str], str]:
    port = free_port()
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30", FANOUT_SHUTDOWN_TIMEOUT="20")
    gunicorn = "gunicorn" in argv
    bind = ["--bind", f"127.0.0.1:{port}"] if gunicorn else ["--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, *bind], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, f"http://127.0.0.1:{port}")
            ids = _drive(f"http://127.0.0.1:{port}")
            # SIGTERM right after the last response, as Docker / Kubernetes / systemd send it.
            _sigterm_and_wait(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return ids, log.read_text(errors="replace")


def _check(collector, ids: list[str], output: str) -> None:
    assert len(ids) == REQUESTS  # sent: one track() per request
    assert len(set(ids)) == UNIQUE
    events = stored(collector)
    stored_ids = [e["event_id"] for e in events]
    assert len(stored_ids) == UNIQUE, output[-3000:]  # lost: 0, duplicates stored: 0
    assert sorted(stored_ids) == sorted(set(ids))
    assert all(e["name"] == "request.handled" for e in events)
    # the request context reached every event: a generated anonymous id and the peer IP
    assert all(e["context"]["ip"] == "127.0.0.0" for e in events)
    assert all(e["context"]["path"] == "/track" for e in events)


def test_uvicorn_two_workers_sigterm_after_last_response_loses_nothing(collector, tmp_path):
    argv = [PYTHON, "-m", "uvicorn", "asgi_app:app", "--workers", "2", "--host", "127.0.0.1",
            "--no-access-log"]
    ids, output = _run(collector, argv, tmp_path / "server.log")
    _check(collector, ids, output)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gunicorn") is None,
    reason="gunicorn is not installed (it comes with the test extra)",
)
def test_gunicorn_uvicorn_worker_preload_sigterm_loses_nothing(collector, tmp_path):
    argv = [PYTHON, "-m", "gunicorn", "asgi_app:app", "--preload", "--workers", "3",
            "--worker-class", "uvicorn.workers.UvicornWorker", "--graceful-timeout", "30"]
    ids, output = _run(collector, argv, tmp_path / "server.log")
    _check(collector, ids, output)
