"""fanout-mixpanel: the ``mixpanel`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with ``MIXPANEL_TOKEN`` set
(or ``FANOUT_MIXPANEL_TOKEN``) every ``fanout.track()`` also reaches Mixpanel, as the records
the official ``mixpanel`` SDK builds, batched, retried and isolated by fanout's channel
rather than sent by the SDK's consumer on the caller's thread.
"""

from __future__ import annotations

import fanout
from fanout.hookspecs import RegisterProvider
from fanout.provider import BatchLimits, Capability, Setting

from .__about__ import __version__
from ._mapping import LIB, PAGE_EVENT, insert_id, to_records
from ._provider import (
    DEFAULT_API_HOST,
    HISTORICAL_AFTER,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_REQUEST_BYTES,
    RESIDENCY_HOSTS,
    MixpanelProvider,
    parse_api_host,
)

__all__ = [
    "DEFAULT_API_HOST",
    "HISTORICAL_AFTER",
    "LIB",
    "LIMITS",
    "PAGE_EVENT",
    "RESIDENCY_HOSTS",
    "SETTINGS",
    "MixpanelProvider",
    "__version__",
    "insert_id",
    "register_providers",
    "to_records",
]

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
LIMITS = BatchLimits(
    max_events=MAX_BATCH_EVENTS,
    max_bytes=MAX_REQUEST_BYTES // 2,
    max_event_bytes=MAX_EVENT_BYTES,
)


@fanout.hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "mixpanel",
        MixpanelProvider.from_config,
        settings=SETTINGS,
        limits=LIMITS,
        kinds=frozenset({"identify", "track", "page", "alias", "group"}),
        capabilities=frozenset(
            {
                Capability.HISTORICAL_IMPORT,  # /import with the API secret
                Capability.IDENTITY_MERGE,  # $identify (+ $device_id/$user_id), $create_alias
                Capability.GROUPS,  # $group_set on /groups + group key on the profile
                Capability.DEDUPLICATION,  # event_id → $insert_id
            }
        ),
        description="Mixpanel ingestion API (/track, /engage, /groups, /import), "
        "as the official mixpanel SDK builds it.",
    )
