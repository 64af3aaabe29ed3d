"""Connections at the HTTP level. The guard's deadlines: a connection that has not finished
a request's headers is closed at the header deadline however it trickles, an idle
kept-alive connection at the keep-alive timeout, and a connection whose requests keep
coming is never closed by either. Bodies that arrive in pieces (kept without copying when
they come at once) are stored whole, or refused whole. Each answer leaves in one segment."""

from __future__ import annotations

import json
import socket
import sys
import time

import pytest

from fanout.collector.app import AppOptions
from fanout.collector.guard import ServingLimits
from fanout.collector.protocol import Limits


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (sending ``trickle`` every
    0.2 s meanwhile)."""
    end = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < end:
        try:
            if trickle:
                sock.sendall(trickle)
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def _request(key: str, body: bytes) -> bytes:
    return (b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise AssertionError("the server closed the connection before answering")
    return chunk


def _answer(sock: socket.socket) -> bytes:
    (answer,) = _answers(sock, 1)
    return answer


def _answers(sock: socket.socket, n: int) -> list[bytes]:
    """The next ``n`` answers on ``sock`` (each framed by ``Content-Length``; a ``100
    Continue`` counts as one), however the reads split them."""
    sock.settimeout(10)
    data = b""
    answers: list[bytes] = []
    while len(answers) < n:
        while b"\r\n\r\n" not in data:
            data += _recv(sock)
        head, _, rest = data.partition(b"\r\n\r\n")
        lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        length = lengths[0] if lengths else 0
        while len(rest) < length:
            rest += _recv(sock)
        answers.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    assert data == b"", data[:200]
    return answers


def test_trickled_headers_are_closed_at_the_deadline_and_idle_connections_at_keep_alive(
        start_collector):
    # Each deadline far beyond the other, so the one that closes is the one under test.
    collector = start_collector(serving=ServingLimits(header_timeout=1.0, keep_alive=600))
    host, port = collector.url.removeprefix("http://").split(":")
    trickling = socket.create_connection((host, int(port)))
    trickling.sendall(b"POST /v1/batch HTTP/1.1\r\n")
    assert _closed_within(trickling, 10, trickle=b"X")
    trickling.close()

    collector = start_collector(serving=ServingLimits(header_timeout=600, keep_alive=1))
    host, port = collector.url.removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)))
    body = json.dumps({"batch": [{"event_id": "d1", "name": "x", "person_id": "p",
                                  "timestamp": "2024-05-01T10:00:00.000Z"}]}).encode()
    idle.sendall(_request(collector.key, body))
    assert _answer(idle).startswith(b"HTTP/1.1 200 ")
    assert _closed_within(idle, 10)
    idle.close()


def test_a_connection_that_keeps_sending_requests_outlives_both_deadlines(start_collector):
    collector = start_collector(serving=ServingLimits(header_timeout=0.5, keep_alive=1))
    host, port = collector.url.removeprefix("http://").split(":")
    busy = socket.create_connection((host, int(port)))
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 2.5:  # several deadlines' worth, 0.1 s apart
        body = json.dumps({"batch": [{"event_id": f"b{i}", "name": "x", "person_id": "p",
                                      "timestamp": "2024-05-01T10:00:00.000Z"}]}).encode()
        busy.sendall(_request(collector.key, body))
        answer = _answer(busy)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        i += 1
        time.sleep(0.1)
    busy.close()
    assert collector.store.count_events() == i


def _batch_body(n: int, prefix: str, pad: int = 0) -> bytes:
    return json.dumps({"batch": [
        {"event_id": f"{prefix}{i}", "name": "x", "person_id": "p",
         "timestamp": "2024-05-01T10:00:00.000Z", "properties": {"pad": "x" * pad}}
        for i in range(n)]}).encode()


def test_a_body_in_pieces_is_stored_whole_and_one_over_the_limit_refused(start_collector):
    # A small body whose first piece is kept as received, then more pieces appended to it;
    # a large one (over uvicorn's 64 KiB high-water mark); both after a request that put
    # the key in the key cache, so the second and third take the inline path.
    collector = start_collector()
    host, port = collector.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sent = 0
    for body in (_batch_body(1, "first"), _batch_body(20, "small"),
                 _batch_body(50, "large", pad=3000)):
        request = _request(collector.key, body)
        pieces = [request[:len(request) - len(body) + 7],
                  request[len(request) - len(body) + 7:len(request) - 100],
                  request[len(request) - 100:]]
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        sent += json.loads(answer.partition(b"\r\n\r\n")[2])["accepted"]
    assert sent == collector.store.count_events() == 71

    sock.close()


def test_a_chunked_body_over_the_limit_is_413_whether_it_comes_at_once_or_in_pieces(
        start_collector):
    # No Content-Length, so the size is only known while reading: the limit is checked
    # on the one piece that came at once and on the pieces appended.
    collector = start_collector(limits=Limits(max_batch_bytes=10_000))
    host, port = collector.url.removeprefix("http://").split(":")
    body = _batch_body(40, "big", pad=500)
    assert len(body) > 10_000
    head = (b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + collector.key.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    for pieces in ([body], [body[:6000], body[6000:]]):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(head)
        for piece in pieces:
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            time.sleep(0.05)
        sock.sendall(b"0\r\n\r\n")
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        sock.close()
    assert collector.store.count_events() == 0


def test_a_body_that_stalls_is_408_at_the_body_deadline_and_stores_nothing(start_collector):
    # Twice: once with a key the key cache does not know yet (its body is read after the
    # key check in a worker thread) and once with one it remembers (read at once).
    collector = start_collector(options=AppOptions(body_timeout=0.5))
    host, port = collector.url.removeprefix("http://").split(":")
    body = _batch_body(5, "stalled")
    for _ in range(2):
        sock = socket.create_connection((host, int(port)))
        request = _request(collector.key, body)
        sock.sendall(request[:-10])  # all but the body's last 10 bytes, then nothing
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        sock.close()
    assert collector.store.count_events() == 0
    # The key is still good: the same batch sent whole is stored.
    sock = socket.create_connection((host, int(port)))
    sock.sendall(_request(collector.key, body))
    assert _answer(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()
    assert collector.store.count_events() == 5


def _data_segments_in(sock: socket.socket) -> int:
    """TCP segments with data this socket has received (Linux ``tcp_info``'s
    ``tcpi_data_segs_in``, a counter of the kernel's, at byte 152)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return int.from_bytes(info[152:156], sys.byteorder)


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK") or not hasattr(socket, "TCP_INFO"),
                    reason="TCP_CORK and TCP_INFO are Linux's")
