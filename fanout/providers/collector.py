"""``collector``: fanout's own HTTP protocol, spoken to the reference collector or any
server that implements ``docs/protocol.md``.

The provider only encodes and classifies; the channel batches (within the limits declared
in ``providers/__init__.py`` from :mod:`fanout.collector.protocol`), retries and splits.
Classification follows the protocol: 200 is committed, with per-event rejections reported
as :class:`PermanentError` ``rejected={index: reason}`` so only those events are
dead-lettered; 413 splits; 429 and 5xx retry (``Retry-After`` honoured); 400 and 401 are
permanent. The server key travels only in the ``Authorization`` header, which no error
message, log line or repr ever includes.
"""

from __future__ import annotations

import datetime as _dt
import operator
from collections.abc import Sequence
from typing import Any, Final

import httpx

from .._events import SCHEMA_VERSION, Event, format_timestamp, format_timestamps
from .._exceptions import BatchTooLarge, PermanentError, RetryableError
from .._json import dumps
from ..collector.protocol import BATCH_PATH, MAX_BATCH_BYTES, parse_url
from ..http import HttpProvider, HttpSender, raise_for_status
from ..provider import ProviderConfig

__all__ = ["CollectorProvider", "parse_url", "GZIP_MIN_BYTES"]

#: Bodies at least this large are gzipped. Below it, compressing costs more client CPU than
#: it saves on a local or same-region link (measured in ``benchmarks/collector.py``).
GZIP_MIN_BYTES: Final = 64 * 1024

_UTC = _dt.timezone.utc
_TIMESTAMP = operator.itemgetter(Event._fields.index("timestamp"))


class CollectorProvider(HttpProvider):
    """Sends batches to ``{url}/v1/batch`` with a Bearer server key."""

    name = "collector"

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 10.0,
        gzip_min_bytes: int | None = GZIP_MIN_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = parse_url(url) + BATCH_PATH
        self._http = HttpSender(
            timeout=timeout,
            gzip_min_bytes=gzip_min_bytes,
            headers={"Authorization": f"Bearer {key}"},
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ProviderConfig) -> CollectorProvider:
        return cls(config.require("url"), config.require("key"), timeout=config.timeout)

    def __repr__(self) -> str:
        return f"<CollectorProvider {self.endpoint}>"  # the key is never shown

    def encode(self, batch: Sequence[Event]) -> bytes:
        """The request body: ``{"batch": [...], "sent_at": ...}`` as compact UTF-8 JSON.

        Each event is :meth:`Event.to_dict` minus the fields that are null or empty (the
        protocol defaults them), which cuts a third of the bytes of a typical track call
        and the CPU to encode and parse them on both sides.
        """
        stamps = format_timestamps(map(_TIMESTAMP, batch))
        payload = {
            "batch": [_wire(e, ts) for e, ts in zip(batch, stamps, strict=True)],
            "sent_at": format_timestamp(_dt.datetime.now(_UTC)),
        }
        return dumps(payload)

    def send(self, batch: Sequence[Event]) -> None:
        body = self.encode(batch)
        if len(body) > MAX_BATCH_BYTES:
            # The channel batches by estimated size; the exact size decides here, before
            # a request the server would refuse.
            raise BatchTooLarge(
                f"batch of {len(batch)} events is {len(body)} bytes, above the collector's "
                f"{MAX_BATCH_BYTES}-byte limit"
            )
        response = self._http.post(self.endpoint, body)
        if response.status_code == 200:
            _raise_for_rejections(response, len(batch))
            return
        if response.status_code == 404:
            raise PermanentError(
                f"collector answered HTTP 404 at {self.endpoint}: the url setting must be the "
                "collector's base URL (fanout adds /v1/batch), e.g. http://127.0.0.1:8765",
                status_code=404,
            )
        raise_for_status(response, what="collector")


def _wire(e: Event, timestamp: str) -> dict[str, Any]:
    """``e`` as the protocol's event object; ``timestamp`` is its ``format_timestamp``,
    formatted for the whole batch at once (``format_timestamps``).

    The fields are unpacked in one step: reading eleven of them by name costs a descriptor
    call each, about a third of this function's time per event.
    """
    (kind, event_id, _, person_id, anonymous_id, name, properties, traits, context,
     group_type, group_id, previous_id, _, _) = e  # fmt: skip
    if (
        person_id is not None and name is not None and properties and anonymous_id is None
        and group_id is None and previous_id is None and not traits and not context
    ):  # fmt: skip
        # The usual track call, as one literal: sized for its seven keys at once, where
        # adding them one by one past the fifth grew the dict's table on every event.
        return {
            "v": SCHEMA_VERSION,
            "kind": kind,
            "event_id": event_id,
            "timestamp": timestamp,
            "person_id": person_id,
            "name": name,
            "properties": properties,
        }
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "kind": kind,
        "event_id": event_id,
        "timestamp": timestamp,
    }
    if person_id is not None:
        out["person_id"] = person_id
    if anonymous_id is not None:
        out["anonymous_id"] = anonymous_id
    if name is not None:
        out["name"] = name
    # The read-only mappings go in as they are; the encoder turns them into objects.
    if properties:
        out["properties"] = properties
    if traits:
        out["traits"] = traits
    if context:
        out["context"] = context
    if group_id is not None:
        out["group"] = {"type": group_type, "id": group_id}
    if previous_id is not None:
        out["previous_id"] = previous_id
    return out


def _raise_for_rejections(response: httpx.Response, size: int) -> None:
    """A 200 with the collector's summary means the batch is committed; its ``rejected``
    entries are permanent failures.

    A 200 that is not that summary (a proxy's or load balancer's welcome page, a captive
    portal) is not the collector's answer: nothing says the batch was stored, so it is
    retryable, and the error names what came back.
    """
    try:
        data: Any = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("accepted"), int):
        kind = response.headers.get("Content-Type", "no content type")
        raise RetryableError(
            f"{response.url} answered 200 with something that is not a collector's reply "
            f"({kind}); is the URL a fanout collector?",
            status_code=200,
        )
    rejected = data.get("rejected")
    if not rejected or not isinstance(rejected, list):
        return
    reasons: dict[int, str] = {}
    for item in rejected:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            index = item["index"]
            if 0 <= index < size:
                reasons[index] = str(item.get("error", "rejected"))[:300]
    if reasons:
        raise PermanentError(
            f"collector rejected {len(reasons)} of {size} event(s)",
            rejected=reasons,
            status_code=200,
        )
