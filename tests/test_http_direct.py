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


def _canned_server(answers: list[bytes]):
    """A raw server answering the n-th request on a connection with ``answers[n]`` (one
    connection at a time); returns (url, bodies received, connections accepted, stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    bodies: list[bytes] = []
    accepted: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            if done.is_set():
                conn.close()
                return
            accepted.append(conn)
            data = b""
            for answer in answers:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if b"\r\n\r\n" not in data:
                    break
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(data) < length:
                    data += conn.recv(65536)
                bodies.append(data[:length])
                data = data[length:]
                conn.sendall(answer)
                if b"connection: close" in answer.lower() or b"HTTP/1.0" in answer[:8]:
                    break
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        socket.create_connection(srv.getsockname(), timeout=5).close()  # wakes accept()
        thread.join(5)
        srv.close()
        for conn in accepted:
            conn.close()
        assert not thread.is_alive()

    return f"http://127.0.0.1:{srv.getsockname()[1]}/x", bodies, accepted, stop


CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n'
INTERIM = b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}'
GZIPPED = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(
    gzip.compress(b'{"a":1}')
) + gzip.compress(b'{"a":1}')
CLOSE = b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\n{"a":1}'
HTTP10 = b'HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}'
UNFRAMED = b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"a":1}'
FOLDED = b'HTTP/1.1 200 OK\r\nX-Long: one\r\n two\r\nContent-Length: 7\r\n\r\n{"a":1}'


@pytest.mark.parametrize(
    ("answer", "kept_alive"),
    [
        (CHUNKED, True),
        (INTERIM, True),
        (GZIPPED, True),
        (FOLDED, True),
        (CLOSE, False),
        (HTTP10, False),
        (UNFRAMED, False),
    ],
    ids=["chunked", "interim-1xx", "gzip-answer", "folded-header", "close", "http-1.0", "unframed"],
)
def test_answers_framed_every_way_http_allows(answer, kept_alive):
    """The lean path reads each framing http.client reads, and keeps a connection only
    when the answer allows it: three posts, each sent once."""
    url, bodies, accepted, stop = _canned_server([answer] * 3)
    sender = HttpSender(timeout=5)
    try:
        for i in range(3):
            response = sender.post(url, b"%d" % i)
            assert response.status_code == 200
            assert response.json() == {"a": 1}
    finally:
        sender.close()
        stop()
    assert bodies == [b"0", b"1", b"2"]
    assert len(accepted) == (1 if kept_alive else 3)


def test_garbage_answers_are_retryable_and_drop_the_connection():
    url, bodies, accepted, stop = _canned_server([b"SMTP ready\r\n\r\n"] * 2)
    sender = HttpSender(timeout=5)
    try:
        for _ in range(2):
            with pytest.raises(RetryableError, match="BadStatusLine"):
                sender.post(url, b"{}")
    finally:
        sender.close()
        stop()
    assert bodies == [b"{}", b"{}"] and len(accepted) == 2


def test_a_line_break_in_a_header_value_is_refused_before_sending(httpserver):
    seen = record(httpserver)
    sender = HttpSender(headers={"X-Extra": "1\r\nX-Injected: yes"})
    try:
        with pytest.raises(ValueError, match="Invalid header value"):
            sender.post(httpserver.url_for("/batch"), b"{}")
    finally:
        sender.close()
    assert seen == []


def test_the_callers_host_and_accept_encoding_replace_the_defaults():
    """As with http.client: one Host header, the caller's when it gives one."""
    heads: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            for _ in range(2):
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                heads.append(head)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/x"
    plain = HttpSender(timeout=5)
    try:
        assert plain.post(url, b"1").status_code == 200
        answer = plain.post(url, b"2", headers={"host": "example.test", "Accept-Encoding": "br"})
        assert answer.status_code == 200
    finally:
        plain.close()
        thread.join(5)
        srv.close()
    first, second = (h.lower().split(b"\r\n") for h in heads)
    port = url.split(":")[2].split("/")[0]
    assert [h for h in first if h.startswith(b"host:")] == [b"host: 127.0.0.1:" + port.encode()]
    assert b"accept-encoding: identity" in first
    assert [h for h in second if h.startswith(b"host:")] == [b"host: example.test"]
    assert [h for h in second if h.startswith(b"accept-encoding:")] == [b"accept-encoding: br"]


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 made by openssl (skips where openssl is missing)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian package openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_https_is_verified_and_kept_alive(tmp_path, monkeypatch):
    """The lean path over TLS: certificates checked as httpx checks them (SSL_CERT_FILE
    honoured), the connection kept alive; an untrusted certificate is a retryable failure
    and nothing reaches the server."""
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    cert, key = _self_signed(tmp_path)
    bodies: list[bytes] = []
    peers: set[int] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            peers.add(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/x"
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusting = HttpSender(timeout=5)
        with pytest.raises(RetryableError, match="connection failed.*SSL"):
            untrusting.post(url, b"0")
        untrusting.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        sender = HttpSender(timeout=5)
        try:
            for i in (1, 2, 3):
                assert sender.post(url, b"%d" % i).json() == {}
            assert sender._direct is not None
        finally:
            sender.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert bodies == [b"1", b"2", b"3"]
    assert len(peers) == 1  # one kept-alive connection for the three


def test_large_answers_and_a_made_up_length():
    """A body read in pieces (by length and chunked) arrives whole; a length the server
    never sends is a retryable failure, not a huge allocation."""
    big = b'{"a":"' + b"x" * 300_000 + b'"}'
    by_length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(big)
        + big
        + b"\r\n0\r\n\r\n"
    )
    lying = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 999999999999\r\n\r\n{}"
    for answer in (by_length, chunked):
        url, bodies, accepted, stop = _canned_server([answer] * 2)
        sender = HttpSender(timeout=5)
        try:
            for _ in range(2):
                assert sender.post(url, b"{}").content == big
        finally:
            sender.close()
            stop()
        assert bodies == [b"{}", b"{}"] and len(accepted) == 1
    url, bodies, accepted, stop = _canned_server([lying])
    sender = HttpSender(timeout=5)
    try:
        with pytest.raises(RetryableError, match="IncompleteRead"):
            sender.post(url, b"{}")
    finally:
        sender.close()
        stop()
    assert bodies == [b"{}"]


