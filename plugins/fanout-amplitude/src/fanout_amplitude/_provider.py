"""``AmplitudeProvider``: posts one batch to Amplitude's HTTP V2 or Batch API as the SDK does.

What the request looks like comes from ``amplitude.worker.Workers.get_payload`` and
``amplitude.http_client`` (1.x): a JSON body ``{"api_key": ..., "events": [...],
"options": {"min_id_length": n}}`` (``options`` only when set) with ``Content-Type:
application/json; charset=UTF-8`` and ``Accept: */*``, posted to the zone's endpoint
(``amplitude.constants.SERVER_URL``). How it travels is fanout's:
:class:`fanout.http.HttpSender` on the channel's worker thread, never the SDK's thread pool.

How answers are read follows ``amplitude.processor.ResponseProcessor``:

- 200: delivered.
- 400 naming events (``events_with_invalid_fields``, ``events_with_missing_fields``,
  ``events_with_invalid_id_lengths``, ``silenced_events``): Amplitude took nothing, so those
  events are rejected one by one and the others are sent again at once, in the same
  ``send()``; a 400 naming none (bad API key, malformed body) fails the whole batch.
- 429: events of users or devices over their daily quota are rejected; events not
  throttled are sent again at once; the throttled ones alone come back after 30 s (the
  SDK's delay), as ``RetryableError(pending=..., rejected=...)``.
- 413: the channel splits the batch; a single event too large is rejected.
- 408, 5xx, timeouts and connection errors: retried by the channel.

Events are deduplicated by Amplitude on ``insert_id`` (fanout's ``event_id``) for 7 days, so
sending an event again after a partial outcome never counts it twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from amplitude import constants  # type: ignore[import-untyped]

from fanout.http import (
    USER_AGENT,
    HttpProvider,
    HttpSender,
    encode_json,
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
from ._mapping import EventBuilder, Unsendable

__all__ = [
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "AmplitudeProvider",
    "endpoint_url",
]

#: HTTP V2 API, Growth and Enterprise plans: "Keep request sizes under 1 MB with fewer than
#: 2000 events per request". The Batch API takes up to 20 MB per request.
MAX_BATCH_EVENTS: Final = 2000
MAX_V2_BYTES: Final = 1_000_000
MAX_BATCH_API_BYTES: Final = 20_000_000
#: One event: what fits alone in an HTTP V2 request, envelope included.
MAX_EVENT_BYTES: Final = MAX_V2_BYTES - 1_000
#: The SDK's delay before retrying throttled events (``push_to_storage(..., 30000, ...)``).
THROTTLE_RETRY_SECONDS: Final = 30.0
#: Immediate re-sends of the rest of a batch after a partial 400 or 429, within one send().
MAX_RESENDS: Final = 3

_HEADERS: Final = {"Accept": "*/*"}
_CONTENT_TYPE: Final = "application/json; charset=UTF-8"


def endpoint_url(server_zone: str = "US", *, use_batch: bool = False) -> str:
    """The SDK's ``Config.server_url`` for a zone and API."""
    return str(
        constants.SERVER_URL[server_zone][constants.BATCH if use_batch else constants.HTTP_V2]
    )


