"""Celery prefork on a real Redis broker: context in task headers, no event lost at exit.

Children leave through ``os._exit``, which skips fanout's exit hook: every tenth task
(``--max-tasks-per-child 10``) and at the warm shutdown a SIGTERM starts.
``FANOUT_FLUSH_INTERVAL=30`` keeps every event queued until the child exits, so each one
stored proves the ``worker_process_shutdown`` flush.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fanout

from .conftest import PYTHON, app_env, free_port, stored

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server is not installed (apt-get install redis-server; .ci/run does)",
    ),
]

TASKS = 200
APPS = Path(__file__).parent / "apps"


@pytest.fixture
def redis_url(tmp_path):
    import redis

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        r.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def celery_app(redis_url, monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    import celery_app as module

    app = module.make_app(redis_url)
    yield app
    app.close()
    sys.modules.pop("celery_app", None)


def test_prefork_max_tasks_per_child_and_sigterm_lose_nothing(collector, redis_url, celery_app, tmp_path):
    log = tmp_path / "worker.log"
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30", FANOUT_SHUTDOWN_TIMEOUT="20",
                  CELERY_TEST_BROKER=redis_url)
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
             "--concurrency", "2", "--max-tasks-per-child", "10", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path),
        )
        try:
            with fanout.context(anonymous_id="visitor-7", ip="192.0.2.7",
                                properties={"source": "signup-form"}):
                results = [celery_app.send_task("record", args=(i,)) for i in range(TASKS)]
            event_ids = [r.get(timeout=120) for r in results]
            worker.send_signal(signal.SIGTERM)  # warm shutdown right after the last task
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
            for r in results if "results" in locals() else ():
                r.forget()
    output = log.read_text(errors="replace")
    assert len(event_ids) == TASKS and len(set(event_ids)) == TASKS  # sent
    events = stored(collector)
    assert len(events) == TASKS, output[-3000:]  # stored: all, each once
    assert sorted(e["event_id"] for e in events) == sorted(event_ids)
    # the publisher's context travelled in the task headers
    assert {e["anonymous_id"] for e in events} == {"visitor-7"}
    assert all(e["properties"]["source"] == "signup-form" for e in events)
    assert all(e["context"] == {"ip": "192.0.2.0"} for e in events)
