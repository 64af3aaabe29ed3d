"""A lean keep-alive HTTP/1.1 POST for providers' batches, on a plain socket, leaving the
delivery lane exactly for the network waits.

Why not httpx for this one call: a worker's CPU is taken from the application (they share
the GIL and the cores), and for a batch the HTTP client was the largest item of it. POSTing
the same 40 KB batch to the same local sink costs about 925 µs of CPU through
``httpx.Client.post``, about 400 µs through ``http.client`` (most of it parsing the answer's
headers with the ``email`` package and building an ``httpx.Request`` from the URL each
time), and about 300 µs here: one ``sendall`` of the request's head and body, the answer fed
to h11 as it arrives, and h11's state machine, which is most of it (the hand-written framing
this replaced took about 125 µs in the same run, so h11 costs about 175 µs more per batch,
under 2 µs per event at 100 events a batch: the price of not maintaining an HTTP parser;
``benchmarks/cpu_per_event.py`` shows the effect on a whole delivery). And httpx blocks
deep inside httpcore, where fanout could only leave the delivery lane (``_lane.py``) around
the whole request, so httpx's own Python work ran outside it, competing with the app again.
Here the lane is left for the calls that wait on the network (connect, send, each read of
the answer) and everything else runs inside it.

The HTTP/1.1 framing itself is h11's (the sans-I/O protocol machine httpcore is built on),
not hand-written: the request's head, answers framed by ``Content-Length``, ``chunked`` or
the connection's end, ``1xx`` interim answers, ``Connection: close`` and HTTP/1.0, obsolete
folded headers, and the answer's head capped (``max_incomplete_event_size``) so a hostile
server cannot make the worker buffer without end. This module only moves bytes between the
socket and h11, keeps one connection per scheme, host and port while h11 says it may be
reused (``start_next_cycle``), and sends a request once more on a fresh connection when a
kept-alive one turns out to have been closed by the server. h11's protocol errors are
raised as the ``http.client`` exceptions :mod:`fanout.http` classifies (``BadStatusLine``,
``IncompleteRead``, ``LineTooLong``), and a header value h11 refuses (a line break: a
header injection) as ``ValueError`` naming the header but not its value.

:class:`fanout.http.HttpSender` uses this for direct ``http://`` and ``https://``
connections (TLS set up by ``httpx.create_ssl_context``, so certificates are trusted exactly
as httpx trusts them); httpx keeps everything else: a transport passed in, and proxies
configured in the environment. The answer is returned as an ``httpx.Response``, so
providers read it exactly as before.
"""

from __future__ import annotations

import http.client
import re
import select
import socket
import ssl
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import h11
import httpx

from ._lane import released

__all__ = ["DirectPoster"]

_Key = tuple[str, str, int]
#: Failures of a kept-alive connection the server closed in the meantime: the request is
#: sent once more on a fresh connection (batches carry event ids, so a repeat is harmless).
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
#: The most an answer's status line and headers may take (http.client allows 100 headers
#: of 64 KB each; a batch endpoint's answer has a handful).
MAX_HEAD_BYTES: Final = 64 * 1024
#: Bytes asked of the socket per read.
_READ: Final = 65536
#: Distinct URLs whose parsed form is kept (a provider posts to one or a few).
_MAX_TARGETS: Final = 64
_END: Final = h11.EndOfMessage()


class _Target:
    """What a URL resolves to, parsed once: the connection key, the request target, the
    ``Host`` header, and the ``httpx.Request`` every answer from it refers to."""

    __slots__ = ("key", "target", "host", "request")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        self.key: _Key = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # http.client's own check on the request line (h11 would refuse it too, less clearly).
        if re.search(r"[\x00-\x20\x7f]", target):
            raise http.client.InvalidURL(f"URL can't contain control characters ({target!r})")
        try:
            host_text = host.encode("ascii")
        except UnicodeEncodeError:
            host_text = host.encode("idna")
        if b":" in host_text:
            host_text = b"[" + host_text + b"]"
        if port != (443 if scheme == "https" else 80):
            host_text += b":%d" % port
        self.target = target.encode("ascii")
        self.host = host_text
        # One per URL, shared by the answers (providers only read it, through .url).
        self.request = httpx.Request("POST", url)


class _Connection:
    """One kept-alive socket and the h11 state machine of the exchanges on it."""

    __slots__ = ("sock", "h11")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)

    def close(self) -> None:
        self.sock.close()


