"""A lean keep-alive HTTP/1.1 POST for providers' batches, on the standard library's
``http.client``, leaving the delivery lane exactly for the network waits.

Why not httpx for this one call: a worker's CPU is taken from the application (they share
the GIL and the cores), and for a batch the HTTP client was the largest item of it. POSTing
the same 44 KB PostHog batch to the same local sink costs about 925 µs of CPU through
``httpx.Client.post`` and about 300 µs through ``http.client`` (``benchmarks/
cpu_per_event.py`` shows the effect on a whole delivery). And httpx blocks deep inside
httpcore, where fanout could only leave the delivery lane (``_lane.py``) around the whole
request, so httpx's own Python work ran outside it, competing with the app again. Here the
lane is left for the calls that wait on the network (connect, send, read the response) and
everything else runs inside it.

:class:`fanout.http.HttpSender` uses this for direct ``http://`` and ``https://``
connections (TLS set up by ``httpx.create_ssl_context``, so certificates are trusted exactly
as httpx trusts them); httpx keeps everything else: a transport passed in, and proxies
configured in the environment. The answer is returned as an ``httpx.Response``, so
providers read it exactly as before.
"""

from __future__ import annotations

import http.client
import select
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from ._lane import released

__all__ = ["DirectPoster"]

_Key = tuple[str, str, int]
#: Failures of a kept-alive connection the server closed in the meantime: the request is
#: sent once more on a fresh connection (batches carry event ids, so a repeat is harmless).
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class DirectPoster:
    """One keep-alive connection per scheme, host and port; used by one worker thread."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._conns: dict[_Key, http.client.HTTPConnection] = {}
        self._ssl: ssl.SSLContext | None = None

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``body``; raises ``OSError`` or ``http.client.HTTPException`` on failure."""
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (scheme, host, port)
        conn = self._conns.get(key)
        if conn is not None and _closed_by_peer(conn):
            conn.close()
            conn = None
        for attempt in (0, 1):
            reused = conn is not None
            if conn is None:
                conn = self._conns[key] = self._connect(scheme, host, port)
            try:
                with released():
                    conn.request("POST", target, body=body, headers=dict(headers))
                    response = conn.getresponse()
                    content = response.read()
            except _STALE:
                self._drop(key)
                if reused and attempt == 0:
                    conn = None
                    continue
                raise
            except BaseException:
                self._drop(key)
                raise
            if response.will_close:
                self._drop(key)
            return httpx.Response(
                response.status,
                headers=response.getheaders(),
                content=content,
                request=httpx.Request("POST", url),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
        if scheme != "http":
            raise http.client.HTTPException(f"unsupported URL scheme {scheme!r}")
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _drop(self, key: _Key) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection has been closed by the server (readable at
    EOF), checked before reuse as httpcore does."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
