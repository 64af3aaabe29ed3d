"""Delivery under faults, against a real HTTP front on 127.0.0.1 speaking the collector
protocol: blips, rate limits shared by several processes, outages, refused connections and a
hang at shutdown. Every test counts sent, delivered (unique ids the front accepted),
dead-lettered and duplicated, and asserts exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from _helpers import HangingProvider
from werkzeug import Request, Response
from werkzeug.serving import make_server

import fanout
from fanout._retry import Backoff, parse_retry_after


class Front:
    """A collector-protocol endpoint whose answer is decided per request by ``policy``.

    ``policy(request_number) -> None`` accepts the batch (200 with the collector's JSON
    summary); anything else is the Response to send instead. Accepted event ids are kept
    with their counts, so duplicates show.
    """

    def __init__(self, policy: Callable[[int], Response | None]) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0
        self.accepted: dict[str, int] = {}
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _app(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            self.requests += 1
            n = self.requests
        answer = self.policy(n)
        if answer is None:
            batch = json.loads(request.get_data())["batch"]
            with self.lock:
                for e in batch:
                    self.accepted[e["event_id"]] = self.accepted.get(e["event_id"], 0) + 1
            answer = Response(
                json.dumps({"accepted": len(batch), "duplicates": 0, "rejected": []}),
                content_type="application/json",
            )
        else:
            with self.lock:
                self.refused += 1
        return answer(environ, start_response)

    def __enter__(self) -> Front:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.accepted.values())


def _client(url: str, failures: list, **kwargs) -> fanout.Client:
    return fanout.Client(
        providers=["collector"],
        settings={"collector": {"url": url, "key": "sk_test"}},
        load_entry_points=False,
        register_atexit=False,
        environ={},
        on_error=failures.append,
        **kwargs,
    )


@pytest.fixture
def failures() -> Iterator[list]:
    yield []


def test_retry_after_zero_cannot_turn_backoff_off(failures):
    """503 with Retry-After: 0 for 3 s: on main, 691 requests and 236 of 1,000 dead-lettered."""
    start = time.monotonic()

    def blip(n: int) -> Response | None:
        if time.monotonic() - start < 3.0:
            return Response("busy", status=503, headers={"Retry-After": "0"})
        return None

    with Front(blip) as front:
        client = _client(front.url, failures, batch_size=100, flush_interval=0.05)
        ids = [client.track("blip", person_id="u", properties={"i": i}) for i in range(1000)]
        report = client.shutdown(30)
    r = report["collector"]
    assert (r.delivered, r.failed, r.dropped) == (1000, 0, 0)
    assert failures == []
    assert set(front.accepted) == set(ids) and front.duplicates == 0
    # One batch in flight at a time and at least 0.5 s between attempts: at most 7 refused
    # requests fit in the 3 s blip (plus one already under way when it ends).
    assert front.refused <= 8


@pytest.mark.parametrize("header", ["0", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "garbage"])
def test_retry_after_values_that_mean_now_still_wait_the_floor(header):
    backoff = Backoff(base=0.5, cap=30.0)
    hint = parse_retry_after(header)
    waits = [backoff.delay(0, hint) for _ in range(200)]
    assert min(waits) >= 0.5


def test_retry_after_is_capped_and_spread():
    backoff = Backoff(base=0.5, cap=30.0)
    waits = [backoff.delay(3, 300.0) for _ in range(500)]
    assert 60.0 <= min(waits) and max(waits) <= 75.0
    assert max(waits) - min(waits) > 5.0  # spread, so many clients do not return together
    plain = [backoff.delay(10) for _ in range(500)]
    assert min(plain) >= 0.5 and max(plain) <= 30.0


def test_connection_refused_for_a_while_costs_nothing(failures):
    """No server for ~4 s, then one on the same port: every event arrives, none twice."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}", failures, batch_size=50, flush_interval=0.05)
    ids = [client.track("down", person_id="u", properties={"i": i}) for i in range(200)]
    time.sleep(4)
    front = Front(lambda n: None)
    front.server.server_close()
    front.server = make_server("127.0.0.1", port, front._app, threaded=True)
    front.thread = threading.Thread(target=front.server.serve_forever, daemon=True)
    with front:
        report = client.shutdown(30)
    r = report["collector"]
    assert (r.delivered, r.failed, r.dropped) == (200, 0, 0)
    assert r.retries >= 2
    assert set(front.accepted) == set(ids) and front.duplicates == 0
    assert failures == []


