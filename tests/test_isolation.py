"""Error isolation: broken providers enabled beside a healthy one."""

from __future__ import annotations

import threading
import time

from _helpers import HangingProvider, RaisingProvider
from werkzeug import Request, Response

from fanout.http import HttpSender, encode_json, raise_for_status


class HttpProvider:
    """A minimal real HTTP provider (what plugin authors write) posting to a local server."""

    def __init__(self, name, url):
        self.name = name
        self.url = url
        self.http = HttpSender(timeout=2)

    def send(self, batch):
        raise_for_status(self.http.post(self.url, encode_json([e.to_dict() for e in batch])))

    def close(self):
        self.http.close()


def test_healthy_provider_gets_everything_beside_raising_hanging_and_500(
    make_client, memory, httpserver
):
    hits = []
    lock = threading.Lock()

    def always_500(request: Request) -> Response:
        with lock:
            hits.append(1)
        return Response("boom", status=500)

    httpserver.expect_request("/v1/batch").respond_with_handler(always_500)
    failing_http = HttpProvider("http500", httpserver.url_for("/v1/batch"))
    hanging = HangingProvider()
    raising = RaisingProvider()
    client = make_client(
        providers=[raising, hanging, failing_http, memory],
        batch_size=10,
        flush_interval=0.05,
        max_retries=1000,
    )
    client._channels[2]._backoff = type(client._channels[2]._backoff)(0.01, 0.05)
    n = 500
    for i in range(n):
        client.track("tick", person_id=f"u{i % 7}", properties={"i": i})  # never raises
    started = time.monotonic()
    report = client.flush(timeout=3)
    elapsed = time.monotonic() - started
    # The hanging provider holds its request for 60 s, the raising and 500 ones retry 1000
    # times: flush ends at its one deadline, shared by all channels. Three stuck channels
    # with a deadline each would take 9 s; the 2 s margin is for a loaded machine.
    assert elapsed < 3 + 2, elapsed
    assert report["memory"].delivered == n
    assert sorted(e.properties["i"] for e in memory.events) == list(range(n))
    assert report.timed_out
    assert report["hanging"].pending > 0
    assert report["http500"].pending > 0 and report["http500"].delivered == 0
    assert report["raising"].delivered == 0 and report["raising"].retries > 0
    assert hanging.entered.is_set() and raising.calls > 0 and hits
    assert not report.ok


def test_shutdown_accounts_for_everything(make_client, memory):
    hanging = HangingProvider()
    client = make_client(providers=[hanging, memory], batch_size=5, flush_interval=0.05)
    for _ in range(40):
        client.track("x", person_id="u")
    started = time.monotonic()
    report = client.shutdown(timeout=1)
    assert time.monotonic() - started < 1 + 2  # not the hanging provider's 60 s
    assert report["memory"].delivered == 40
    h = report["hanging"]
    # one batch of 5 stuck in flight; the rest is dropped as shutdown_timeout, with a count
    assert h.losses.get("shutdown_timeout", 0) + h.pending == 40
    hanging.release.set()
    # calls after shutdown are counted, not raised
    client.track("late", person_id="u")
    assert client.stats()["memory"].losses["closed"] == 1
