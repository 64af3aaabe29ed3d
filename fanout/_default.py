"""The default client behind ``fanout.track()`` and friends: the one documented global.

Built lazily from the environment on first use, so importing fanout costs nothing and
``gunicorn --preload`` forks before any thread exists.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from ._client import Client
from ._report import FlushReport

_lock = threading.Lock()
_client: Client | None = None

P = ParamSpec("P")
R = TypeVar("R")


def get_default_client() -> Client:
    """The process-wide client, built from the environment on first call."""
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            _client = Client()
        return _client


def set_default_client(client: Client | None) -> Client | None:
    """Replace the default client (``None`` resets it); returns the previous one."""
    global _client
    with _lock:
        previous, _client = _client, client
    return previous


def _on_default_client(method: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    """``method`` called on the default client, with ``method``'s own typed signature.

    One source for the module functions' signatures: ``fanout.track`` takes exactly what
    ``Client.track`` takes, so mypy rejects ``fanout.track("x", persn_id="u")`` just as it
    rejects the typo on a client, and the two can never drift apart.
    """

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(get_default_client(), *args, **kwargs)

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = f"``get_default_client().{method.__name__}(...)``.\n\n{method.__doc__ or ''}"
    signature = inspect.signature(method)  # for help(), IDEs and docs: no ``self``
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    return call


track = _on_default_client(Client.track)
identify = _on_default_client(Client.identify)
page = _on_default_client(Client.page)
alias = _on_default_client(Client.alias)
group = _on_default_client(Client.group)


def flush(timeout: float | None = None) -> FlushReport:
    """Flush the default client, if one was ever built."""
    client = _client
    return client.flush(timeout) if client is not None else FlushReport({})


def shutdown(timeout: float | None = None) -> FlushReport:
    """Shut the default client down and forget it (the next call builds a new one)."""
    client = set_default_client(None)
    return client.shutdown(timeout) if client is not None else FlushReport({})


async def aflush(timeout: float | None = None) -> FlushReport:
    """:func:`flush` for asyncio code: waits in a worker thread, never blocks the loop."""
    client = _client
    return await client.aflush(timeout) if client is not None else FlushReport({})


async def ashutdown(timeout: float | None = None) -> FlushReport:
    """:func:`shutdown` for asyncio code (an ASGI lifespan shutdown, for one)."""
    client = set_default_client(None)
    return await client.ashutdown(timeout) if client is not None else FlushReport({})