class AmplitudeProvider(HttpProvider):
    """Translates fanout events to Amplitude events and posts them as one request."""

    def __init__(
        self,
        api_key: str,
        *,
        server_zone: str = constants.DEFAULT_ZONE,
        use_batch: bool = False,
        server_url: str | None = None,
        min_id_length: int | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("an Amplitude API key is required")
        self.url = server_url or endpoint_url(server_zone.upper(), use_batch=use_batch)
        self.max_bytes = MAX_BATCH_API_BYTES if use_batch and not server_url else MAX_V2_BYTES
        if server_url and urlsplit(server_url).path.rstrip("/").endswith("/batch"):
            self.max_bytes = MAX_BATCH_API_BYTES
        self._api_key = api_key
        self._redact = Redactor([api_key])
        self._options = {"min_id_length": min_id_length} if min_id_length else None
        self._builder = EventBuilder(library=f"fanout-amplitude/{__version__}")
        self._http = HttpSender(
            timeout=timeout,
            headers={"User-Agent": f"fanout-amplitude/{__version__} {USER_AGENT}", **_HEADERS},
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ProviderConfig) -> AmplitudeProvider:
        return cls(
            config.require("api_key"),
            server_zone=config.get("server_zone") or constants.DEFAULT_ZONE,
            use_batch=bool(config.get("use_batch")),
            server_url=config.get("server_url"),
            min_id_length=config.get("min_id_length"),
            timeout=config.timeout,
        )

    def __repr__(self) -> str:
        return f"<AmplitudeProvider url={self.url!r}>"  # never the API key

    # -- encoding ----------------------------------------------------------------------

    def plan(self, batch: Sequence[Event]) -> tuple[list[tuple[int, bytes]], dict[int, str]]:
        """Each Amplitude event encoded, with the batch index of its fanout event, and the
        events refused before sending (with why)."""
        planned: list[tuple[int, bytes]] = []
        rejected: dict[int, str] = {}
        for i, event in enumerate(batch):
            try:
                bodies = self._builder.to_amplitude(event)
            except Unsendable as exc:
                rejected[i] = str(exc)
                continue
            encoded = [encode_json(body) for body in bodies]
            size = sum(len(e) for e in encoded)
            if size > MAX_EVENT_BYTES:
                rejected[i] = (
                    f"event is {size} bytes as Amplitude JSON, above the {MAX_EVENT_BYTES} "
                    "bytes that fit in one request"
                )
                continue
            planned.extend((i, data) for data in encoded)
        return planned, rejected

    def body(self, events: Iterable[bytes]) -> bytes:
        """The request body around already-encoded events."""
        head = encode_json({"api_key": self._api_key})
        tail = b"" if self._options is None else b',"options":' + encode_json(self._options)
        return head[:-1] + b',"events":[' + b",".join(events) + b"]" + tail + b"}"

    # -- sending -----------------------------------------------------------------------

    def send(self, batch: Sequence[Event]) -> None:
        planned, rejected = self.plan(batch)
        try:
            later = self._deliver(planned, rejected)
        except RetryableError as exc:
            if rejected and exc.pending is None:
                # Refused events stay refused; the channel retries only the others.
                exc.pending = sorted({i for i, _ in planned} - set(rejected))
                exc.rejected = {**(exc.rejected or {}), **rejected}
            raise self._redact.error(exc) from None
        except DeliveryError as exc:
            raise self._redact.error(exc) from None
        if later:
            # Throttled events come back after the SDK's delay, alone: the rest of the
            # batch was delivered or refused for good.
            raise self._redact.error(
                RetryableError(
                    f"Amplitude throttled {len(later)} event(s) of {len(batch)}",
                    retry_after=THROTTLE_RETRY_SECONDS,
                    status_code=429,
                    pending=later,
                    rejected=rejected or None,
                )
            )
        if rejected:
            raise self._redact.error(
                PermanentError(
                    f"Amplitude refused {len(rejected)} of {len(batch)} event(s)",
                    rejected=rejected,
                )
            )

    def _deliver(self, planned: list[tuple[int, bytes]], rejected: dict[int, str]) -> set[int]:
        """Post ``planned`` until every event is delivered, rejected (added to ``rejected``)
        or to be retried later (returned); raises the channel's errors for the whole batch."""
        pending = [(i, data) for i, data in planned if i not in rejected]
        later: set[int] = set()
        for _ in range(MAX_RESENDS + 1):
            if not pending:
                return later
            body = self.body(data for _, data in pending)
            if len(body) > self.max_bytes and len({i for i, _ in pending}) > 1:
                raise BatchTooLarge(
                    f"Amplitude request would be {len(body)} bytes, above {self.max_bytes}"
                )
            response = self._http.post(self.url, body, content_type=_CONTENT_TYPE)
            status = response.status_code
            if 200 <= status < 300:
                # Amplitude's 200 is a JSON summary; anything else (a proxy's page) says
                # nothing about the batch and is retried.
                require_json_reply(response, what="Amplitude")
                return later
            if status == 413 and len({i for i, _ in pending}) == 1:
                rejected[pending[0][0]] = "Amplitude answered 413: the event is too large"
                return later
            outcome = _summary(response) if status in (400, 429) else None
            if outcome is None:
                raise_for_status(response, what="Amplitude")
                raise RetryableError(f"Amplitude answered HTTP {status}", status_code=status)
            if status == 400:
                refused = _invalid_or_silenced(outcome)
                if not refused:
                    raise_for_status(response, what="Amplitude")
                for position, reason in refused.items():
                    if 0 <= position < len(pending):
                        rejected.setdefault(pending[position][0], reason)
            else:  # 429
                throttled = _indices(outcome.get("throttled_events"))
                if not throttled:
                    raise_for_status(response, what="Amplitude")
                users = set(_strings(outcome.get("exceeded_daily_quota_users")))
                devices = set(_strings(outcome.get("exceeded_daily_quota_devices")))
                for position in throttled:
                    if not 0 <= position < len(pending):
                        continue
                    index, data = pending[position]
                    if _over_quota(data, users, devices):
                        rejected.setdefault(
                            index, "Amplitude: daily quota exceeded for this user or device"
                        )
                    else:
                        later.add(index)
            pending = [(i, d) for i, d in pending if i not in rejected and i not in later]
        if pending:
            raise RetryableError(
                f"Amplitude kept refusing parts of the batch after {MAX_RESENDS} re-sends",
                status_code=400,
                pending={i for i, _ in pending} | later,
                rejected=rejected or None,
            )
        return later


def _summary(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _indices(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):  # documented as {id: count}
        value = list(value)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _invalid_or_silenced(summary: dict[str, Any]) -> dict[int, str]:
    """``Response.invalid_or_silenced_index()``: every event a 400 names, with why."""
    error = str(summary.get("error") or "invalid event")[:200]
    refused: dict[int, str] = {}
    for key, what in (
        ("events_with_missing_fields", "missing field"),
        ("events_with_invalid_fields", "invalid field"),
        ("events_with_invalid_id_lengths", "id shorter than min_id_length in field"),
    ):
        fields = summary.get(key)
        if isinstance(fields, dict):
            for field, positions in fields.items():
                for position in _indices(positions):
                    refused.setdefault(position, f"Amplitude: {error} ({what} {field!r})")
    for position in _indices(summary.get("silenced_events")):
        refused.setdefault(position, f"Amplitude: {error} (silenced device)")
    return refused


def _over_quota(data: bytes, users: set[str], devices: set[str]) -> bool:
    if not users and not devices:
        return False
    body = json.loads(data)
    return body.get("user_id") in users or body.get("device_id") in devices
