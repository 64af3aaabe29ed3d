"""``webhook``: fanout's canonical events, POSTed as signed JSON batches to any URL.

The plain way to feed one's own service: each request's body is ``{"events": [...]}`` with
every event in its :meth:`~fanout.Event.to_dict` form, and a header

    Fanout-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

so the receiver can reject a forgery (the HMAC does not match), a stale replay (``t`` too
old) and a fresh replay (a signature it has already accepted). ``docs/providers/webhook.md``
shows the receiver's check; a test runs exactly that code against this provider.

Each attempt is signed anew with its own timestamp, so a retry is never mistaken for a
replay; a receiver that saw the first attempt after all gets the events twice and
deduplicates on ``event_id``. Status handling is :func:`fanout.http.raise_for_status`'s:
2xx delivered, 408/429/5xx retried, 413 split, other 4xx (a receiver that rejected the
signature answers 401) dead-lettered. The secret never leaves this object except as the HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import urlsplit

import httpx

from .._events import Event
from .._exceptions import BatchTooLarge
from ..http import HttpProvider, HttpSender, raise_for_status
from ..provider import ProviderConfig

__all__ = ["SIGNATURE_HEADER", "MAX_BODY_BYTES", "WebhookProvider", "parse_url", "sign"]

SIGNATURE_HEADER: Final = "Fanout-Signature"
#: Largest request body sent; a larger batch is split by the channel before sending.
MAX_BODY_BYTES: Final = 1024 * 1024


def parse_url(value: str) -> str:
    """``FANOUT_WEBHOOK_URL``: the full http(s) URL the batches are POSTed to."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "expected an http:// or https:// URL, e.g. https://example.com/hooks/fanout"
        )
    return value.strip()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Fanout-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookProvider(HttpProvider):
    """POSTs each batch as ``{"events": [...]}``, signed with HMAC-SHA256."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("a webhook signing secret is required")
        self.url = parse_url(url)
        self._secret = secret.encode()
        self._clock = clock
        self._http = HttpSender(timeout=timeout, transport=transport)

    @classmethod
    def from_config(cls, config: ProviderConfig) -> WebhookProvider:
        return cls(config.require("url"), config.require("secret"), timeout=config.timeout)

    def __repr__(self) -> str:
        return f"<WebhookProvider {self.url}>"  # never the secret

    def encode(self, batch: Sequence[Event]) -> bytes:
        """``{"events": [...]}``: each event's canonical JSON, encoded once."""
        return b'{"events":[' + b",".join(e.to_json() for e in batch) + b"]}"

    def send(self, batch: Sequence[Event]) -> None:
        body = self.encode(batch)
        if len(body) > MAX_BODY_BYTES and len(batch) > 1:
            raise BatchTooLarge(f"webhook body would be {len(body)} bytes, above {MAX_BODY_BYTES}")
        signature = sign(self._secret, int(self._clock()), body)
        response = self._http.post(self.url, body, headers={SIGNATURE_HEADER: signature})
        raise_for_status(response, what="webhook receiver")
