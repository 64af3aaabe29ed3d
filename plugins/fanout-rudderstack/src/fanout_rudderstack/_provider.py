"""``RudderStackProvider``: posts one batch to a RudderStack data plane as the SDK does.

What the request looks like comes from ``rudderstack.analytics.request.post`` (2.1): a POST
to ``<data plane URL>/v1/batch`` with a JSON body ``{"batch": [...], "sentAt": ...}``, HTTP
basic auth with the write key as user name and an empty password, ``Content-Type:
application/json`` and gzip. How it travels is fanout's: :class:`fanout.http.HttpSender` on
the channel's worker thread, never the SDK's consumer thread.

Answers are read as the SDK's consumer reads them: 2xx delivered; 429, 5xx, timeouts and
connection errors retried; 413 splits the batch; other 4xx fail it. Sizes are checked on the
encoded messages: a message above the SDK's 4 MiB is rejected on its own, and a body above
the data plane's request limit is split before sending.
"""

from __future__ import annotations

import base64
import datetime as _dt
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import httpx
from fanout_segment.message import MESSAGE_OVERHEAD, encode_batch

from fanout.http import USER_AGENT, HttpProvider, HttpSender, raise_for_status
from fanout.provider import (
    BatchTooLarge,
    DeliveryError,
    Event,
    PermanentError,
    ProviderConfig,
    Redactor,
)

from .__about__ import __version__
from ._message import to_message

__all__ = ["MAX_BATCH_BYTES", "MAX_MESSAGE_BYTES", "RudderStackProvider", "parse_data_plane_url"]

#: rudder-sdk-python's ``MAX_MSG_SIZE``: 4 MiB per message.
MAX_MESSAGE_BYTES: Final = 4 << 10 << 10
#: rudder-server's gateway refuses request bodies above ``Gateway.maxReqSizeInKB`` (4000).
MAX_BATCH_BYTES: Final = 4000 * 1024


def parse_data_plane_url(value: str) -> str:
    """``RUDDERSTACK_DATA_PLANE_URL``: the data plane's base URL, without a trailing slash."""
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "expected an http:// or https:// URL, e.g. https://yourcompany.dataplane.rudderstack.com"
        )
    return value


class RudderStackProvider(HttpProvider):
    """Translates fanout events to RudderStack messages and posts them as one batch."""

    def __init__(
        self,
        write_key: str,
        data_plane_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not write_key:
            raise ValueError("a RudderStack write key is required")
        self.data_plane_url = parse_data_plane_url(data_plane_url)
        self.url = self.data_plane_url + "/v1/batch"
        basic = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        self._redact = Redactor([write_key])  # the key and its basic-auth form
        self._http = HttpSender(
            timeout=timeout,
            gzip_min_bytes=0,  # the SDK's gzip=True compresses every body
            headers={
                "User-Agent": f"fanout-rudderstack/{__version__} {USER_AGENT}",
                "Authorization": f"Basic {basic}",
            },
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ProviderConfig) -> RudderStackProvider:
        return cls(
            config.require("write_key"),
            config.require("data_plane_url"),
            timeout=config.timeout,
        )

    def __repr__(self) -> str:
        return f"<RudderStackProvider data_plane_url={self.data_plane_url!r}>"  # never the key

    def encode(self, batch: Sequence[Event]) -> tuple[bytes, dict[int, str]]:
        """The request body for ``batch``, and the indices of messages too large to send."""
        return encode_batch(
            batch,
            build=to_message,
            vendor="RudderStack",
            max_message_bytes=MAX_MESSAGE_BYTES,
            trailer={"sentAt": _dt.datetime.now(_dt.timezone.utc).isoformat()},
            # to_message adds channel, integrations and a longer timestamp to Segment's
            # message: a few dozen bytes, well within the overhead.
            overhead=MESSAGE_OVERHEAD,
        )

    def send(self, batch: Sequence[Event]) -> None:
        body, rejected = self.encode(batch)
        try:
            if body:
                if len(body) > MAX_BATCH_BYTES and len(batch) - len(rejected) > 1:
                    raise BatchTooLarge(
                        f"batch body is {len(body)} bytes, above RudderStack's {MAX_BATCH_BYTES}"
                    )
                raise_for_status(self._http.post(self.url, body), what="RudderStack")
        except DeliveryError as exc:
            raise self._redact.error(exc) from None
        if rejected:
            raise PermanentError(
                f"{len(rejected)} message(s) above RudderStack's size limit", rejected=rejected
            )