def test_retry_budget_runs_out_then_dead_letters(failures):
    """FANOUT_RETRY_TIMEOUT bounds a batch's retries: then it is dead-lettered, counted."""
    with Front(lambda n: Response("down", status=500)) as front:
        client = _client(front.url, failures, batch_size=10, retry_timeout=1.5)
        for _i in range(10):
            client.track("x", person_id="u")
        report = client.flush(10)
        client.shutdown(1)
    r = report["collector"]
    assert (r.delivered, r.failed, r.pending) == (0, 10, 0)
    assert r.losses == {"retries_exhausted": 10}
    assert [len(f.events) for f in failures] == [10]
    assert "FANOUT_RETRY_TIMEOUT" in failures[0].error
    assert 2 <= front.requests <= 5  # 0.5 s floor between attempts, within 1.5 s


def test_batch_in_flight_at_the_shutdown_deadline_is_dead_lettered(make_client, failures):
    hanging = HangingProvider()
    client = make_client(providers=[hanging], on_error=failures.append, batch_size=5)
    for i in range(12):
        client.track("x", person_id="u", properties={"i": i})
    assert hanging.entered.wait(5)
    report = client.shutdown(0.5)
    r = report["hanging"]
    assert (r.delivered, r.dropped, r.pending) == (0, 12, 0)
    assert r.losses == {"shutdown_timeout": 12}
    assert sorted(len(f.events) for f in failures) == [5, 7]  # in flight, then the queue
    hanging.release.set()
    time.sleep(0.2)  # the worker's send returns now; it must not count the batch again
    assert client.stats()["hanging"].losses == {"shutdown_timeout": 12}
    assert client.stats()["hanging"].delivered == 0


RATE_LIMITED_SENDER = textwrap.dedent(
    """
    import sys, fanout
    c = fanout.Client(providers=["collector"], load_entry_points=False, batch_size=100,
                      flush_interval=0.05, settings={"collector": {"url": sys.argv[1], "key": "sk"}})
    for i in range(int(sys.argv[2])):
        c.track("limited", person_id="p", properties={"i": i})
    r = c.shutdown(120)["collector"]
    print(r.delivered, r.failed, r.dropped)
    """
)


@pytest.mark.slow
def test_a_rate_limit_shared_by_several_processes_loses_nothing(tmp_path):
    """4 processes, one key, a 400 events/s limit answered with 429 + Retry-After: 1."""
    lock = threading.Lock()
    window = {"start": time.monotonic(), "count": 0}
    limit = 400

    def limiter(n: int) -> Response | None:
        with lock:
            now = time.monotonic()
            if now - window["start"] >= 1.0:
                window["start"], window["count"] = now, 0
            if window["count"] + 100 > limit:
                return Response("slow down", status=429, headers={"Retry-After": "1"})
            window["count"] += 100
        return None

    script = tmp_path / "sender.py"
    script.write_text(RATE_LIMITED_SENDER)
    with Front(limiter) as front:
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), front.url, "1500"],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "FANOUT_MAX_RETRIES": "3"},  # 429s never count
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert [o.split() for o in outs] == [["1500", "0", "0"]] * 4
    assert len(front.accepted) == 6000 and front.duplicates == 0
    assert front.refused > 0  # the limit really was hit


@pytest.mark.slow
def test_a_sixty_second_outage_costs_nothing(failures):
    start = time.monotonic()

    def outage(n: int) -> Response | None:
        if time.monotonic() - start < 60.0:
            return Response("maintenance", status=500)
        return None

    with Front(outage) as front:
        client = _client(front.url, failures, batch_size=100, flush_interval=0.05)
        ids = []
        for i in range(600):
            ids.append(client.track("outage", person_id="u", properties={"i": i}))
            if i % 100 == 99:
                time.sleep(5)  # events keep arriving during the outage
        report = client.shutdown(120)
    r = report["collector"]
    assert (r.delivered, r.failed, r.dropped) == (600, 0, 0)
    assert set(front.accepted) == set(ids) and front.duplicates == 0
    assert failures == []