def test_a_refused_header_names_the_header_but_never_its_value(httpserver):
    """h11 refuses the value; the error must not carry it (it may be a credential)."""
    seen = record(httpserver)
    sender = HttpSender(headers={"Authorization": "Bearer s3cret\nX-Injected: yes"})
    try:
        with pytest.raises(ValueError, match="Invalid header value for 'Authorization'") as err:
            sender.post(httpserver.url_for("/batch"), b"{}")
    finally:
        sender.close()
    # Not in the message, and h11's own message (which quotes it) is not shown in a traceback.
    assert "s3cret" not in str(err.value) and err.value.__suppress_context__
    assert seen == []


def test_an_endless_head_is_capped_and_bytes_past_an_answer_drop_the_connection():
    """A head well beyond MAX_HEAD_BYTES (checked between reads) is a retryable failure, not an unbounded buffer; an
    answer followed by bytes nobody asked for is returned, but its connection is not
    trusted with the next request."""
    from fanout._http1 import MAX_HEAD_BYTES

    endless = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * (3 * MAX_HEAD_BYTES) + b"\r\n\r\n"
    url, bodies, accepted, stop = _canned_server([endless])
    sender = HttpSender(timeout=5)
    try:
        with pytest.raises(RetryableError, match="LineTooLong"):
            sender.post(url, b"{}")
    finally:
        sender.close()
        stop()
    assert bodies == [b"{}"] and len(accepted) == 1
    extra = b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}HTTP/1.1 200 OK\r\n'
    url, bodies, accepted, stop = _canned_server([extra] * 2)
    sender = HttpSender(timeout=5)
    try:
        for _ in range(2):
            assert sender.post(url, b"{}").json() == {"a": 1}
    finally:
        sender.close()
        stop()
    assert bodies == [b"{}", b"{}"] and len(accepted) == 2
