"""``SegmentProvider``: sends one batch to Segment's ``/v1/batch`` the way the SDK does.

What the request looks like comes from ``segment.analytics.request.post`` (2.4): a JSON body
``{"batch": [...], "sentAt": ..., "writeKey": ...}``, HTTP basic auth with the write key as
user name and an empty password, ``Content-Type: application/json``, gzip when enabled.
How it travels is fanout's: :class:`fanout.http.HttpSender` on the channel's worker thread,
never the SDK's consumer thread or queue, so nothing is queued or retried twice and
``flush()`` sees everything.

Sizes are checked exactly here, on the encoded messages, because Segment answers an
oversized batch or message with a 400 (not a 413) that would dead-letter the whole batch:

- a message above Segment's 32 KB limit is rejected on its own (``PermanentError(rejected=)``)
  once the rest of the batch has been delivered;
- a body above 500 KB is never sent: :class:`BatchTooLarge` makes the channel split it.

The limits and the host parser live in ``_declaration`` (the entry point imports only
that); the SDK's per-message limit is copied there and checked against the SDK by a test.
"""

from __future__ import annotations

import base64
import datetime as _dt
from collections.abc import Sequence
from typing import Final

import httpx

from fanout.http import (
    USER_AGENT,
    HttpProvider,
    HttpSender,
    raise_for_status,
    require_json_reply,
)
from fanout.provider import (
    BatchTooLarge,
    DeliveryError,
    Event,
    PermanentError,
    ProviderConfig,
    Redactor,
    RetryableError,
)

from .__about__ import __version__
from ._declaration import (
    DEFAULT_HOST,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    parse_host,
)
from .message import MESSAGE_OVERHEAD, encode_batch, to_message

__all__ = [
    "DEFAULT_HOST",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_MESSAGE_BYTES",
    "SegmentProvider",
    "parse_host",
]

#: Statuses the SDK's consumer treats differently from fanout's generic HTTP rules:
#: 460 is a retryable Segment status; 501 and 505 will not get better by retrying.
_RETRYABLE_4XX: Final = frozenset({460})
_PERMANENT_5XX: Final = frozenset({501, 505})


class SegmentProvider(HttpProvider):
    """Translates fanout events to Segment messages and posts them as one batch."""

    def __init__(
        self,
        write_key: str,
        *,
        host: str = DEFAULT_HOST,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not write_key:
            raise ValueError("a Segment write key is required")
        self.host = parse_host(host)
        self.url = self.host + "/v1/batch"
        self._write_key = write_key
        basic = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        # The key and its basic-auth form, so no error text can carry either.
        self._redact = Redactor([write_key])
        self._http = HttpSender(
            timeout=timeout,
            gzip_min_bytes=0,  # always: the SDK's gzip=True compresses every body
            headers={
                "User-Agent": f"fanout-segment/{__version__} {USER_AGENT}",
                "Authorization": f"Basic {basic}",
            },
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ProviderConfig) -> SegmentProvider:
        return cls(
            config.require("write_key"),
            host=config.get("host") or DEFAULT_HOST,
            timeout=config.timeout,
        )

    def __repr__(self) -> str:
        return f"<SegmentProvider host={self.host!r}>"  # never the write key

    # -- sending -----------------------------------------------------------------------

    def encode(self, batch: Sequence[Event]) -> tuple[bytes, dict[int, str]]:
        """The request body for ``batch``, and the indices of messages too large to send."""
        trailer = {
            "sentAt": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "writeKey": self._write_key,
        }
        return encode_batch(
            batch,
            build=to_message,
            vendor="Segment",
            max_message_bytes=MAX_MESSAGE_BYTES,
            trailer=trailer,
            overhead=MESSAGE_OVERHEAD,  # one encoder call when no message can be too large
        )

    def send(self, batch: Sequence[Event]) -> None:
        body, rejected = self.encode(batch)
        if body:
            if len(body) > MAX_BATCH_BYTES and len(batch) - len(rejected) > 1:
                raise BatchTooLarge(
                    f"batch body is {len(body)} bytes, above Segment's {MAX_BATCH_BYTES}"
                )
            self._post(body)
        if rejected:
            raise PermanentError(
                f"{len(rejected)} message(s) above Segment's size limit", rejected=rejected
            )

    def _post(self, body: bytes) -> None:
        try:
            response = self._http.post(self.url, body)
            status = response.status_code
            if status in _RETRYABLE_4XX:
                raise RetryableError(f"Segment answered HTTP {status}", status_code=status)
            if status in _PERMANENT_5XX:
                raise PermanentError(f"Segment answered HTTP {status}", status_code=status)
            raise_for_status(response, what="Segment")
            require_json_reply(response, what="Segment")  # {"success": true}
        except DeliveryError as exc:
            raise self._redact.error(exc) from None
