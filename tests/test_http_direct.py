"""fanout.http's lean HTTP/1.1 path: it sends what httpx sends, keeps connections alive,
reconnects when the server closed one, and classifies failures the same way."""

from __future__ import annotations

import gzip
import socket
import threading

import httpx
import pytest
from werkzeug import Request, Response

from fanout import RetryableError
from fanout.http import HttpSender, raise_for_status


def record(httpserver, path="/batch"):
    seen = []

    def handler(request: Request) -> Response:
        seen.append(
            {
                "body": request.get_data(),
                "query": request.query_string.decode(),
                "auth": request.headers.get("Authorization"),
                "type": request.headers.get("Content-Type"),
                "encoding": request.headers.get("Content-Encoding"),
                "agent": request.headers.get("User-Agent"),
                "extra": request.headers.get("X-Extra"),
            }
        )
        return Response('{"status": 1}', 200, content_type="application/json")

    httpserver.expect_request(path, method="POST").respond_with_handler(handler)
    return seen


def test_direct_path_sends_what_httpx_sends(httpserver):
    seen = record(httpserver)
    url = httpserver.url_for("/batch")
    body = b'{"batch": [' + b",".join([b'{"e": "x"}'] * 200) + b"]}"
    direct = HttpSender(gzip_min_bytes=100, headers={"X-Extra": "1"})
    via_httpx = HttpSender(
        gzip_min_bytes=100, headers={"X-Extra": "1"}, transport=httpx.HTTPTransport()
    )
    try:
        for sender in (direct, via_httpx):
            response = sender.post(
                url,
                body,
                params={"verbose": "1", "ip": "0"},
                auth=("secret", ""),
                content_type="application/x-www-form-urlencoded",
            )
            raise_for_status(response)
            assert response.status_code == 200 and response.json() == {"status": 1}
    finally:
        direct.close()
        via_httpx.close()
    assert direct._direct is None and via_httpx._direct is None  # closed; httpx never had one
    assert len(seen) == 2
    a, b = seen
    assert gzip.decompress(a.pop("body")) == gzip.decompress(b.pop("body")) == body
    assert a == b
    assert a["query"] == "verbose=1&ip=0" and a["auth"].startswith("Basic ")
    assert a["encoding"] == "gzip" and a["agent"].startswith("fanout/")


def test_keep_alive_and_reconnect_after_the_server_closed_an_idle_connection():
    """A raw server that answers one request per connection without saying so (no
    ``Connection: close``) and then closes it: the next post must notice and reconnect."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    connections = []
    answered = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            connections.append(conn)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(
                [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][
                    0
                ].split(b":")[1]
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            answered.append(rest)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/x"
    sender = HttpSender(timeout=5)
    try:
        for i in range(3):
            assert sender.post(url, b"%d" % i).status_code == 200
    finally:
        sender.close()
        srv.close()
    assert answered == [b"0", b"1", b"2"]  # each sent once, none lost, none twice
    assert len(connections) == 3


def test_refused_and_timed_out_are_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = HttpSender(timeout=0.5)
    with pytest.raises(RetryableError, match="connection failed"):
        sender.post(f"http://127.0.0.1:{port}/x", b"{}")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        with pytest.raises(RetryableError, match="timed out after 0.5s"):
            sender.post(f"http://127.0.0.1:{silent.getsockname()[1]}/x", b"{}")
    finally:
        silent.close()
        sender.close()


def test_proxies_in_the_environment_keep_httpx(monkeypatch, httpserver):
    seen = record(httpserver)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    sender = HttpSender()
    try:
        assert sender.post(httpserver.url_for("/batch"), b"{}").status_code == 200
        assert sender._direct is None and sender._client is not None
    finally:
        sender.close()
    assert len(seen) == 1
