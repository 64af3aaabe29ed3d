"""The default client behind ``fanout.track()`` and friends: the one documented global.

Built lazily from the environment on first use, so importing fanout costs nothing and
``gunicorn --preload`` forks before any thread exists.
"""

from __future__ import annotations

import threading
from typing import Any

from ._client import Client
from ._report import FlushReport

_lock = threading.Lock()
_client: Client | None = None


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


def track(name: str, **kwargs: Any) -> str:
    """``get_default_client().track(...)``."""
    return get_default_client().track(name, **kwargs)


def identify(person_id: str, **kwargs: Any) -> str:
    """``get_default_client().identify(...)``."""
    return get_default_client().identify(person_id, **kwargs)


def page(url_or_path: str, **kwargs: Any) -> str:
    """``get_default_client().page(...)``."""
    return get_default_client().page(url_or_path, **kwargs)


def alias(person_id: str, previous_id: str, **kwargs: Any) -> str:
    """``get_default_client().alias(...)``."""
    return get_default_client().alias(person_id, previous_id, **kwargs)


def group(group_type: str, group_id: str, **kwargs: Any) -> str:
    """``get_default_client().group(...)``."""
    return get_default_client().group(group_type, group_id, **kwargs)


def flush(timeout: float | None = None) -> FlushReport:
    """Flush the default client, if one was ever built."""
    client = _client
    return client.flush(timeout) if client is not None else FlushReport({})


def shutdown(timeout: float | None = None) -> FlushReport:
    """Shut the default client down and forget it (the next call builds a new one)."""
    client = set_default_client(None)
    return client.shutdown(timeout) if client is not None else FlushReport({})
