"""Helpers for testing code that tracks events, and for testing providers.

In your tests::

    def test_checkout(fanout_events):
        checkout(cart)                       # your code calls fanout.track(...)
        assert fanout_events.names() == ["checkout.finished"]

The ``fanout_events`` fixture is registered automatically (``pytest11`` entry point): it
installs a default client in sync mode whose only provider keeps events in memory, and
restores the previous default client afterwards.

For plugin authors, :class:`ProviderHarness` runs a provider inside a real client and
channel against a local HTTP server (pytest-httpserver's ``httpserver`` fixture, or
:func:`recording_server`) and gives back what the server received, decoded
(:class:`RecordedRequest`: gzip undone, JSON or form bodies, basic auth), with the flush
report::

    def test_track_is_posted(httpserver):
        httpserver.expect_request("/hook").respond_with_json({})
        harness = ProviderHarness(httpserver, "webhook", plugins=[my_plugin],
                                  settings={"url": httpserver.url_for("/hook")}, url_setting=None)
        run = harness.run(lambda client: client.track("signup", person_id="u1"))
        assert run.report["webhook"].delivered == 1
        assert run.requests[0].json()["events"][0]["name"] == "signup"

pytest-httpserver is a test dependency, imported only by :func:`recording_server`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ._client import Client
from ._default import set_default_client
from ._report import FlushReport
from .providers.memory import InMemoryProvider

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer
    from werkzeug import Request, Response

__all__ = [
    "HarnessRun",
    "InMemoryProvider",
    "ProviderHarness",
    "RecordedRequest",
    "capture_events",
    "decode_request",
    "fanout_events",
    "recorded",
    "recording_server",
    "reset_default_client",
    "server_url",
]


def capture_events(**client_kwargs: Any) -> _Capture:
    """Context manager: a sync in-memory default client for the ``with`` block."""
    return _Capture(client_kwargs)


class _Capture:
    def __init__(self, client_kwargs: dict[str, Any]) -> None:
        self.provider = InMemoryProvider()
        self._kwargs = client_kwargs
        self._previous: Client | None = None
        self.client: Client | None = None

    def __enter__(self) -> InMemoryProvider:
        kwargs: dict[str, Any] = {
            "providers": [self.provider],
            "load_entry_points": False,
            "sync": True,
            "register_atexit": False,
            "environ": {},
        }
        kwargs.update(self._kwargs)
        self.client = Client(**kwargs)
        self._previous = set_default_client(self.client)
        return self.provider

    def __exit__(self, *exc: object) -> None:
        set_default_client(self._previous)
        if self.client is not None:
            self.client.shutdown(timeout=5)


def reset_default_client() -> None:
    """Shut down and forget the default client (structlog's ``reset_defaults`` for fanout)."""
    client = set_default_client(None)
    if client is not None:
        client.shutdown(timeout=1)


# -- helpers for plugin authors ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request a local server received, decoded the way backends decode it."""

    method: str
    path: str
    #: The query string's parameters.
    params: Mapping[str, str]
    headers: Mapping[str, str]
    #: The body as the provider meant it: gunzipped when it was sent gzipped.
    body: bytes
    gzip: bool
    #: The status the server answered with (``None`` when unknown).
    status: int | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip()

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body parsed as ``application/x-www-form-urlencoded`` (strictly)."""
        return dict(parse_qsl(self.body.decode("ascii"), strict_parsing=True))

    def data(self) -> Any:
        """The body by its content type: a form as a dict, anything else as JSON."""
        if self.content_type == "application/x-www-form-urlencoded":
            return self.form()
        return self.json()

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """``(user, password)`` from a ``Basic`` Authorization header, if any."""
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password


def decode_request(request: Request, response: Response | None = None) -> RecordedRequest:
    """A werkzeug request (as pytest-httpserver logs it) as a :class:`RecordedRequest`."""
    body = request.get_data()
    gzipped = request.headers.get("Content-Encoding") == "gzip"
    return RecordedRequest(
        method=request.method,
        path=request.path,
        params=dict(request.args.items()),
        headers=dict(request.headers.items()),
        body=gzip.decompress(body) if gzipped else body,
        gzip=gzipped,
        status=None if response is None else response.status_code,
    )


def recorded(
    server: HTTPServer, path: str | None = None, *, since: int = 0
) -> list[RecordedRequest]:
    """The requests ``server`` received (to ``path``, when given), oldest first, decoded."""
    return [
        decode_request(request, response)
        for request, response in server.log[since:]
        if path is None or request.path == path
    ]


def server_url(server: HTTPServer) -> str:
    """``http://127.0.0.1:<port>``: the base URL a provider's host setting takes.

    ``localhost`` (pytest-httpserver's default host) is written as 127.0.0.1, the address
    werkzeug binds for it, so that no client tries ``::1`` first.
    """
    host = "127.0.0.1" if server.host == "localhost" else server.host
    return f"http://{host}:{server.port}"


@contextlib.contextmanager
def recording_server() -> Iterator[HTTPServer]:
    """A pytest-httpserver on 127.0.0.1 and a free port, outside pytest's fixtures."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


@dataclasses.dataclass(frozen=True)
class HarnessRun:
    """What one :meth:`ProviderHarness.run` produced."""

    report: FlushReport
    #: Every request the server received during the run, oldest first.
    requests: list[RecordedRequest]

    def at(self, path: str) -> list[RecordedRequest]:
        """The run's requests to ``path``."""
        return [r for r in self.requests if r.path == path]


class ProviderHarness:
    """One provider in a real :class:`~fanout.Client` (channel, batching, retries), aimed
    at a local HTTP server standing in for its backend.

    ``settings`` are the provider's settings (as ``Client(settings={name: ...})`` takes
    them); ``url_setting`` names the one that receives the server's base URL (``None``
    to set it yourself). Other keyword arguments go to every client the harness builds.
    """

    def __init__(
        self,
        server: HTTPServer,
        provider: str,
        *,
        plugins: Sequence[object] = (),
        settings: Mapping[str, Any] | None = None,
        url_setting: str | None = "host",
        **client_kwargs: Any,
    ) -> None:
        self.server = server
        self.provider = provider
        self.url = server_url(server)
        self.settings: dict[str, Any] = {url_setting: self.url} if url_setting else {}
        self.settings.update(settings or {})
        self._plugins = list(plugins)
        self._client_kwargs = client_kwargs
        self._open: list[Client] = []

    def __repr__(self) -> str:
        return f"<ProviderHarness {self.provider} -> {self.url}>"  # settings may hold keys

    def client(self, *, settings: Mapping[str, Any] | None = None, **kwargs: Any) -> Client:
        """A client whose only provider is this one; shut down by :meth:`close`."""
        options: dict[str, Any] = {
            "providers": [self.provider],
            "settings": {self.provider: {**self.settings, **(settings or {})}},
            "environ": {},
            "register_atexit": False,
            "load_entry_points": False,
            "plugins": self._plugins,
        }
        options.update(self._client_kwargs)
        options.update(kwargs)
        client = Client(**options)
        self._open.append(client)
        return client

    def run(
        self,
        calls: Callable[[Client], object],
        *,
        timeout: float = 10.0,
        settings: Mapping[str, Any] | None = None,
        **client_kwargs: Any,
    ) -> HarnessRun:
        """Make ``calls(client)`` on a fresh client, flush, shut it down, and return the
        flush report with the requests the server received meanwhile."""
        start = len(self.server.log)
        client = self.client(settings=settings, **client_kwargs)
        try:
            calls(client)
            report = client.flush(timeout=timeout)
        finally:
            self._open.remove(client)
            client.shutdown(timeout=timeout)
        return HarnessRun(report, recorded(self.server, since=start))

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """Everything the server has received so far (to ``path``, when given)."""
        return recorded(self.server, path)

    def close(self) -> None:
        """Shut down every client :meth:`client` built that is still open."""
        while self._open:
            self._open.pop().shutdown(timeout=5)

    def __enter__(self) -> ProviderHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def fanout_events() -> Iterator[InMemoryProvider]:
        """The events your code tracked during the test, via the default client."""
        with capture_events() as provider:
            yield provider
