"""A lean keep-alive HTTP/1.1 POST for providers' batches, on a plain socket, leaving the
delivery lane exactly for the network waits.

Why not httpx for this one call: a worker's CPU is taken from the application (they share
the GIL and the cores), and for a batch the HTTP client was the largest item of it. POSTing
the same 40 KB batch to the same local sink costs about 925 µs of CPU through
``httpx.Client.post``, about 400 µs through ``http.client`` (most of it parsing the answer's
headers with the ``email`` package and building an ``httpx.Request`` from the URL each
time), and about 145 µs here, most of it system calls: one ``sendall`` of the request line,
headers and body, and the answer read into one buffer and split by hand
(``benchmarks/cpu_per_event.py`` shows the effect on a whole delivery). And httpx blocks
deep inside httpcore, where fanout could only leave the delivery lane (``_lane.py``) around
the whole request, so httpx's own Python work ran outside it, competing with the app again.
Here the lane is left for the calls that wait on the network (connect, send, read the
answer) and everything else runs inside it.

What it speaks is the part of HTTP/1.1 a batch POST needs, as ``http.client`` speaks it:
the same request headers (``Host``, ``Accept-Encoding: identity``, the caller's,
``Content-Length``), answers framed by ``Content-Length``, ``chunked`` or the connection's
end, ``1xx`` interim answers skipped, ``Connection: close`` and HTTP/1.0 honoured, and the
answer's head capped so a hostile server cannot make the worker buffer without end.

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
#: Bytes asked of the socket per read: at least, and (for a body of known length) at most.
_READ: Final = 65536
_MAX_READ: Final = 1 << 20
#: What http.client refuses in a header value: a line break not followed by folding.
_ILLEGAL_VALUE = re.compile(rb"\n(?![ \t])|\r(?![ \t\n])").search
#: Request headers this module sends unless the caller gives its own.
_DEFAULTS: Final = frozenset({"host", "accept-encoding"})
#: Distinct URLs whose parsed form is kept (a provider posts to one or a few).
_MAX_TARGETS: Final = 64


class _Target:
    """What a URL resolves to, parsed once: the connection key, the request line's target,
    the ``Host`` header, and the ``httpx.Request`` every answer from it refers to."""

    __slots__ = ("key", "line", "host", "start", "request")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        self.key: _Key = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            host_text = host.encode("ascii")
        except UnicodeEncodeError:
            host_text = host.encode("idna")
        if b":" in host_text:
            host_text = b"[" + host_text + b"]"
        if port != (443 if scheme == "https" else 80):
            host_text += b":%d" % port
        # http.client's own checks on the request line: no control characters or spaces.
        if re.search(r"[\x00-\x20\x7f]", target):
            raise http.client.InvalidURL(f"URL can't contain control characters ({target!r})")
        self.line = b"POST " + target.encode("ascii") + b" HTTP/1.1\r\n"
        self.host = b"Host: " + host_text + b"\r\n"
        self.start = self.line + self.host + b"Accept-Encoding: identity\r\n"
        # One per URL, shared by the answers (providers only read it, through .url).
        self.request = httpx.Request("POST", url)


class _Connection:
    """One kept-alive socket (an answer read past its end closes it: nothing is carried
    over from one request to the next)."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

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
        """POST ``body``; raises ``OSError`` or ``http.client.HTTPException`` on failure."""
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            target = self._targets[url] = _Target(url)
        start = target.start
        if not _DEFAULTS.isdisjoint(map(str.lower, headers)):
            # The caller's own Host or Accept-Encoding replaces ours, as with http.client.
            names = {name.lower() for name in headers}
            start = target.line + (b"" if "host" in names else target.host)
            if "accept-encoding" not in names:
                start += b"Accept-Encoding: identity\r\n"
        request = start + _header_lines(headers) + b"Content-Length: %d\r\n\r\n" % len(body)
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
                with released():
                    # One write, as http.client does for a bytes body: no Nagle wait
                    # between the head and the body.
                    conn.sock.sendall(request + body)
                    status, fields, content, will_close = _read_answer(conn.sock)
            except _STALE:
                self._drop(key)
                if reused and attempt == 0:
                    conn = None
                    continue
                raise
            except BaseException:
                self._drop(key)
                raise
            if will_close:
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


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines, latin-1 as http.client writes them, refusing a line
    break in a value (a header injection) as it does."""
    out = []
    for name, value in headers.items():
        line = f"{name}: {value}\r\n".encode("latin-1")
        if "\r" in value or "\n" in value:
            if _ILLEGAL_VALUE(value.encode("latin-1")):
                raise ValueError(f"Invalid header value for {name!r}")
        if not name or ":" in name or "\r" in name or "\n" in name or " " in name:
            raise ValueError(f"Invalid header name {name!r}")
        out.append(line)
    return b"".join(out)


def _read_answer(
    sock: socket.socket,
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    """Read one answer: status, header fields, body, and whether the connection must be
    closed after it."""
    buf = b""
    while True:  # skip interim (1xx) answers, as http.client does
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise http.client.LineTooLong("answer head")
            data = sock.recv(_READ)
            if not data:
                if buf:
                    raise http.client.IncompleteRead(buf)
                raise http.client.RemoteDisconnected(
                    "Remote end closed connection without response"
                )
            buf += data
            end = buf.find(b"\r\n\r\n")
        head, buf = buf[:end], buf[end + 4 :]
        lines = head.split(b"\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/") or not code.isdigit() or rest[3:4] not in (b"", b" "):
            raise http.client.BadStatusLine(repr(status_line))
        status = int(code)
        if 100 <= status < 200 and status != 101:
            continue
        break
    fields: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and fields:  # an obsolete folded continuation
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise http.client.HTTPException(f"malformed header line {line[:100]!r}")
        value = value.strip()
        fields.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit():
                raise http.client.HTTPException("invalid Content-Length")
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif lower == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    if status in (204, 304) or status == 101:
        body = b""
        close = close or status == 101  # another protocol follows: not ours to reuse
    elif chunked:
        body, buf = _read_chunked(sock, buf)
    elif length is not None:
        body, buf = _read_exact(sock, buf, length)
    else:  # framed by the end of the connection
        parts = [buf]
        while data := sock.recv(_READ):
            parts.append(data)
        body, buf, close = b"".join(parts), b"", True
    if buf:  # bytes beyond the answer: the connection cannot be trusted with another
        close = True
    return status, fields, body, close


def _read_exact(sock: socket.socket, buf: bytes, n: int) -> tuple[bytes, bytes]:
    """``n`` bytes (``buf`` first, then the socket) and what was read past them. Reads at
    most ``_MAX_READ`` at a time, so a length the server made up allocates nothing up front;
    pieces are joined once, not concatenated read by read."""
    if len(buf) >= n:
        return buf[:n], buf[n:]
    parts = [buf]
    have = len(buf)
    while have < n:
        data = sock.recv(min(max(_READ, n - have), _MAX_READ))
        if not data:
            raise http.client.IncompleteRead(b"".join(parts), n - have)
        parts.append(data)
        have += len(data)
    joined = b"".join(parts)
    return joined[:n], joined[n:]


def _read_chunked(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    """A ``chunked`` body (trailers skipped); returns it and the bytes read past it."""
    parts: list[bytes] = []
    while True:
        end = buf.find(b"\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise http.client.LineTooLong("chunk size")
            data = sock.recv(_READ)
            if not data:
                raise http.client.IncompleteRead(b"".join(parts))
            buf += data
            end = buf.find(b"\r\n")
        size_text = buf[:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise http.client.IncompleteRead(b"".join(parts)) from None
        buf = buf[end + 2 :]
        if size == 0:
            break
        chunk, buf = _read_exact(sock, buf, size + 2)
        parts.append(chunk[:size])
    while True:  # trailer fields, up to the empty line
        end = buf.find(b"\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise http.client.LineTooLong("chunked trailer")
            data = sock.recv(_READ)
            if not data:
                raise http.client.IncompleteRead(b"".join(parts))
            buf += data
            end = buf.find(b"\r\n")
        line, buf = buf[:end], buf[end + 2 :]
        if not line:
            return b"".join(parts), buf


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection has been closed by the server (readable at
    EOF), checked before reuse as httpcore does."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
