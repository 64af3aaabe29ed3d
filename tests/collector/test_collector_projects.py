"""Projects and scoped keys: tenants kept apart, write-only keys, migration of old files."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import httpx
from click.testing import CliRunner

from fanout.cli import main
from fanout.collector.keys import INGEST, READ, hash_key
from fanout.collector.refusals import RefusalLog
from fanout.collector.sqlite import SCHEMA_VERSION, SQLiteStore


def _event(event_id: str, **fields):
    return {"kind": "track", "event_id": event_id, "name": "e",
            "timestamp": "2024-05-01T10:00:00.000Z", **fields}


def test_ingest_keys_cannot_read_and_read_keys_cannot_write(collector):
    sent = collector.post({"batch": [_event("e1", person_id="ada")]})
    assert sent.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    as_ingest = httpx.get(f"{collector.url}/v1/persons/ada/events",
                          headers={"Authorization": f"Bearer {collector.key}"})
    assert as_ingest.status_code == 403
    assert collector.key not in as_ingest.text and "ingest" in as_ingest.json()["error"]
    as_read = collector.post({"batch": [_event("e2", person_id="ada")]}, key=collector.read_key)
    assert as_read.status_code == 403 and collector.read_key not in as_read.text
    assert collector.store.event_ids() == ["e1"]
    assert [e["event_id"] for e in collector.timeline("ada")["events"]] == ["e1"]


def test_dedupe_stitching_and_timelines_are_per_project(collector):
    store = collector.store
    other = store.create_project("other")
    _, other_ingest = store.create_key("other", (INGEST,), "o-in")
    _, other_read = store.create_key("other", (READ,), "o-read")

    # Project "other" claims the id first; it must not suppress the tests project's event.
    first = collector.post({"batch": [_event("evt_stripe_123", person_id="mallory",
                                             properties={"owner": "other"})]},
                           key=other_ingest)
    assert first.json()["accepted"] == 1
    real = collector.post({"batch": [_event("evt_stripe_123", person_id="ada",
                                            properties={"owner": "tests"})]})
    assert real.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    again = collector.post({"batch": [_event("evt_stripe_123", person_id="ada")]})
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}

    # "other" links anonymous "anon-1" to "ada" in its own project only.
    collector.post({"batch": [_event("a1", anonymous_id="anon-1")]})
    hostile_link = {"kind": "identify", "event_id": "link", "person_id": "ada",
                    "anonymous_id": "anon-1", "timestamp": "2024-05-01T10:00:01.000Z"}
    assert collector.post({"batch": [hostile_link]}, key=other_ingest).json()["accepted"] == 1

    ours = collector.timeline("ada")
    assert ours["anonymous_ids"] == []
    assert [(e["event_id"], e["properties"]) for e in ours["events"]] == [
        ("evt_stripe_123", {"owner": "tests"})]
    theirs = collector.timeline("ada", key=other_read)
    assert theirs["anonymous_ids"] == ["anon-1"]
    assert [e["event_id"] for e in theirs["events"]] == ["link"]  # not our anon-1 event
    assert collector.timeline("mallory", key=collector.read_key)["events"] == []
    assert store.count_events(collector.project_id) == 2
    assert store.count_events(other.id) == 2
    assert sorted(store.event_ids(other.id)) == ["evt_stripe_123", "link"]


# The schema fanout wrote before projects existed (version 1, user_version 0), verbatim.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    timestamp TEXT NOT NULL, person_id TEXT, anonymous_id TEXT, name TEXT,
    key_id INTEGER NOT NULL, received_at TEXT NOT NULL, body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_person ON events (person_id) WHERE person_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_anonymous ON events (anonymous_id)
    WHERE anonymous_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS identity_links (
    anonymous_id TEXT NOT NULL, person_id TEXT NOT NULL, linked_at TEXT NOT NULL,
    PRIMARY KEY (anonymous_id, person_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identity_links_person ON identity_links (person_id);
CREATE TABLE IF NOT EXISTS server_keys (
    id INTEGER PRIMARY KEY, label TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, revoked_at TEXT
);
"""


def _v1_database(path: Path) -> tuple[str, str]:
    """A database as the previous version left it: two keys (one revoked), events, a link."""
    live, revoked = "sk_" + "L" * 43, "sk_" + "R" * 43
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V1)
    db.executemany(
        "INSERT INTO server_keys (label, key_hash, created_at, revoked_at) VALUES (?, ?, ?, ?)",
        [("api", hash_key(live), "2024-01-01T00:00:00+00:00", None),
         ("old", hash_key(revoked), "2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00")])
    rows = [
        ("v1-page", "page", "2024-01-01T00:00:00.000Z", None, "anon-v1", None),
        ("v1-identify", "identify", "2024-01-01T00:01:00.000Z", "ada", "anon-v1", None),
        ("v1-paid", "track", "2024-01-01T00:02:00.000Z", "ada", None, "paid"),
    ]
    for event_id, kind, ts, person, anon, name in rows:
        body = (f'{{"v":1,"kind":"{kind}","event_id":"{event_id}","timestamp":"{ts}",'
                f'"person_id":{"null" if person is None else chr(34) + person + chr(34)},'
                f'"anonymous_id":{"null" if anon is None else chr(34) + anon + chr(34)},'
                f'"name":{"null" if name is None else chr(34) + name + chr(34)},'
                '"properties":{},"traits":{},"context":{},"group":null,"previous_id":null}')
        db.execute(
            "INSERT INTO events (event_id, kind, timestamp, person_id, anonymous_id, name,"
            " key_id, received_at, body) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
            (event_id, kind, ts, person, anon, name, ts, body.encode()))
    db.execute("INSERT INTO identity_links VALUES ('anon-v1', 'ada', '2024-01-01T00:01:00.000Z')")
    db.commit()
    db.close()
    return live, revoked