def test_each_answer_leaves_in_one_segment_and_100_continue_at_once(start_collector):
    # uvicorn writes an answer's head and body apart; the guard corks the socket from the
    # request's headers to the answer's end, so the client receives (and is woken for)
    # one segment per answer: 2 per answer without it (the test fails so).
    collector = start_collector()
    host, port = collector.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    before = _data_segments_in(sock)
    for i in range(5):
        sock.sendall(_request(collector.key, _batch_body(2, f"seg{i}_")))
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _answer(sock).startswith(b"HTTP/1.1 200 ")
    assert _data_segments_in(sock) - before == 6
    assert collector.store.count_events() == 10
    # Pipelined (sent together, answered in order): still one segment per answer.
    before = _data_segments_in(sock)
    sock.sendall(b"".join(_request(collector.key, _batch_body(2, f"piped{i}_"))
                          for i in range(3)))
    for answer in _answers(sock, 3):
        assert answer.startswith(b"HTTP/1.1 200 ")
    assert _data_segments_in(sock) - before == 3
    assert collector.store.count_events() == 16

    # A client that waits for "100 Continue" before its body gets it at once: that
    # request is not corked (corked, the kernel would hold the interim answer for its 200
    # ms ceiling on every such request).
    body = _batch_body(3, "expect_")
    head, _, _ = _request(collector.key, body).partition(b"\r\n\r\n")
    expecting = head + b"\r\nExpect: 100-continue\r\n\r\n"
    sock.sendall(expecting)
    sock.settimeout(10)
    interim = b""
    while b"\r\n\r\n" not in interim:
        interim += _recv(sock)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    assert _answer(sock).startswith(b"HTTP/1.1 200 ")
    # Deterministically: a client may send the body without waiting. Uncorked, the
    # interim answer, the head and the body leave as 3 segments; had the request been
    # corked, all three would leave together at its end, in 1.
    before = _data_segments_in(sock)
    eager = _batch_body(3, "eager_")
    eager_head, _, _ = _request(collector.key, eager).partition(b"\r\n\r\n")
    sock.sendall(eager_head + b"\r\nExpect: 100-continue\r\n\r\n" + eager)
    interim, answer = _answers(sock, 2)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert _data_segments_in(sock) - before == 3
    sock.close()
    assert collector.store.count_events() == 22


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_request_under_way_is_neither_cut_by_the_header_deadline_nor_evicted(
        start_collector, pipelined):
    # Its headers done, a request waits for its body (up to the body deadline): the header
    # deadline no longer applies to it, and at the connection cap the guard evicts the
    # oldest idle or header-waiting connection, never it; also when it was pipelined
    # behind another request and started once that one was answered.
    collector = start_collector(serving=ServingLimits(header_timeout=0.5, keep_alive=600,
                                                      max_connections=16),
                                options=AppOptions(body_timeout=30))
    host, port = collector.url.removeprefix("http://").split(":")
    body = _batch_body(4, "slow")
    request = _request(collector.key, body)
    busy = socket.create_connection((host, int(port)))
    before = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n" if pipelined else b""
    busy.sendall(before + request[:-len(body)])  # the headers, the body well after 0.5 s
    if pipelined:
        assert _answer(busy).startswith(b"HTTP/1.1 200 ")
    time.sleep(1.5)
    idle = [socket.create_connection((host, int(port))) for _ in range(16)]  # one past the cap
    health = socket.create_connection((host, int(port)))  # accepted after them
    health.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _answer(health).startswith(b"HTTP/1.1 200 ")
    busy.sendall(body)
    assert _answer(busy).startswith(b"HTTP/1.1 200 ")
    assert collector.store.count_events() == 4
    # The two oldest idle connections made room for the last two.
    assert _closed_within(idle[0], 10) and _closed_within(idle[1], 10)
    for sock in [busy, health, *idle]:
        sock.close()


@pytest.mark.parametrize("closed_by", ["header deadline", "connection cap"])
def test_a_connection_idle_after_its_answer_waits_under_the_header_deadline_again(
        start_collector, closed_by):
    # After each answer the guard re-arms the header deadline (keep-alive far beyond it)
    # and makes the connection evictable again.
    deadline = 0.5 if closed_by == "header deadline" else 600
    collector = start_collector(serving=ServingLimits(header_timeout=deadline, keep_alive=600,
                                                      max_connections=16))
    host, port = collector.url.removeprefix("http://").split(":")
    answered = socket.create_connection((host, int(port)))
    answered.sendall(_request(collector.key, _batch_body(2, "idle")))
    assert _answer(answered).startswith(b"HTTP/1.1 200 ")
    others = ([socket.create_connection((host, int(port))) for _ in range(16)]  # one past
              if closed_by == "connection cap" else [])
    assert _closed_within(answered, 10)  # at the cap, the oldest evictable: this idle one
    for sock in [answered, *others]:
        sock.close()
    assert collector.store.count_events() == 2