def test_a_200_that_is_not_the_collectors_answer_is_not_delivered(failures, caplog):
    """On main: 500 'delivered', 0 stored, no log line."""
    page = Response("<html>welcome</html>", status=200, content_type="text/html")
    with Front(lambda n: page) as front:
        client = _client(front.url, failures, batch_size=50, retry_timeout=1.2)
        for _i in range(50):
            client.track("x", person_id="u")
        report = client.shutdown(10)
    r = report["collector"]
    assert (r.delivered, r.failed) == (0, 50)
    assert r.losses == {"retries_exhausted": 50}
    assert "not a collector's reply" in failures[0].error
    assert front.accepted == {}
    assert any("not a collector's reply" in m for m in caplog.messages)


@pytest.mark.parametrize("status", [307, 308])
def test_307_and_308_redirects_are_followed_with_the_body(status, failures):
    def redirect(n: int) -> Response | None:
        return None

    with Front(redirect) as front:
        inner = front._app

        def app(environ, start_response):
            if environ["PATH_INFO"] == "/old/v1/batch":
                return Response("", status=status, headers={"Location": "/v1/batch"})(
                    environ, start_response
                )
            return inner(environ, start_response)

        front.server.app = app
        client = _client(front.url + "/old", failures, batch_size=20)
        ids = [client.track("x", person_id="u") for _ in range(20)]
        report = client.shutdown(10)
    assert report["collector"].delivered == 20
    assert set(front.accepted) == set(ids) and front.duplicates == 0


@pytest.mark.parametrize("status", [301, 302, 303])
def test_redirects_that_would_turn_a_post_into_a_get_are_permanent(status, failures):
    moved = Response("", status=status, headers={"Location": "https://collector.example/v1/batch?x=1"})
    with Front(lambda n: moved) as front:
        client = _client(front.url, failures, batch_size=10)
        for _ in range(10):
            client.track("x", person_id="u")
        report = client.shutdown(10)
    r = report["collector"]
    assert (r.delivered, r.failed, r.retries) == (0, 10, 0)
    assert front.requests == 1
    assert "https://collector.example/v1/batch" in failures[0].error
    assert "x=1" not in failures[0].error


def test_sync_mode_sends_to_every_provider_in_parallel_within_one_deadline(failures):
    """Three providers down (a hang, refused connections, 500s) and one healthy: one call
    returns within FANOUT_SYNC_TIMEOUT; on main it took 3.8 s+ per call, one after another."""
    release = threading.Event()

    def hang(n: int) -> Response | None:
        release.wait(30)
        return None

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
    with Front(hang) as hung, Front(lambda n: Response("down", status=500)) as down, Front(
        lambda n: None
    ) as healthy:
        names = ["hung", "refused", "down", "healthy"]
        urls = [hung.url, f"http://127.0.0.1:{refused}", down.url, healthy.url]
        plugin = _collector_aliases(names)
        client = fanout.Client(
            providers=names,
            plugins=[plugin],
            settings={n: {"url": u, "key": "sk"} for n, u in zip(names, urls, strict=True)},
            load_entry_points=False,
            register_atexit=False,
            environ={},
            on_error=failures.append,
            sync=True,
            sync_timeout=1.5,
            request_timeout=10,
        )
        t0 = time.monotonic()
        event_id = client.track("paid", person_id="u")
        elapsed = time.monotonic() - t0
        stats = client.stats()
        release.set()
        client.shutdown(2)
    assert elapsed < 10  # bounded by the sync timeout, not 3 x retries; no fine timing here
    assert set(healthy.accepted) == {event_id}
    assert {n: (stats[n].delivered, stats[n].failed) for n in names} == {
        "hung": (0, 1),
        "refused": (0, 1),
        "down": (0, 1),
        "healthy": (1, 0),
    }
    assert sorted(f.provider for f in failures) == ["down", "hung", "refused"]
    assert {f.reason for f in failures} <= {"sync_timeout", "retries_exhausted"}
    assert stats["hung"].losses == {"sync_timeout": 1}


def _collector_aliases(names):
    """A plugin registering the collector provider under several names (one per front)."""
    from fanout.provider import Setting
    from fanout.providers.collector import CollectorProvider

    class Plugin:
        @fanout.hookimpl
        def register_providers(self, register):
            for name in names:
                register(
                    name,
                    CollectorProvider.from_config,
                    settings=(Setting("url", required=True), Setting("key", required=True)),
                    auto_enable=False,
                )

    return Plugin()
