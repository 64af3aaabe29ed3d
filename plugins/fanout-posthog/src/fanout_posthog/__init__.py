"""fanout-posthog: the ``posthog`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with ``POSTHOG_API_KEY``
set it is enabled automatically (or pick it with ``FANOUT_PROVIDERS=posthog``)::

    pip install fanout-analytics fanout-posthog
    export POSTHOG_API_KEY=phc_...

Events go to PostHog's ``/batch/`` endpoint in the form posthog-python sends, through
fanout's channel (one queue, one worker, fanout's retries), never through the SDK's own
consumer thread. See ``docs/providers/posthog.md`` for the mapping and the differences.

This module is the entry point, imported by every process that loads plugins, so it
imports no SDK: the declaration lives in ``_declaration``, and the provider (with
posthog-python) is imported when the provider is enabled, or when one of its names below
is first used (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fanout.provider import Capability, RegisterProvider, hookimpl, lazy_exports

from .__about__ import __version__
from ._declaration import LIMITS, MIN_HISTORICAL_HOURS, SETTINGS

if TYPE_CHECKING:
    from ._mapping import EVENT_ID_NAMESPACE, MessageBuilder, posthog_uuid
    from ._provider import PostHogProvider, from_config

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

#: Public names whose modules import posthog-python: name → module, imported on first use.
_LAZY: Final = {
    "EVENT_ID_NAMESPACE": "._mapping",
    "MessageBuilder": "._mapping",
    "posthog_uuid": "._mapping",
    "PostHogProvider": "._provider",
    "from_config": "._provider",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "posthog",
        "fanout_posthog._provider:from_config",
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
