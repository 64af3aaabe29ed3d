"""HTTP for providers: one fork-safe httpx client, gzip, and failure classification.

Every HTTP provider (the built-in ``collector`` and the vendor plugins) needs the same
three things, so they live here once:

- a keep-alive :class:`httpx.Client` that is never shared with a forked child (the child
  builds its own on first use instead of writing into the parent's sockets);
- gzip above a size threshold, for backends that accept ``Content-Encoding: gzip``;
- the mapping from transport errors and status codes to the errors the channel expects:
  timeouts, connection errors, 408, 429 and 5xx are :class:`RetryableError` (with the
  ``Retry-After`` hint), 413 is :class:`BatchTooLarge`, any other 4xx is
  :class:`PermanentError`.

Error messages carry the status and a short excerpt of the response body, never request
headers, so API keys sent in headers cannot leak into logs or dead letters.
"""

from __future__ import annotations

import base64
import gzip as _gzip
import http.client
import os
import socket
import urllib.request
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

import httpx

from ._exceptions import BatchTooLarge, PermanentError, RetryableError
from ._http1 import DirectPoster
from ._json import dumps
from ._lane import released
from ._retry import parse_retry_after

__all__ = [
    "HttpProvider",
    "HttpSender",
    "USER_AGENT",
    "encode_json",
    "raise_for_status",
    "require_json_reply",
]

from .__about__ import __version__

USER_AGENT = f"fanout/{__version__} (+https://pypi.org/project/fanout-analytics/)"
_EXCERPT = 300
#: Same-host 307/308 redirects followed per request.
MAX_REDIRECTS: Final = 3
#: What urllib3 (and so every ``requests``-based vendor SDK) sets on its sockets. httpcore
#: does not, so without it a request's body waits behind its headers for the server's
#: delayed ACK (Nagle's algorithm): measured here as up to twice the latency per request.
_NODELAY: Final = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
#: gzip level for request bodies. Level 1 compresses a 44 KB batch of JSON events in about a
#: third of level 5's CPU (98 against 277 µs) to a body 8 % larger (2,637 against 2,440
#: bytes); for a worker sharing the app's cores that is the better trade.
GZIP_LEVEL: Final = 1


