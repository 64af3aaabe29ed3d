"""What fanout shows about the ``mixpanel`` provider without importing the mixpanel SDK.

The entry point imports this module for every process that loads plugins, enabled or
not, so it holds only the declaration (settings, batch limits, the host parser) and the
documented limits it is made of. The SDK is imported by :mod:`fanout_mixpanel._provider`,
when the provider is enabled.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from fanout.provider import BatchLimits, Setting

__all__ = [
    "DEFAULT_API_HOST",
    "LIMITS",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "MAX_REQUEST_BYTES",
    "RESIDENCY_HOSTS",
    "SETTINGS",
    "parse_api_host",
]

DEFAULT_API_HOST: Final = "https://api.mixpanel.com"
#: Mixpanel's data-residency ingestion hosts (US default, EU, India).
RESIDENCY_HOSTS: Final = (
    "https://api.mixpanel.com",
    "https://api-eu.mixpanel.com",
    "https://api-in.mixpanel.com",
)
#: Mixpanel's ingestion docs: /track and /import take up to 2000 events per request.
MAX_BATCH_EVENTS: Final = 2000
#: Uncompressed request body. Mixpanel's docs give both 2 MB (API reference, and the 413
#: sample "max limit of 2097152 bytes") and 10 MB (the 413 troubleshooting page); the
#: smaller one is used, measured on the body as sent.
MAX_REQUEST_BYTES: Final = 2 * 1024 * 1024
#: One event: "must be smaller than 1MB of uncompressed JSON".
MAX_EVENT_BYTES: Final = 1_000_000


def parse_api_host(value: str) -> str:
    """``MIXPANEL_API_HOST``: a base URL; a bare host name (the SDK's ``api_host`` form,
    e.g. ``api-eu.mixpanel.com``) means https."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "expected a host or URL such as https://api-eu.mixpanel.com "
            f"(Mixpanel's hosts: {', '.join(RESIDENCY_HOSTS)})"
        )
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "token",
        help="Project token (Project Settings → Access Keys).",
        aliases=("MIXPANEL_TOKEN",),
        required=True,
        secret=True,
    ),
    Setting(
        "api_secret",
        help="Project API secret, for events older than 5 days (sent to /import). "
        "Unset: such events are dead-lettered with the reason.",
        aliases=("MIXPANEL_API_SECRET",),
        secret=True,
    ),
    Setting(
        "api_host",
        help="Ingestion host: https://api.mixpanel.com (US), https://api-eu.mixpanel.com (EU) "
        "or https://api-in.mixpanel.com (India) data residency.",
        aliases=("MIXPANEL_API_HOST",),
        default=DEFAULT_API_HOST,
        parse=parse_api_host,
    ),
)

#: From Mixpanel's ingestion docs: 2000 events per /track or /import request, 1 MB per
#: event. ``max_bytes`` is half the 2 MB request limit: /track's form encoding can double
#: the JSON, and the provider checks each body as sent and asks for a split above 2 MB.
#: ``preferred_events``: 500 per request unless FANOUT_MIXPANEL_BATCH_SIZE says otherwise;
#: Mixpanel takes 2,000, and larger batches mean fewer worker wake-ups in the app.
LIMITS: Final = BatchLimits(
    max_events=MAX_BATCH_EVENTS,
    max_bytes=MAX_REQUEST_BYTES // 2,
    max_event_bytes=MAX_EVENT_BYTES,
    preferred_events=500,
)
