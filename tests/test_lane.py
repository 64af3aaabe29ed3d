"""The delivery lane: provider code runs one worker at a time, network waits outside it,
and neither a hung backend nor a provider hung in its own code stops another channel."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from _helpers import HangingProvider

from fanout import Event
from fanout._channel import Channel
from fanout._config import Delivery
from fanout._events import build_event
from fanout._lane import DeliveryLane, released
from fanout.http import HttpSender, raise_for_status

OPTS = Delivery(batch_size=10, flush_interval=0.05, retry_base=0.01, retry_cap=0.05)


def events(n: int, prefix: str = "e") -> list[Event]:
    return [build_event("track", name=f"{prefix}{i}", person_id="u") for i in range(n)]


def deliver_all(channels: Sequence[Channel], evs: Sequence[Event], timeout: float = 30) -> bool:
    for e in evs:
        for ch in channels:
            ch.emit(e)
    targets = [(ch, ch.request_flush()) for ch in channels]
    deadline = time.monotonic() + timeout
    done = all([ch.wait(t, deadline) for ch, t in targets])
    for ch in channels:
        ch.end_flush()
    return done


def shut(channels: Sequence[Channel]) -> None:
    for ch in channels:
        ch.begin_shutdown()
    for ch in channels:
        ch.finish_shutdown(time.monotonic() + 5)


class OverlapProvider:
    """Records how many sends run at once across every instance sharing ``state``."""

    def __init__(self, name: str, state: dict[str, int], lock: threading.Lock) -> None:
        self.name = name
        self.state, self.lock = state, lock
        self.received = 0

    def send(self, batch: Sequence[Event]) -> None:
        with self.lock:
            self.state["now"] += 1
            self.state["max"] = max(self.state["max"], self.state["now"])
        time.sleep(0.002)  # long enough for the other workers to try to overlap
        with self.lock:
            self.state["now"] -= 1
            self.received += len(batch)

    def close(self) -> None:
        pass


def test_provider_code_runs_one_worker_at_a_time():
    lane = DeliveryLane(stall=60)  # no holder counts as stalled here
    state, lock = {"now": 0, "max": 0}, threading.Lock()
    providers = [OverlapProvider(f"p{i}", state, lock) for i in range(4)]
    channels = [Channel(p.name, p, options=OPTS, lane=lane) for p in providers]
    try:
        assert deliver_all(channels, events(200))
    finally:
        shut(channels)
    assert state["max"] == 1
    for ch, p in zip(channels, providers, strict=True):
        report = ch.report()
        assert (p.received, report.delivered, report.failed, report.dropped) == (200, 200, 0, 0)


def test_a_provider_hung_in_its_own_code_does_not_stop_the_others():
    """The hung provider holds the lane; the others go on past it once it has held it
    longer than ``stall``, and deliver everything while it still hangs."""
    lane = DeliveryLane(stall=0.05)
    hung = HangingProvider()
    state, lock = {"now": 0, "max": 0}, threading.Lock()
    healthy = [OverlapProvider(f"p{i}", state, lock) for i in range(2)]
    hung_ch = Channel("hanging", hung, options=OPTS, lane=lane)
    channels = [Channel(p.name, p, options=OPTS, lane=lane) for p in healthy]
    try:
        for e in events(10, "h"):
            hung_ch.emit(e)
        assert hung.entered.wait(10)
        assert deliver_all(channels, events(100))
        assert not hung.release.is_set()  # still hanging while the others delivered
        assert [ch.report().delivered for ch in channels] == [100, 100]
        assert [p.received for p in healthy] == [100, 100]
        hung.release.set()
        assert deliver_all([hung_ch], [])
        assert hung_ch.report().delivered == 10
    finally:
        hung.release.set()
        shut([hung_ch, *channels])
    assert [ch.report().failed + ch.report().dropped for ch in channels] == [0, 0]


class _Server(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gate = threading.Event()
    bodies: dict[str, int] = {}

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/slow"):
            self.gate.wait(30)
        self.bodies[self.path] = self.bodies.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    httpd.daemon_threads = True
    _Server.gate = threading.Event()
    _Server.bodies = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Server
    finally:
        _Server.gate.set()
        httpd.shutdown()
        httpd.server_close()


class PostingProvider:
    """A provider that posts each batch through fanout.http, as the real ones do."""

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.sender = HttpSender(timeout=30)
        self.posted = 0

    def send(self, batch: Sequence[Event]) -> None:
        raise_for_status(self.sender.post(self.url, b"[]"))
        self.posted += len(batch)

    def close(self) -> None:
        self.sender.close()


def test_a_hung_backend_holds_no_lane(server):
    """A backend that does not answer keeps its channel waiting on the network, outside
    the lane: the other channel delivers everything meanwhile, though no holder is ever
    treated as stalled."""
    url, handler = server
    lane = DeliveryLane(stall=3600)
    slow = PostingProvider("slow", url + "/slow")
    fast = PostingProvider("fast", url + "/fast")
    slow_ch = Channel("slow", slow, options=OPTS, lane=lane)
    fast_ch = Channel("fast", fast, options=OPTS, lane=lane)
    try:
        for e in events(10, "s"):
            slow_ch.emit(e)
        deadline = time.monotonic() + 10
        while slow_ch.pending() and slow_ch._inflight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow_ch._inflight == 10  # its request is out, waiting on the backend
        assert deliver_all([fast_ch], events(50))
        assert (fast.posted, fast_ch.report().delivered) == (50, 50)
        assert handler.bodies.get("/fast") == 5 and "/slow" not in handler.bodies
        handler.gate.set()
        assert deliver_all([slow_ch], [])
        assert (slow.posted, slow_ch.report().delivered, handler.bodies["/slow"]) == (10, 10, 1)
    finally:
        handler.gate.set()
        shut([slow_ch, fast_ch])


def test_released_is_a_no_op_for_threads_not_holding_the_lane():
    lane = DeliveryLane()
    with released():
        assert not lane.holding()
    with lane.held():
        assert lane.holding()
        with released():
            assert not lane.holding()
        assert lane.holding()
    assert not lane.holding()
    assert lane.enter()
    lane.reset_after_fork()  # a forked child starts with a free lane
    assert lane.enter()
    lane.leave()
