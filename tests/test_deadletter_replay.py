"""``fanout deadletter list | show | replay`` against the real collector, as a user runs it.

Dead letters are made the real way: a client with a wrong server key gets 401s from the
collector, so its channel dead-letters every event. Replay then sends them with the right
key, keeping their ids: ten of them had arrived by another way already, and the collector
still stores each event once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import fanout
from fanout.collector.keys import INGEST
from fanout.collector.server import ServerThread
from fanout.collector.sqlite import SQLiteStore


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    store = SQLiteStore(tmp_path / "collector.db")
    store.create_project("replay")
    _, key = store.create_key("replay", (INGEST,), "replay-ingest")
    srv = ServerThread(store)
    srv.start()
    yield srv, key
    srv.stop()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    return subprocess.run(
        [sys.executable, "-m", "fanout.cli", *args], env={**base, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )


def collector_client(url: str, key: str, dead: Path | None = None) -> fanout.Client:
    return fanout.Client(
        providers=["collector"], settings={"collector": {"url": url, "key": key}},
        environ={}, load_entry_points=False, register_atexit=False, flush_interval=0.05,
        dead_letter_dir=str(dead) if dead else None,
    )


def test_replay_delivers_dead_letters_once_keeping_ids(
    server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    srv, key = server
    dead = tmp_path / "dead"
    wrong = collector_client(srv.url, "sk_wrong", dead)
    sent = [wrong.track("paid", person_id=f"p{i}", event_id=f"dl-{i:03d}") for i in range(200)]
    report = wrong.shutdown(timeout=10)
    assert report["collector"].losses == {"permanent_error": 200}
    lines = (dead / "collector.jsonl").read_text().splitlines()
    assert len(lines) == 200

    # Ten of them arrive by another way first: replay must not store them twice.
    early = collector_client(srv.url, key)
    for i in range(10):
        early.track("paid", person_id=f"p{i}", event_id=f"dl-{i:03d}")
    assert early.shutdown(timeout=10).ok
    assert srv.store.count_events() == 10

    env = {"FANOUT_COLLECTOR_URL": srv.url, "FANOUT_COLLECTOR_KEY": key,
           "FANOUT_PROVIDERS": "collector"}
    listed = cli("deadletter", "list", "--dir", str(dead), env=env)
    assert listed.returncode == 0 and "permanent_error" in listed.stdout
    assert "200 dead letter(s)" in listed.stdout
    shown = cli("deadletter", "show", "--dir", str(dead), "-n", "3", env=env)
    assert [json.loads(x)["event"]["event_id"] for x in shown.stdout.splitlines()] == sent[:3]
    assert "sk_wrong" not in listed.stdout + shown.stdout  # the wrong key never shows

    dry = cli("deadletter", "replay", "--dir", str(dead), "--dry-run", env=env)
    assert dry.returncode == 0 and "would replay 200" in dry.stdout
    assert srv.store.count_events() == 10  # a dry run sends nothing
    assert len((dead / "collector.jsonl").read_text().splitlines()) == 200

    # --since in the future selects nothing and keeps everything.
    later = cli("deadletter", "replay", "--dir", str(dead), "--since", "2999-01-01", env=env)
    assert json.loads(later.stdout) == {"delivered": 0, "failed_again": 0, "skipped": 200}

    done = cli("deadletter", "replay", "--dir", str(dead), "--since", "1h", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"delivered": 200, "failed_again": 0, "skipped": 0}
    stored = srv.store.event_ids()
    assert len(stored) == len(set(stored)) == 200 and set(stored) == set(sent)
    assert not (dead / "collector.jsonl").exists()  # delivered means removed
    assert list(dead.iterdir()) == []


def test_replay_that_fails_again_keeps_the_dead_letters(
    server: tuple[ServerThread, str], tmp_path: Path
) -> None:
    srv, _ = server
    dead = tmp_path / "dead"
    wrong = collector_client(srv.url, "sk_wrong", dead)
    for i in range(30):
        wrong.track("paid", person_id="p", event_id=f"again-{i}")
    wrong.shutdown(timeout=10)
    env = {"FANOUT_COLLECTOR_URL": srv.url, "FANOUT_COLLECTOR_KEY": "sk_still_wrong",
           "FANOUT_PROVIDERS": "collector"}
    done = cli("deadletter", "replay", "--dir", str(dead), env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"delivered": 0, "failed_again": 30, "skipped": 0}
    again = [json.loads(x) for x in (dead / "collector.jsonl").read_text().splitlines()]
    assert sorted(r["event"]["event_id"] for r in again) == sorted(f"again-{i}" for i in range(30))
    assert {r["reason"] for r in again} == {"permanent_error"}
    assert srv.store.count_events() == 0
    assert [p.name for p in dead.iterdir()] == ["collector.jsonl"]  # no file left aside
