"""fanout-mixpanel: the ``mixpanel`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with ``MIXPANEL_TOKEN`` set
(or ``FANOUT_MIXPANEL_TOKEN``) every ``fanout.track()`` also reaches Mixpanel, as the records
the official ``mixpanel`` SDK builds, batched, retried and isolated by fanout's channel
rather than sent by the SDK's consumer on the caller's thread.

This module is the entry point, imported by every process that loads plugins, so it
imports no SDK: the declaration lives in ``_declaration``, and the provider (with the
mixpanel SDK) is imported when the provider is enabled, or when one of its names below is
first used (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fanout.provider import Capability, RegisterProvider, hookimpl, lazy_exports

from .__about__ import __version__
from ._declaration import DEFAULT_API_HOST, LIMITS, RESIDENCY_HOSTS, SETTINGS, parse_api_host

if TYPE_CHECKING:
    from ._mapping import LIB, PAGE_EVENT, insert_id, to_records
    from ._provider import HISTORICAL_AFTER, MixpanelProvider

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
    "parse_api_host",
    "register_providers",
    "to_records",
]

#: Public names imported on first use: name → module.
_LAZY: Final = {
    "LIB": "._mapping",
    "PAGE_EVENT": "._mapping",
    "insert_id": "._mapping",
    "to_records": "._mapping",
    "HISTORICAL_AFTER": "._provider",
    "MixpanelProvider": "._provider",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "mixpanel",
        "fanout_mixpanel._provider:MixpanelProvider.from_config",
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
