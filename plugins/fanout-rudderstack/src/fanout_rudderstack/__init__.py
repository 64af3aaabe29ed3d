"""fanout-rudderstack: the ``rudderstack`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with
``RUDDERSTACK_WRITE_KEY`` and ``RUDDERSTACK_DATA_PLANE_URL`` set (or their ``FANOUT_RUDDERSTACK_``
forms) every fanout call also reaches RudderStack, in the form ``rudder-sdk-python`` sends,
built by fanout-segment's message mapping (RudderStack speaks Segment's API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fanout.provider import (
    BatchLimits,
    Capability,
    RegisterProvider,
    Setting,
    hookimpl,
    lazy_exports,
)

from .__about__ import __version__

if TYPE_CHECKING:
    from ._provider import RudderStackProvider

__all__ = ["LIMITS", "SETTINGS", "RudderStackProvider", "__version__", "register_providers"]


def _data_plane_url(value: str) -> str:
    from ._provider import parse_data_plane_url

    return parse_data_plane_url(value)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "write_key",
        help="Write key of the RudderStack source (Sources → your source → Setup).",
        aliases=("RUDDERSTACK_WRITE_KEY",),
        required=True,
        secret=True,
    ),
    Setting(
        "data_plane_url",
        help="Your data plane URL, e.g. https://yourcompany.dataplane.rudderstack.com.",
        aliases=("RUDDERSTACK_DATA_PLANE_URL",),
        required=True,
        parse=_data_plane_url,
    ),
)

#: Segment-compatible batches; the data plane takes up to 4,000 KB per request. ``max_bytes``
#: leaves room for what fanout's size estimate does not count; the provider checks the
#: exact body and splits what would still exceed.
LIMITS = BatchLimits(max_events=2500, max_bytes=3_000_000, max_event_bytes=4 << 10 << 10)


#: Public names imported on first use (their module imports the SDK): name → module.
_LAZY: Final = {"RudderStackProvider": "._provider"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "rudderstack",
        # By name: the SDK is imported when the provider is enabled.
        "fanout_rudderstack._provider:RudderStackProvider.from_config",
        settings=SETTINGS,
        limits=LIMITS,
        kinds=frozenset({"identify", "track", "page", "alias", "group"}),
        capabilities=frozenset(
            {
                Capability.HISTORICAL_IMPORT,
                Capability.IDENTITY_MERGE,
                Capability.GROUPS,
                Capability.DEDUPLICATION,  # event_id → messageId
            }
        ),
        description="RudderStack data plane (/v1/batch), as rudder-sdk-python sends it.",
    )
