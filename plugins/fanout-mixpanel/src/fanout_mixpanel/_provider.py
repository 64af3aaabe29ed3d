"""``MixpanelProvider``: sends one batch to Mixpanel's ingestion API the way the SDK does.

What the requests look like comes from ``mixpanel.Consumer._write_request`` (5.4): a POST to
``/track``, ``/engage`` or ``/groups`` with a form-encoded body ``data=<JSON array>&verbose=1
&ip=0`` (the array is ``BufferedConsumer``'s batch form), authenticated by the project token
inside each record. How it travels is fanout's: :class:`fanout.http.HttpSender` on the
channel's worker thread, never the SDK's consumer (which would post on the caller's thread,
retry only ``https://`` URLs, and send ``alias`` to the US host whatever host is set).

Events older than Mixpanel's live window go to ``/import`` with the API secret as basic-auth
user name (as ``import_data(api_secret=...)`` does), sent the way Mixpanel documents
``/import`` rather than the SDK's legacy form: a gzipped JSON array with ``strict=1``, so
that Mixpanel names each record it refuses and only those events are dead-lettered. Without
a secret such events are rejected one by one with a reason instead of being sent to
``/track``, which would drop them silently.

One fanout event can become records on several endpoints (identify → profile ``$set`` +
``$identify``; group → group ``$set`` + membership). Every record is idempotent (events by
``$insert_id``, profile operations by nature), so when the channel retries a batch after
one endpoint failed, what already reached another endpoint is not counted twice.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final
from urllib.parse import quote_from_bytes

import httpx

from fanout.http import USER_AGENT, HttpProvider, HttpSender, encode_json, raise_for_status
from fanout.provider import (
    BatchTooLarge,
    DeliveryError,
    Event,
    PermanentError,
    ProviderConfig,
    Redactor,
)

from .__about__ import __version__
from ._declaration import (
    DEFAULT_API_HOST,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_REQUEST_BYTES,
    RESIDENCY_HOSTS,
    parse_api_host,
)
from ._mapping import Endpoint, event_record, import_time, to_records

__all__ = [
    "DEFAULT_API_HOST",
    "HISTORICAL_AFTER",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "MAX_REQUEST_BYTES",
    "RESIDENCY_HOSTS",
    "MixpanelProvider",
    "parse_api_host",
]

#: Records per request to /engage and /groups: the official SDK's BufferedConsumer never
#: sends more than 50, and Mixpanel documents no larger batch for profile updates.
MAX_PROFILE_RECORDS: Final = 50
#: /track ingests "last 5 days only"; older events go to /import. An hour of margin covers
#: clock skew and the time an event may wait in the queue or between retries.
HISTORICAL_AFTER: Final = _dt.timedelta(days=5) - _dt.timedelta(hours=1)

_PATHS: Final[dict[Endpoint, str]] = {
    "track": "/track",
    "engage": "/engage",
    "groups": "/groups",
    "import": "/import",
}
_CHUNK: Final[dict[Endpoint, int]] = {
    "track": MAX_BATCH_EVENTS,
    "import": MAX_BATCH_EVENTS,
    "engage": MAX_PROFILE_RECORDS,
    "groups": MAX_PROFILE_RECORDS,
}
_ORDER: Final[tuple[Endpoint, ...]] = ("engage", "groups", "track", "import")
_FORM: Final = "application/x-www-form-urlencoded"


class MixpanelProvider(HttpProvider):
    """Translates fanout events to Mixpanel records and posts them per endpoint."""

    def __init__(
        self,
        token: str,
        *,
        api_secret: str | None = None,
        api_host: str = DEFAULT_API_HOST,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not token:
            raise ValueError("a Mixpanel project token is required")
        self.api_host = parse_api_host(api_host)
        self._token = token
        self._api_secret = api_secret or None
        self._clock = clock
        # The token and secret (and the secret's basic-auth form), should a server echo them.
        self._redact = Redactor([token, self._api_secret])
        self._http = HttpSender(
            timeout=timeout,
            headers={"User-Agent": f"fanout-mixpanel/{__version__} {USER_AGENT}"},
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ProviderConfig) -> MixpanelProvider:
        return cls(
            config.require("token"),
            api_secret=config.get("api_secret"),
            api_host=config.get("api_host") or DEFAULT_API_HOST,
            timeout=config.timeout,
        )

    def __repr__(self) -> str:
        imports = "on" if self._api_secret else "off"
        return f"<MixpanelProvider api_host={self.api_host!r} imports={imports}>"

    # -- planning ----------------------------------------------------------------------

    def plan(
        self, batch: Sequence[Event]
    ) -> tuple[dict[Endpoint, list[tuple[int, dict[str, Any]]]], dict[int, str]]:
        """Records per endpoint, each with its event's batch index, and the events refused
        before sending (historical without an API secret)."""
        cutoff = _dt.datetime.fromtimestamp(self._clock(), _dt.timezone.utc) - HISTORICAL_AFTER
        plan: dict[Endpoint, list[tuple[int, dict[str, Any]]]] = {e: [] for e in _ORDER}
        rejected: dict[int, str] = {}
        track, imports = plan["track"], plan["import"]
        for i, event in enumerate(batch):
            if event.kind == "track":
                # The common case without the general path's list and tuple per event (what
                # to_records returns): fewer live objects per batch of 500, so fewer garbage
                # collections, which the whole process pays for.
                record = event_record(event, self._token, event.name or "", event.properties)
                if event.timestamp >= cutoff:
                    track.append((i, record))
                elif self._api_secret is not None:
                    imports.append((i, _for_import(event, record)))
                else:
                    rejected[i] = _no_secret(event)
                continue
            records = to_records(event, self._token)
            historical = event.timestamp < cutoff and event.kind != "alias"
            if historical and any(ep == "track" for ep, _ in records):
                if self._api_secret is None:
                    rejected[i] = _no_secret(event)
                    continue
                records = [
                    ("import", _for_import(event, rec)) if ep == "track" else (ep, rec)
                    for ep, rec in records
                ]
            for endpoint, record in records:
                plan[endpoint].append((i, record))
        return plan, rejected

    # -- sending -----------------------------------------------------------------------

    def send(self, batch: Sequence[Event]) -> None:
        plan, rejected = self.plan(batch)
        try:
            for endpoint in _ORDER:
                for chunk in _chunks(plan[endpoint], _CHUNK[endpoint]):
                    if endpoint == "import":
                        rejected.update(self._post_import(chunk))
                    else:
                        self._post_form(endpoint, chunk)
        except DeliveryError as exc:
            raise self._redact.error(exc) from None
        if rejected:
            raise self._redact.error(
                PermanentError(f"Mixpanel refused {len(rejected)} event(s)", rejected=rejected)
            )

    def _url(self, endpoint: Endpoint) -> str:
        return self.api_host + _PATHS[endpoint]

    def _post_form(self, endpoint: Endpoint, chunk: list[tuple[int, dict[str, Any]]]) -> None:
        # fanout's encoder (orjson) rather than the SDK's json.dumps: a tenth of the CPU per
        # batch, on the worker thread that shares the GIL with the caller. The decoded values
        # are the same; the bytes differ as docs/providers/mixpanel.md lists.
        data = encode_json([record for _, record in chunk])
        # The SDK's {"data": ..., "verbose": 1, "ip": 0}, form-encoded (see form_value).
        body = b"data=" + form_value(data) + b"&verbose=1&ip=0"
        _check_size(body, len(chunk), endpoint)
        response = self._http.post(self._url(endpoint), body, content_type=_FORM, gzip=False)
        raise_for_status(response, what=f"Mixpanel {_PATHS[endpoint]}")
        # verbose=1: {"status": 1, "error": null}; status 0 means nothing was accepted.
        try:
            result = response.json()
        except ValueError:
            result = None
        ok = result == 1 or (isinstance(result, dict) and result.get("status") == 1)
        if not ok:
            error = result.get("error") if isinstance(result, dict) else response.text[:300]
            raise PermanentError(
                f"Mixpanel {_PATHS[endpoint]} refused the batch: {error}",
                status_code=response.status_code,
            )

    def _post_import(self, chunk: list[tuple[int, dict[str, Any]]]) -> dict[int, str]:
        """POST to /import; the batch indices of the records Mixpanel refused, with why."""
        assert self._api_secret is not None  # plan() sends nothing here without one
        body = encode_json([record for _, record in chunk])
        _check_size(body, len(chunk), "import")
        response = self._http.post(
            self._url("import"),
            body,
            gzip=True,
            params={"strict": "1"},
            auth=(self._api_secret, ""),
        )
        if response.status_code != 400:
            raise_for_status(response, what="Mixpanel /import")
            return {}
        # strict=1: a 400 is a partial success that names each failed record.
        try:
            result = response.json()
        except ValueError:
            result = None
        failed = result.get("failed_records") if isinstance(result, dict) else None
        if not isinstance(failed, list) or not failed:
            raise_for_status(response, what="Mixpanel /import")
            return {}
        by_insert_id = {r["properties"].get("$insert_id"): i for i, r in chunk}
        rejected: dict[int, str] = {}
        for item in failed:
            if not isinstance(item, dict):
                continue
            index = item.get("index")
            if isinstance(index, int) and 0 <= index < len(chunk):
                event_index = chunk[index][0]
            elif item.get("insert_id") in by_insert_id:
                event_index = by_insert_id[item.get("insert_id")]
            else:
                continue
            reason = f"{item.get('field', '')}: {item.get('message', '')}".strip(": ")
            rejected[event_index] = f"Mixpanel /import refused it ({reason or 'no reason'})"
        if not rejected:
            raise_for_status(response, what="Mixpanel /import")
        return rejected


#: Every printable ASCII character: left as it is by form_value's percent-encoding of
#: non-ASCII bytes (the characters that need escaping were escaped before).
_PRINTABLE_BYTES: Final = bytes(range(33, 127))
_PRINTABLE: Final = _PRINTABLE_BYTES.decode("ascii")


def form_value(data: bytes) -> bytes:
    """``data`` as a form-urlencoded value that any form decoder turns back into ``data``.

    Only what a form decoder reads specially is escaped: ``%``, ``&``, ``+``, ``=``, space
    (as ``+``), and any byte outside printable ASCII (as ``%XX``: UTF-8, DEL). The SDK's
    ``requests`` (``quote_plus``) also escapes ``{"[:,]}`` and the rest of the JSON's
    punctuation, which cost 30 µs per event on the worker thread here and makes the body
    half again as large, for the same decoded value (docs/providers/mixpanel.md, "Bytes on
    the wire").
    """
    if b"%" in data:
        data = data.replace(b"%", b"%25")
    if b"&" in data:
        data = data.replace(b"&", b"%26")
    if b"+" in data:
        data = data.replace(b"+", b"%2B")
    if b"=" in data:
        data = data.replace(b"=", b"%3D")
    if b" " in data:
        data = data.replace(b" ", b"+")
    if data.translate(None, _PRINTABLE_BYTES):  # anything left is not printable ASCII
        data = quote_from_bytes(data, safe=_PRINTABLE).encode("ascii")
    return data


def _no_secret(event: Event) -> str:
    """Why an event too old for /track is refused when there is no API secret."""
    return (
        f"event is older than Mixpanel's 5-day /track window "
        f"({event.timestamp.isoformat()}); set MIXPANEL_API_SECRET "
        "(FANOUT_MIXPANEL_API_SECRET) to send it to /import"
    )


def _for_import(event: Event, record: dict[str, Any]) -> dict[str, Any]:
    """A /track record made ready for /import: ``time`` in integer milliseconds (unless the
    caller set ``time`` themselves, which the SDK lets them do)."""
    if "time" in event.properties:
        return record
    props = dict(record["properties"])
    props["time"] = import_time(event)
    return {**record, "properties": props}


def _chunks(
    items: list[tuple[int, dict[str, Any]]], size: int
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_size(body: bytes, records: int, endpoint: Endpoint) -> None:
    if len(body) > MAX_REQUEST_BYTES and records > 1:
        raise BatchTooLarge(
            f"Mixpanel {_PATHS[endpoint]} body would be {len(body)} bytes, above "
            f"{MAX_REQUEST_BYTES}"
        )