def test_a_database_of_the_previous_version_is_migrated_on_start(tmp_path: Path,
                                                                  start_collector):
    db = tmp_path / "v1.db"
    live, revoked = _v1_database(db)

    collector = start_collector(db=db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert not {t for t in tables if t.endswith("_v1")}
    finally:
        conn.close()
    keys = {k.label: k for k in collector.store.list_keys()}
    assert keys["api"].project == "default" and keys["api"].scopes == ("ingest", "read")
    assert keys["old"].revoked_at == "2024-02-01T00:00:00+00:00"
    assert [p.name for p in collector.store.list_projects()] == ["default", "tests"]

    # The old key still sends and reads, in the default project, with the old history.
    timeline = collector.timeline("ada", key=live)
    assert timeline["anonymous_ids"] == ["anon-v1"]
    assert [e["event_id"] for e in timeline["events"]] == ["v1-page", "v1-identify", "v1-paid"]
    redelivered = collector.post({"batch": [_event("v1-paid", person_id="ada")]}, key=live)
    assert redelivered.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    new = collector.post({"batch": [_event("v2-new", person_id="ada")]}, key=live)
    assert new.json()["accepted"] == 1
    assert collector.post({"batch": []}, key=revoked).status_code == 401
    # The new project's keys see nothing of the default project.
    assert collector.timeline("ada")["events"] == []
    assert collector.store.count_events() == 4

    # Opening it again is a no-op (already migrated).
    collector.server.stop()
    again = SQLiteStore(db)
    try:
        assert again.count_events() == 4 and len(again.list_keys()) == 4
    finally:
        again.close()


def test_projects_and_scoped_keys_from_the_cli(tmp_path: Path):
    db = str(tmp_path / "c.db")
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, ["collector", *args, "--db", db])

    assert run("projects", "create", "shop").exit_code == 0
    duplicate = run("projects", "create", "shop")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    assert run("projects", "create", "Bad Name!").exit_code == 1
    ingest = run("keys", "create", "--project", "shop", "--scope", "ingest")
    read = run("keys", "create", "--project", "shop", "--scope", "read", "--label", "bi")
    assert ingest.exit_code == 0 and read.exit_code == 0
    unknown = run("keys", "create", "--project", "nope", "--scope", "read")
    assert unknown.exit_code == 1 and "no project 'nope'" in unknown.output
    listed = run("keys", "list")
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[1:4] == ["shop-ingest", "shop", "ingest"]
    assert lines[1].split()[1:4] == ["bi", "shop", "read"]
    for created in (ingest, read):
        key = created.stdout.strip()
        assert key.startswith("sk_") and key not in listed.output
    projects = run("projects", "list")
    assert [line.split()[1] for line in projects.stdout.splitlines()] == ["shop"]


def test_refusals_are_logged_at_a_bounded_rate_without_the_key(collector, caplog):
    caplog.set_level(logging.WARNING, logger="fanout.collector.refusals")
    bad = "sk_" + "z" * 43
    for _ in range(30):
        assert collector.post({"batch": []}, key=bad).status_code == 401
        assert collector.post({"batch": []}, key=collector.read_key).status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "fanout.collector.refusals"]
    # One line per status per 10 s: 30 refusals of each status in well under 10 s would
    # need 60 lines unthrottled.
    assert 2 <= len(lines) <= 4
    assert any(line.startswith("refused 401 from 127.0.0.1") for line in lines)
    assert any(line.startswith("refused 403 from 127.0.0.1 with key") for line in lines)
    for text in (caplog.text, *lines):
        assert bad not in text and collector.read_key not in text and collector.key not in text


def test_refusal_log_counts_what_it_did_not_log():
    now = [0.0]
    records: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("tests.refusals")
    logger.propagate = False
    logger.addHandler(Sink())
    try:
        log = RefusalLog(logger, interval=10.0, clock=lambda: now[0])
        for i in range(100):
            now[0] = i * 0.5  # 50 s of refusals, two a second
            log.record(429, "rate limit exceeded", client="10.0.0.1", key_id=7)
        log.record(401, "unknown key", client="10.0.0.2")
    finally:
        logger.handlers.clear()
    assert len(records) == 6  # at 0, 10, 20, 30, 40 s for 429, and the first 401
    assert records[1] == ("refused 429 from 10.0.0.1 with key 7: rate limit exceeded "
                          "(19 more 429 refusal(s) since the last line)")
    assert records[-1].startswith("refused 401 from 10.0.0.2: unknown key (0 more")