def encode_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON; the values are already JSON-safe (validated on the caller's side).

    fanout's own encoder (orjson where installed, the standard library otherwise), so
    plugins get the same speed and the same output as the built-in providers.
    """
    return dumps(payload)


class HttpSender:
    """A POST-only HTTP client for one provider, used from that provider's worker thread."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        gzip_min_bytes: int | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.gzip_min_bytes = gzip_min_bytes
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._transport = transport
        self._client: httpx.Client | None = None
        self._direct: DirectPoster | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<HttpSender timeout={self.timeout}>"  # headers may hold keys: never shown

    def _http(self) -> httpx.Client:
        if self._client is None or self._pid != os.getpid():
            # In a forked child the inherited client's sockets belong to the parent: drop
            # the reference without closing it, and start afresh.
            self._pid = os.getpid()
            transport = self._transport
            if transport is None and not urllib.request.getproxies():
                # An explicit transport turns off httpx's proxies from the environment, so
                # it is only used when there are none to honour.
                transport = httpx.HTTPTransport(socket_options=_NODELAY)
            self._client = httpx.Client(
                timeout=self.timeout,
                headers=self._headers,
                transport=transport,
                follow_redirects=False,
            )
        return self._client

    def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        gzip: bool | None = None,
        params: Mapping[str, str] | None = None,
        auth: tuple[str | bytes, str | bytes] | None = None,
    ) -> httpx.Response:
        """POST ``body``; transport failures raise :class:`RetryableError`.

        ``gzip=None`` compresses when ``gzip_min_bytes`` is set and the body is at least
        that large. The response is returned whatever its status: pass it to
        :func:`raise_for_status`, or inspect it first when the backend reports per-event
        results in a 200.
        """
        hdrs = {"Content-Type": content_type, **(headers or {})}
        if gzip is None:
            gzip = self.gzip_min_bytes is not None and len(body) >= self.gzip_min_bytes
        if gzip:
            body = _gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            hdrs["Content-Encoding"] = "gzip"
        try:
            response = self._send(url, body, hdrs, params, auth)
            # 307 and 308 keep the method and body: follow them (an http -> https redirect
            # at a load balancer). 301/302/303 would turn the POST into a GET: never
            # followed; raise_for_status makes them permanent, naming where they point.
            for _ in range(MAX_REDIRECTS):
                if response.status_code not in (307, 308) or "location" not in response.headers:
                    break
                target = response.url.join(response.headers["location"])
                if target.host != response.url.host:
                    break  # never carry credentials to another host
                response = self._send(str(target), body, hdrs, None, auth)
            return response
        except httpx.TimeoutException as exc:
            raise RetryableError(
                f"timed out after {self.timeout}s ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection failed: {type(exc).__name__}: {exc}") from None

    def _send(
        self,
        url: str,
        body: bytes,
        hdrs: dict[str, str],
        params: Mapping[str, str] | None,
        auth: tuple[str | bytes, str | bytes] | None,
    ) -> httpx.Response:
        """One request, by the lean path when it applies, else by httpx."""
        direct = self._direct_poster()
        if direct is not None:
            return self._post_direct(direct, url, body, hdrs, params, auth)
        # The network wait happens outside the delivery lane (``_lane.py``), so that other
        # channels run while this one waits, and a hung backend holds up no one.
        with released():
            return self._http().post(
                url,
                content=body,
                headers=hdrs,
                params=params,
                auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth,
            )

    def _direct_poster(self) -> DirectPoster | None:
        """The lean HTTP/1.1 path (``_http1.py``), unless a transport was passed in or
        proxies are configured (httpx honours those; the lean path does not)."""
        if self._pid != os.getpid():
            # A forked child: the parent's sockets are the parent's; start afresh.
            self._pid = os.getpid()
            self._client = None
            self._direct = None
        if self._direct is None:
            if self._transport is not None or _proxies_configured():
                return None
            self._direct = DirectPoster(self.timeout)
        return self._direct

    def _post_direct(
        self,
        direct: DirectPoster,
        url: str,
        body: bytes,
        hdrs: dict[str, str],
        params: Mapping[str, str] | None,
        auth: tuple[str | bytes, str | bytes] | None,
    ) -> httpx.Response:
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        headers = {**self._headers, **hdrs}
        if auth is not None:
            user, password = (x.encode() if isinstance(x, str) else x for x in auth)
            headers["Authorization"] = "Basic " + base64.b64encode(
                user + b":" + password
            ).decode("ascii")
        try:
            return direct.post(url, body, headers)
        except TimeoutError as exc:
            raise RetryableError(
                f"timed out after {self.timeout}s ({type(exc).__name__})"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise RetryableError(f"connection failed: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._pid == os.getpid():
            if self._client is not None:
                self._client.close()
            if self._direct is not None:
                self._direct.close()
        self._client = None
        self._direct = None


def _proxies_configured() -> bool:
    """Whether HTTP(S)_PROXY / ALL_PROXY (or the platform's settings) name a proxy."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(k) for k in ("http", "https", "all"))



class HttpProvider:
    """What every provider that sends through one :class:`HttpSender` shares: ``close()``.

    Subclasses set ``self._http`` in their ``__init__``. There is no ``after_fork``: the
    sender notices a new pid by itself and starts a fresh connection pool in the child.
    """

    _http: HttpSender

    def close(self) -> None:
        """Release the keep-alive connections (called once, at the channel's shutdown)."""
        self._http.close()


def require_json_reply(response: httpx.Response, *, what: str = "backend") -> Any:
    """The decoded JSON object of a 2xx ``response``, or a :class:`RetryableError`.

    A 200 that is not the backend's JSON answer (a load balancer's welcome page, a captive
    portal, a misrouted proxy) says nothing about the batch, so it is not counted as
    delivered: it is retried and logged, naming what came back.
    """
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        kind = response.headers.get("Content-Type", "no content type")
        raise RetryableError(
            f"{what} answered {response.status_code} with something that is not its API's "
            f"reply ({kind}); is the host right?",
            status_code=response.status_code,
        )
    return data


def raise_for_status(response: httpx.Response, *, what: str = "backend") -> None:
    """Raise the channel's error for a non-2xx ``response``; return for 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    excerpt = _excerpt(response)
    message = f"{what} answered HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if 300 <= status < 400:
        location = response.headers.get("location")
        where = str(response.url.join(location).copy_with(query=None)) if location else None
        raise PermanentError(
            f"{what} answered HTTP {status} (a redirect"
            + (f" to {where}" if where else "")
            + "); configure that URL instead: a POST cannot follow it",
            status_code=status,
        )
    if status == 413:
        raise BatchTooLarge(message, status_code=status)
    if status in (408, 425, 429) or status >= 500:
        raise RetryableError(
            message,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            status_code=status,
        )
    raise PermanentError(message, status_code=status)


def _excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except Exception:  # noqa: BLE001 - undecodable bodies are not worth failing over
        return ""
    text = " ".join(text.split())
    return text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else "")
