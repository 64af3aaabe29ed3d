"""Celery on a real Redis broker: context in task headers, no event lost at exit.

Children leave through ``os._exit``, which skips fanout's exit hook: every tenth task
(``--max-tasks-per-child 10``) and at the warm shutdown a SIGTERM starts.
``FANOUT_FLUSH_INTERVAL=30`` keeps every event queued until the child exits, so each one
stored proves the ``worker_process_shutdown`` flush.

The header itself: carried in the form an event would carry it (a set property published
from the host app), never failing a publish, and restored like any ``fanout.context`` (a
generated id per task for a first-time visitor; what no event could carry dropped). Unit
tests of ``RequestContext.to_dict``/``from_dict`` and of the publish hook (on Celery's
in-memory broker) need no Redis; the worker tests run a ``solo`` worker, a few seconds each.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import fanout
from fanout import InvalidEvent, RequestContext
from fanout._context import use
from fanout._events import MAX_ID_LENGTH
from fanout.testing import capture_events

from .conftest import PYTHON, app_env, free_port, stored

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (apt-get install redis-server; .ci/run does)",
)

TASKS = 200
APPS = Path(__file__).parent / "apps"


@pytest.fixture
def redis_url(tmp_path):
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


@pytest.mark.slow
@needs_redis
def test_prefork_max_tasks_per_child_and_sigterm_lose_nothing(
    collector, redis_url, celery_app, tmp_path
):
    log = tmp_path / "worker.log"
    env = app_env(
        collector,
        FANOUT_FLUSH_INTERVAL="30",
        FANOUT_SHUTDOWN_TIMEOUT="20",
        CELERY_TEST_BROKER=redis_url,
    )
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--max-tasks-per-child",
                "10",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(tmp_path),
        )
        try:
            with fanout.context(
                anonymous_id="visitor-7", ip="192.0.2.7", properties={"source": "signup-form"}
            ):
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


# -- the header: RequestContext.to_dict / from_dict ----------------------------------------


class Plan(enum.Enum):
    PRO = "pro"


#: Properties fanout converts for an event (none of them is JSON as it is).
ODD_PROPERTIES = {
    "tags": {"beta", "alpha"},
    "plan": Plan.PRO,
    "since": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
    "price": decimal.Decimal("9.5"),
    "order": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "pair": (1, frozenset({"x"})),
}


def _tracked_properties(**context_kwargs):
    """The properties an event tracked inside ``fanout.context(**context_kwargs)`` is
    delivered with (its JSON form)."""
    with capture_events() as mem, fanout.context(**context_kwargs):
        fanout.track("in.request")
    return json.loads(mem.events[-1].to_json())["properties"]


def test_to_dict_converts_properties_and_values_as_an_event_does():
    ctx = RequestContext(
        person_id=uuid.UUID("87654321-4321-8765-4321-876543218765"),  # type: ignore[arg-type]
        anonymous_id="v1",
        values={"ip": "192.0.2.1", "campaign": {"source": Plan.PRO}},
        properties=ODD_PROPERTIES,
    )
    data = ctx.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON, as kombu's serializer needs
    assert data["properties"] == _tracked_properties(anonymous_id="v1", properties=ODD_PROPERTIES)
    assert data["properties"]["tags"] == ["alpha", "beta"] and data["properties"]["plan"] == "pro"
    assert data["values"] == {"ip": "192.0.2.1", "campaign": {"source": "pro"}}
    assert data["person_id"] == "87654321-4321-8765-4321-876543218765"
    assert RequestContext.from_dict(data).properties == data["properties"]


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"properties": {"card": object()}}, "properties.card"),
        ({"properties": {"n": [1, 2**70]}}, "properties.n[1]"),
        ({"properties": {"x": float("nan")}}, "properties.x"),
        ({"properties": {"name": "a\ud800b"}}, "properties.name"),
        ({"values": {"url": "https://x.example/\udcff"}}, "context.url"),
        ({"person_id": "p" * (MAX_ID_LENGTH + 1)}, "person_id"),
        ({"anonymous_id": " "}, "anonymous_id"),
    ],
)
def test_to_dict_refuses_what_no_event_could_carry(kwargs, path):
    ctx = RequestContext(**{"anonymous_id": "v1", **kwargs})
    with pytest.raises(InvalidEvent) as info:
        ctx.to_dict()
    assert info.value.path == path


def test_to_dict_leaves_a_generated_id_out():
    with fanout.context(properties={"tags": {"b"}}) as ctx:
        assert ctx.anonymous_id_generated
        assert ctx.to_dict() == {
            "person_id": None,
            "anonymous_id": None,
            "values": {},
            "properties": {"tags": ["b"]},
        }


def test_from_dict_without_an_id_gets_a_generated_one_like_any_context():
    header = {
        "person_id": None,
        "anonymous_id": None,
        "values": {"ip": "192.0.2.2"},
        "properties": {"plan": "pro"},
    }
    first, second = RequestContext.from_dict(header), RequestContext.from_dict(header)
    assert first.anonymous_id_generated and first.person_id is None
    assert first.anonymous_id is not None and uuid.UUID(first.anonymous_id).version == 4
    assert second.anonymous_id != first.anonymous_id  # one per restored context (per task)
    assert first.values == {"ip": "192.0.2.2"} and first.properties == {"plan": "pro"}
    with capture_events() as mem, use(first):
        fanout.track("task.ran")
        fanout.page("/welcome")
    assert [(e.kind, e.anonymous_id, e.person_id) for e in mem.events] == [
        ("track", first.anonymous_id, None),
        ("page", first.anonymous_id, None),
    ]
    # an id the header carries is the visitor's own, not generated
    assert RequestContext.from_dict({"anonymous_id": "v9"}).anonymous_id_generated is False


def test_from_dict_drops_ids_and_values_an_event_could_not_carry():
    header = json.loads(
        json.dumps(
            {  # as it arrives: decoded JSON from another producer
                "person_id": "p" * 5000,
                "anonymous_id": "v-ok",
                "values": {
                    "ip": "192.0.2.3",
                    "url": "https://x.example/\udcff",
                    "secret": "no",
                    "locale": None,
                },
                "properties": {
                    "plan": "pro",
                    "big": 2**70,
                    "name": "a\ud800",
                    "list": [1, 2**64],
                    "none": None,
                },
            }
        )
    )
    ctx = RequestContext.from_dict(header)
    assert (ctx.person_id, ctx.anonymous_id, ctx.anonymous_id_generated) == (None, "v-ok", False)
    assert ctx.values == {"ip": "192.0.2.3"}
    assert ctx.properties == {"plan": "pro", "none": None}
    with capture_events() as mem, use(ctx):
        fanout.track("task.ran")
    assert mem.events[0].anonymous_id == "v-ok" and mem.events[0].properties["plan"] == "pro"
    # nothing but an invalid id: a generated one, as a context with no id gets
    only_bad = RequestContext.from_dict({"person_id": "p" * 5000, "anonymous_id": "\t"})
    assert only_bad.person_id is None and only_bad.anonymous_id_generated
    # ids as fanout's own check takes them (an integer becomes its text)
    assert RequestContext.from_dict({"person_id": 42}).person_id == "42"
    assert RequestContext.from_dict({"person_id": True}).anonymous_id_generated


# -- the publish hook, on Celery's in-memory broker -----------------------------------------


@pytest.fixture
def memory_app(monkeypatch):
    from celery import Celery

    from fanout._throttle import Throttle
    from fanout.integrations import celery as integration

    monkeypatch.setattr(
        integration, "_throttle", Throttle(logging.getLogger("fanout")), raising=False
    )
    app = Celery("unit", broker="memory://")
    integration.setup(app)
    queue = f"fanout-unit-{uuid.uuid4().hex}"
    sent = []

    def publish(n=1):
        for _ in range(n):
            app.send_task("t.noop", queue=queue)
        with app.connection_for_read() as conn:
            q = conn.SimpleQueue(queue)
            try:
                while True:
                    try:
                        msg = q.get(timeout=0.2)
                    except q.Empty:
                        break
                    sent.append(msg.headers)
                    msg.ack()
            finally:
                q.close()
        return sent

    yield publish
    app.close()


def test_publish_carries_converted_properties(memory_app):
    with fanout.context(anonymous_id="v1", properties=ODD_PROPERTIES):
        headers = memory_app(2)
    assert len(headers) == 2
    expected = _tracked_properties(anonymous_id="v1", properties=ODD_PROPERTIES)
    for h in headers:
        assert json.loads(json.dumps(h["fanout_context"])) == h["fanout_context"]
        assert h["fanout_context"]["properties"] == expected
        assert h["fanout_context"]["anonymous_id"] == "v1"


def test_publish_never_fails_over_the_header_and_logs_once_without_the_value(memory_app, caplog):
    caplog.set_level(logging.WARNING, logger="fanout")
    props = {"auth": {b"sk_live_secret": 1}, "card": object()}  # over Redis, kombu raised TypeError
    with fanout.context(anonymous_id="v1", properties=props):
        headers = memory_app(3)
    assert len(headers) == 3  # all published
    assert all("fanout_context" not in h for h in headers)  # without the context
    records = [r for r in caplog.records if r.name == "fanout"]
    assert len(records) == 1, caplog.text  # once, not per task
    assert "properties.auth" in records[0].getMessage()
    assert "sk_live" not in caplog.text


def test_publish_never_fails_over_a_failing_to_dict(memory_app, caplog, monkeypatch):
    def broken(self):
        raise RuntimeError("sk_live_secret")

    monkeypatch.setattr(RequestContext, "to_dict", broken)
    caplog.set_level(logging.WARNING, logger="fanout")
    with fanout.context(anonymous_id="v1"):
        headers = memory_app(2)
    assert len(headers) == 2 and all("fanout_context" not in h for h in headers)
    assert [r.getMessage() for r in caplog.records if r.name == "fanout"] == [
        "fanout: the context cannot travel with a Celery task (RuntimeError); "
        "the task is published without it"
    ]
    assert "sk_live" not in caplog.text  # (Celery's own net logs the exception's text)


# -- real workers: a solo worker on a real Redis ---------------------------------------------

#: Tasks added to ``celery_app`` (tests/integrations/apps) for the worker: each tracks two
#: events, so one task's events can be seen to share their generated id.
TASKS_MODULE = """
import fanout
from celery_app import app


