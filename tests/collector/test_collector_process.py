"""The collector as a real process: restart mid-stream, SIGTERM, the CLI, the demo."""

from __future__ import annotations

import os
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

from .conftest import FANOUT_CMD, collector_client, spawn_serve


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    """Signal the server, wait for it, and close its pipes; kill it if it hangs."""
    proc.send_signal(sig)
    try:
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode


def _create_key(db: Path | str) -> str:
    args = ["collector", "keys", "create", "--label", "t", "--db", str(db)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


def test_server_restart_mid_stream_every_event_arrives_exactly_once(make_store):
    db = make_store.new_db()
    key = _create_key(db)
    proc, url = spawn_serve(db)
    port = int(url.rsplit(":", 1)[1])
    client = collector_client(url, key, batch_size=20, delivery={"max_retries": 100})
    sent: list[str] = []
    stop_sending = threading.Event()

    def produce() -> None:
        i = 0
        while not stop_sending.is_set():
            sent.append(client.track("tick", person_id="p", properties={"i": i}))
            i += 1
            time.sleep(0.002)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(0.5)
        assert _stop(proc) == 0  # graceful: in-flight batches answered after commit
        time.sleep(2.5)  # down for a while; the client keeps queueing and retrying
        proc, url2 = spawn_serve(db, port)
        assert url2 == url
        time.sleep(0.5)
    finally:
        stop_sending.set()
        producer.join()
    try:
        report = client.shutdown(timeout=30)
        assert report.ok, report
        assert report["collector"].retries >= 1
        assert len(sent) > 100
    finally:
        assert _stop(proc) == 0
    stored = make_store(db).event_ids()
    assert len(stored) == len(set(stored))
    assert sorted(stored) == sorted(sent)


def test_serve_prints_the_bound_url_answers_health_and_stops_on_sigint(tmp_path: Path):
    proc, url = spawn_serve(tmp_path / "c.db")
    try:
        health = httpx.get(f"{url}/v1/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"ok": True, "protocol": 1}
    finally:
        assert _stop(proc, signal.SIGINT) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/health", timeout=5)


def test_serve_refuses_a_port_in_use(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*FANOUT_CMD, "collector", "serve", "--port", str(port), "--db",
             str(tmp_path / "c.db")],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_keys_create_list_revoke_and_timeline(tmp_path: Path, start_collector):
    db = tmp_path / "k.db"
    runner = CliRunner()
    key = _create_key(db)
    assert key.startswith("sk_") and len(key) > 40
    listed = runner.invoke(main, ["collector", "keys", "list", "--db", str(db)])
    assert listed.exit_code == 0 and " t " in listed.stdout and "active" in listed.stdout
    assert key not in listed.output and key not in db.read_bytes().decode("latin-1")

    collector = start_collector(db=db)
    with collector_client(collector.url, key) as client:
        client.page("/", anonymous_id="a1", timestamp="2024-01-01T00:00:00Z")
        client.identify("ada", anonymous_id="a1", timestamp="2024-01-01T00:01:00Z")
        client.track("paid", person_id="ada", timestamp="2024-01-01T00:02:00Z")
        assert client.flush(10).ok
    timeline = runner.invoke(main, ["collector", "timeline", "ada", "--db", str(db)])
    assert timeline.exit_code == 0
    lines = timeline.stdout.splitlines()
    assert "also known as a1" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == ["page", "identify", "track"]

    revoked = runner.invoke(main, ["collector", "keys", "revoke", "1", "--db", str(db)])
    assert revoked.exit_code == 0
    assert collector.post({"batch": []}, key=key).status_code == 401
    again = runner.invoke(main, ["collector", "keys", "revoke", "1", "--db", str(db)])
    assert again.exit_code == 1


def test_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "POSTHOG",
                                                                     "SEGMENT", "MIXPANEL"))}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [*FANOUT_CMD, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "collector: 9 events sent, 8 stored (1 redelivery deduplicated" in out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines()
             if line.startswith(("collector ", "console "))}
    assert table["collector"][:4] == ["9", "0", "0", "0"]
    assert table["console"][:4] == ["9", "0", "0", "0"]
    timeline = out[out.index("timeline of "):].splitlines()
    kinds = [line.split()[1] for line in timeline[1:]]
    assert kinds == ["page", "page", "track", "identify", "track", "track", "track", "track"]
    assert "checkout.finished" in out and "subscription.renewed" in out
    assert err.count('"checkout.finished"') == 2  # the console saw both deliveries
    # Nothing left: no process in its session, no port listening, no temporary files.
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    url = out.split("collector listening on ")[1].split()[0]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/health", timeout=5)
    assert list(tmp_path.iterdir()) == []