class DirectPoster:
    """One keep-alive connection per scheme, host and port; used by one worker thread."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._conns: dict[_Key, _Connection] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl: ssl.SSLContext | None = None

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``body``; raises ``OSError`` or ``http.client.HTTPException`` on failure,
        ``ValueError`` (before sending anything) for a header h11 refuses."""
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            target = self._targets[url] = _Target(url)
        request = _request(target, headers, len(body))
        key = target.key
        conn = self._conns.get(key)
        if conn is not None and _closed_by_peer(conn.sock):
            self._drop(key)
            conn = None
        for attempt in (0, 1):
            reused = conn is not None
            try:
                if conn is None:
                    with released():
                        conn = self._conns[key] = self._connect(*key)
                machine = conn.h11
                # One write, as http.client does for a bytes body: no Nagle wait between
                # the head and the body. (h11 hands a Content-Length body back unchanged.)
                data = machine.send(request) + machine.send(h11.Data(data=body))
                machine.send(_END)
                with released():
                    conn.sock.sendall(data)
                status, fields, content = _read_answer(conn)
            except _STALE:
                self._drop(key)
                if reused and attempt == 0:
                    conn = None
                    continue
                raise
            except BaseException:
                self._drop(key)
                raise
            if not _reusable(machine):
                self._drop(key)
            return httpx.Response(status, headers=fields, content=content, request=target.request)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        if scheme not in ("http", "https"):
            raise http.client.HTTPException(f"unsupported URL scheme {scheme!r}")
        sock = socket.create_connection((host, port), self.timeout)
        try:
            # What http.client and urllib3 set: the body never waits for a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                if self._ssl is None:
                    self._ssl = httpx.create_ssl_context()
                sock = self._ssl.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _drop(self, key: _Key) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)


def _request(target: _Target, headers: Mapping[str, str], length: int) -> h11.Request:
    """The request event: ``Host`` and ``Accept-Encoding: identity`` unless the caller gives
    its own (as http.client does), the caller's headers, and ``Content-Length``."""
    names = {name.lower() for name in headers}
    fields: list[tuple[bytes, bytes]] = []
    if "host" not in names:
        fields.append((b"Host", target.host))
    if "accept-encoding" not in names:
        fields.append((b"Accept-Encoding", b"identity"))
    for name, value in headers.items():
        # latin-1, as http.client writes header values (h11 would take ASCII only).
        fields.append((name.encode("ascii"), value.encode("latin-1")))
    fields.append((b"Content-Length", b"%d" % length))
    try:
        return h11.Request(method=b"POST", target=target.target, headers=fields)
    except h11.LocalProtocolError:
        # h11's message quotes the value, which may be a credential: name the header only.
        bad = next((n for n, v in headers.items() if not _valid_field(n, v)), "?")
        raise ValueError(f"Invalid header value for {bad!r}") from None


def _valid_field(name: str, value: str) -> bool:
    try:
        field = (name.encode("ascii"), value.encode("latin-1"))
        h11.Request(method=b"POST", target=b"/", headers=[(b"Host", b"x"), field])
    except (h11.LocalProtocolError, UnicodeEncodeError):
        return False
    return True


def _read_answer(conn: _Connection) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Feed the socket's bytes to h11 until the final answer has ended: its status, header
    fields and body. h11's refusals become the ``http.client`` errors fanout classifies."""
    machine = conn.h11
    sock = conn.sock
    response: h11.Response | None = None
    parts: list[bytes] = []
    received = False
    try:
        while True:
            event = machine.next_event()
            if event is h11.NEED_DATA:
                with released():
                    data = sock.recv(_READ)
                if not data and not received:
                    raise http.client.RemoteDisconnected(
                        "Remote end closed connection without response"
                    )
                received = True
                machine.receive_data(data)
            elif type(event) is h11.Response:
                response = event
            elif type(event) is h11.Data:
                parts.append(event.data)
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.InformationalResponse:
                continue  # 1xx interim answers are skipped, as http.client does
            else:  # PAUSED or ConnectionClosed before the answer's end
                raise h11.RemoteProtocolError(f"unexpected {event!r}")
    except h11.RemoteProtocolError as exc:
        if response is not None:
            raise http.client.IncompleteRead(b"".join(parts)) from None
        if exc.error_status_hint == 431:
            raise http.client.LineTooLong("answer head") from None
        raise http.client.BadStatusLine(str(exc)) from None
    assert response is not None  # h11 ends a message only after its head
    return response.status_code, response.headers.raw_items(), b"".join(parts)


def _reusable(machine: h11.Connection) -> bool:
    """Whether the connection may carry the next request, and if so, made ready for it:
    both sides done (not MUST_CLOSE or CLOSED: ``Connection: close``, HTTP/1.0, an answer
    framed by the connection's end) and nothing read past the answer."""
    if machine.our_state is not h11.DONE or machine.their_state is not h11.DONE:
        return False
    extra, closed = machine.trailing_data
    if extra or closed:
        return False
    machine.start_next_cycle()
    return True


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection has been closed by the server (readable at
    EOF), checked before reuse as httpcore does."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