@app.task(name="visit")
def visit(i, anonymous_id=None):
    return [
        fanout.track("task.ran", anonymous_id=anonymous_id, properties={"i": i},
                     event_id=f"visit-{i}-track"),
        fanout.page("/welcome", anonymous_id=anonymous_id, event_id=f"visit-{i}-page"),
    ]
"""


@pytest.fixture
def solo_worker(collector, redis_url, celery_app, tmp_path):
    """A ``solo`` worker process running ``visit``; call it to SIGTERM it (its warm
    shutdown flushes) and get its output."""
    (tmp_path / "fanout_probe_tasks.py").write_text(TASKS_MODULE)
    env = app_env(collector, CELERY_TEST_BROKER=redis_url)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "--pool",
                "solo",
                "--include",
                "fanout_probe_tasks",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(tmp_path),
        )

    def stop() -> str:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        return log.read_text(errors="replace")

    try:
        yield stop
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)


N = 10


@needs_redis
def test_tasks_published_with_unencodable_properties_run_with_them_converted(
    collector, celery_app, solo_worker
):
    with fanout.context(anonymous_id="visitor-9", properties=ODD_PROPERTIES):
        carried = [celery_app.send_task("visit", args=(i,)) for i in range(N)]
    with fanout.context(anonymous_id="visitor-x", properties={"card": object()}):
        bare = [
            celery_app.send_task("visit", args=(i,), kwargs={"anonymous_id": "explicit"})
            for i in range(N, 2 * N)
        ]
    results = [r.get(timeout=30) for r in carried + bare]
    output = solo_worker()
    assert len(results) == 2 * N
    events = stored(collector)
    assert len(events) == 4 * N, output[-3000:]
    expected = _tracked_properties(anonymous_id="visitor-9", properties=ODD_PROPERTIES)
    by_id = {e["event_id"]: e for e in events}
    for i in range(N):  # the context travelled, converted as the request's own events
        track, page = by_id[f"visit-{i}-track"], by_id[f"visit-{i}-page"]
        assert track["properties"] == {**expected, "i": i}
        assert track["anonymous_id"] == page["anonymous_id"] == "visitor-9"
    for i in range(N, 2 * N):  # no context could travel: the task ran all the same
        track = by_id[f"visit-{i}-track"]
        assert track["properties"] == {"i": i} and track["anonymous_id"] == "explicit"


@needs_redis
def test_tasks_of_an_unidentified_visitor_get_a_generated_id_per_task(
    collector, celery_app, solo_worker
):
    from fanout.integrations.celery import HEADER

    with fanout.context(ip="192.0.2.2", url="https://shop.example/") as ctx:
        assert ctx.anonymous_id_generated  # a first-time visitor: no id of their own
        results = [celery_app.send_task("visit", args=(i,)) for i in range(N)]
    foreign = {"person_id": "p" * 5000, "anonymous_id": "v-ok", "properties": {"plan": "pro"}}
    results += [
        celery_app.send_task("visit", args=(i,), headers={HEADER: foreign}) for i in range(N, 2 * N)
    ]
    assert all(len(r.get(timeout=30)) == 2 for r in results)
    output = solo_worker()
    events = stored(collector)
    assert len(events) == 4 * N, output[-3000:]
    by_id = {e["event_id"]: e for e in events}
    ids = set()
    for i in range(N):
        track, page = by_id[f"visit-{i}-track"], by_id[f"visit-{i}-page"]
        anon = track["anonymous_id"]
        assert anon == page["anonymous_id"]  # one id for all events of one task
        assert uuid.UUID(anon).version == 4 and anon != ctx.anonymous_id
        assert track["person_id"] is None and track["context"]["url"] == "https://shop.example/"
        ids.add(anon)
    assert len(ids) == N  # generated once per task
    for i in range(N, 2 * N):  # another producer's too-long person_id: dropped
        track = by_id[f"visit-{i}-track"]
        assert track["person_id"] is None and track["anonymous_id"] == "v-ok"
        assert track["properties"] == {"plan": "pro", "i": i}
