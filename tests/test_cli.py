"""The CLI as a user runs it: real subprocesses, exit codes, stdout vs stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def fanout(*args, env=None):
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FANOUT_", "POSTHOG_", "SEGMENT_", "MIXPANEL_"))
    }
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fanout.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_track_prints_event_id_and_sends(tmp_path):
    out = tmp_path / "events.jsonl"
    proc = fanout(
        "track",
        "signup",
        "--person",
        "u1",
        "-p",
        "plan=pro",
        "-p",
        "seats=3",
        "-p",
        'meta={"a":[1]}',
        "--event-id",
        "evt_1",
        "-P",
        "console",
        env={"FANOUT_CONSOLE_FILE": str(out)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "evt_1"
    event = json.loads(out.read_text())
    assert event["properties"] == {"plan": "pro", "seats": 3, "meta": {"a": [1]}}
    assert event["event_id"] == "evt_1" and event["person_id"] == "u1"


def test_identify(tmp_path):
    out = tmp_path / "events.jsonl"
    proc = fanout(
        "identify",
        "u1",
        "--anonymous",
        "a1",
        "-t",
        "email=a@b.c",
        "--event-id",
        "evt_identify_1",
        "--timestamp",
        "2024-02-29T12:00:00+01:00",
        "-P",
        "console",
        "-q",
        env={"FANOUT_CONSOLE_FILE": str(out)},
    )
    assert proc.returncode == 0 and proc.stdout == ""
    event = json.loads(out.read_text())
    assert event["event_id"] == "evt_identify_1"  # the shared options reach the call
    assert event["timestamp"].startswith("2024-02-29T11:00:00")
    assert (event["kind"], event["anonymous_id"], event["traits"]) == (
        "identify",
        "a1",
        {"email": "a@b.c"},
    )


def test_bad_input_exits_2_with_message_on_stderr():
    proc = fanout("track", "x")  # no person
    assert proc.returncode == 2
    assert "person_id" in proc.stderr and proc.stdout == ""
    proc = fanout("track", "x", "--person", "u", "-p", "novalue")
    assert proc.returncode == 2 and "key=value" in proc.stderr


def test_bad_configuration_exits_2_naming_variable():
    proc = fanout("check", env={"FANOUT_BATCH_SIZE": "lots"})
    assert proc.returncode == 2
    assert "FANOUT_BATCH_SIZE" in proc.stderr and "Traceback" not in proc.stderr
    proc = fanout("check", env={"FANOUT_PROVIDERS": "nonesuch"})
    assert proc.returncode == 2 and "nonesuch" in proc.stderr


def test_check_send_test_event_reports_per_provider():
    proc = fanout("check", "--send-test-event", env={"FANOUT_PROVIDERS": "null,memory"})
    assert proc.returncode == 0, proc.stderr
    assert "null" in proc.stdout and "delivered" in proc.stdout


def test_check_send_test_event_fails_with_exit_1_when_backend_is_down():
    # The native collector on a closed port: connection refused, retried, still pending.
    proc = fanout(
        "check",
        "--send-test-event",
        "--timeout",
        "1",
        env={
            "FANOUT_PROVIDERS": "collector",
            "FANOUT_COLLECTOR_URL": "http://127.0.0.1:9",
            "FANOUT_COLLECTOR_KEY": "sk_test_secret",
        },
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "collector" in proc.stdout
    assert "sk_test_secret" not in proc.stdout + proc.stderr


def test_version_and_help():
    assert fanout("--version").stdout.startswith("fanout, version")
    proc = fanout("--help")
    assert proc.returncode == 0
    for cmd in ("plugins", "check", "track", "identify", "demo"):
        assert cmd in proc.stdout


def test_check_fails_when_only_the_implicit_null_provider_is_enabled():
    """A misspelled POSTHOG_APIKEY used to print 'configuration ok ... null' and exit 0."""
    proc = fanout("check", "--send-test-event", env={"POSTHOG_APIKEY": "phc_typo_secret"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "configuration ok" not in proc.stdout
    assert "POSTHOG_APIKEY is set; did you mean POSTHOG_API_KEY?" in proc.stderr
    assert "posthog needs FANOUT_POSTHOG_API_KEY or POSTHOG_API_KEY" in proc.stderr
    assert "collector needs FANOUT_COLLECTOR_URL" in proc.stderr
    assert "phc_typo_secret" not in proc.stdout + proc.stderr
    # Asking for null on purpose is fine.
    assert fanout("check", env={"FANOUT_PROVIDERS": "null"}).returncode == 0


def test_collector_url_with_v1_says_which_base_url_is_expected():
    proc = fanout(
        "check",
        env={
            "FANOUT_PROVIDERS": "collector",
            "FANOUT_COLLECTOR_URL": "http://127.0.0.1:8765/v1",
            "FANOUT_COLLECTOR_KEY": "sk_x",
        },
    )
    assert proc.returncode == 2
    assert "FANOUT_COLLECTOR_URL" in proc.stderr
    assert "without /v1" in proc.stderr and "http://127.0.0.1:8765" in proc.stderr


def test_cli_plugin_loading_honours_fanout_disable_plugins():
    proc = fanout("plugins", "--json", env={"FANOUT_DISABLE_PLUGINS": "posthog"})
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    posthog = [p for p in data["plugins"] if p["name"] == "posthog"]
    if posthog:  # installed: listed, but not loaded
        assert posthog[0]["loaded"] is False
    assert "posthog" not in [r["provider"] for r in data["providers"]]
