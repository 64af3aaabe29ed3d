"""fanout.http's shared sender, against a real local server."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fanout.http import HttpSender


class _KeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, so the client's socket is still open after the answer."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_sockets_have_nodelay_like_urllib3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TCP_NODELAY a body waits behind its headers for the server's delayed ACK."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sender = HttpSender()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        response = sender.post(url, b"{}")
        if "network_stream" in response.extensions:  # httpx's path
            sock = response.extensions["network_stream"].get_extra_info("socket")
        else:  # the lean path (http.client sets TCP_NODELAY when it connects)
            assert sender._direct is not None
            (conn,) = sender._direct._conns.values()
            sock = conn.sock
        assert response.status_code == 200 and response.content == b"ok"
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sender.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()
