"""What fanout shows about the ``posthog`` provider without importing posthog-python.

The entry point imports this module for every process that loads plugins, enabled or
not, so it holds only the declaration: settings, batch limits and their parsers, none of
which needs the SDK. posthog-python is imported by :mod:`fanout_posthog._provider`, when
the provider is built. The constants copied from
the SDK are checked against it by ``tests/test_posthog_plugin.py``.
"""

from __future__ import annotations

import math
from typing import Final
from urllib.parse import urlsplit

from fanout.provider import BatchLimits, Setting

__all__ = [
    "DEFAULT_HOST",
    "LIMITS",
    "MAX_MSG_SIZE",
    "MIN_HISTORICAL_HOURS",
    "SETTINGS",
    "parse_bool",
    "parse_historical_after",
    "parse_host",
]

#: ``posthog.request.DEFAULT_HOST``: the US cloud's ingestion host.
DEFAULT_HOST: Final = "https://us.i.posthog.com"
#: ``posthog.consumer.MAX_MSG_SIZE``: the SDK drops events above 900 KiB.
MAX_MSG_SIZE: Final = 900 * 1024

#: PostHog's historical-migration docs: imported events must be "dated at least 48 hours
#: before the time of import". Younger events always take the live path.
MIN_HISTORICAL_HOURS: Final = 48.0

#: From PostHog's docs and posthog-python: the ``/batch/`` body must stay under 20 MB, and
#: the SDK keeps batches to 5 MiB "to be conservative" and events to 900 KiB
#: (``posthog.consumer.BATCH_SIZE_LIMIT`` / ``MAX_MSG_SIZE``). The endpoint sets no event
#: count; 1,000 keeps one request well inside the byte limit for typical events.
LIMITS: Final = BatchLimits(
    max_events=1000,
    max_bytes=5 * 1024 * 1024,
    max_event_bytes=MAX_MSG_SIZE,
)


def parse_host(value: str) -> str:
    """An ``http(s)://`` base URL, without a trailing slash.

    PostHog's app hosts (``https://us.posthog.com``, what the browser shows) do not ingest
    events; :func:`fanout_posthog._provider.from_config` maps them to their ingestion hosts
    with the SDK's own helper, when the provider is built.
    """
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL, e.g. https://eu.i.posthog.com")
    return value.rstrip("/")


def parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def parse_historical_after(value: str) -> float:
    """Hours (at least 48), or ``never`` (``inf``)."""
    text = value.strip().lower()
    if text in ("never", "off"):
        return math.inf
    try:
        hours = float(text)
    except ValueError:
        raise ValueError("must be a number of hours (at least 48) or 'never'") from None
    if not hours >= MIN_HISTORICAL_HOURS or math.isinf(hours):
        raise ValueError(
            f"must be at least {MIN_HISTORICAL_HOURS:g} hours: PostHog accepts historical "
            "migrations only for events older than that"
        )
    return hours


SETTINGS: Final = (
    Setting(
        "api_key",
        help="PostHog project API key (phc_...). Sent in the request body, never logged.",
        aliases=("POSTHOG_API_KEY",),
        required=True,
        secret=True,
    ),
    Setting(
        "host",
        help="Ingestion host: https://us.i.posthog.com (US cloud), https://eu.i.posthog.com "
        "(EU cloud) or your self-hosted URL.",
        aliases=("POSTHOG_HOST",),
        default=DEFAULT_HOST,
        parse=parse_host,
    ),
    Setting(
        "gzip",
        help="Gzip request bodies of 1 KiB and more (PostHog accepts Content-Encoding: gzip).",
        default="true",
        parse=parse_bool,
    ),
    Setting(
        "historical_after",
        help="Events older than this many hours (at least 48) go to PostHog's historical "
        "migration path; 'never' sends everything live.",
        default="48",
        parse=parse_historical_after,
    ),
)
