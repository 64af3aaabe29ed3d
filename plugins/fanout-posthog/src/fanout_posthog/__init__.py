"""fanout-posthog: the ``posthog`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with ``POSTHOG_API_KEY``
set it is enabled automatically (or pick it with ``FANOUT_PROVIDERS=posthog``)::

    pip install fanout-analytics fanout-posthog
    export POSTHOG_API_KEY=phc_...

Events go to PostHog's ``/batch/`` endpoint in the form posthog-python sends, through
fanout's channel (one queue, one worker, fanout's retries), never through the SDK's own
consumer thread. See ``docs/providers/posthog.md`` for the mapping and the differences.
"""

from __future__ import annotations

import math
from typing import Any, Final
from urllib.parse import urlsplit

from posthog.consumer import MAX_MSG_SIZE
from posthog.request import DEFAULT_HOST, determine_server_host

import fanout
from fanout.hookspecs import RegisterProvider
from fanout.provider import BatchLimits, Capability, ProviderConfig, Setting

from .__about__ import __version__
from ._mapping import EVENT_ID_NAMESPACE, MessageBuilder, posthog_uuid
from ._provider import PostHogProvider

__all__ = [
    "EVENT_ID_NAMESPACE",
    "LIMITS",
    "MIN_HISTORICAL_HOURS",
    "SETTINGS",
    "MessageBuilder",
    "PostHogProvider",
    "__version__",
    "from_config",
    "posthog_uuid",
    "register_providers",
]

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
    """An ``http(s)://`` base URL; PostHog's app hosts become their ingestion hosts.

    ``https://us.posthog.com`` (what the browser shows) does not ingest events; the SDK
    maps it to ``https://us.i.posthog.com``, and so does this, with the SDK's own helper.
    """
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL, e.g. https://eu.i.posthog.com")
    return determine_server_host(value).rstrip("/")


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


def _coerce(value: Any, parse: Any) -> Any:
    """Settings passed as ``Client(settings=...)`` arrive unparsed when they are strings."""
    return parse(value) if isinstance(value, str) else value


def from_config(config: ProviderConfig) -> PostHogProvider:
    """The provider factory: resolved settings in, a ready provider out."""
    gzip = _coerce(config.get("gzip", True), parse_bool)
    historical = config.get("historical_after", "48")
    if isinstance(historical, (int, float)) and not isinstance(historical, bool):
        historical = str(historical)  # hours, validated the same way as the environment's
    return PostHogProvider(
        api_key=str(config.require("api_key")),
        host=_coerce(config.get("host") or DEFAULT_HOST, parse_host),
        gzip=bool(gzip),
        historical_after=_coerce(historical, parse_historical_after) * 3600.0,
        timeout=config.timeout,
    )


@fanout.hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "posthog",
        from_config,
        settings=SETTINGS,
        limits=LIMITS,
        capabilities={
            Capability.HISTORICAL_IMPORT,
            Capability.IDENTITY_MERGE,
            Capability.GROUPS,
            Capability.DEDUPLICATION,
        },
        description="PostHog product analytics (capture /batch/ endpoint, as posthog-python).",
    )
