"""fanout-amplitude: the ``amplitude`` provider for fanout.

Installed, it is found through the ``fanout`` entry-point group; with ``AMPLITUDE_API_KEY``
set (or ``FANOUT_AMPLITUDE_API_KEY``) every ``fanout.track()``, ``identify()``, ``page()``
and ``group()`` also reaches Amplitude, in the form the official ``amplitude-analytics`` SDK
sends, batched, retried and isolated by fanout's channel rather than by the SDK's threads.

Importing this package does not import the SDK: the factory does, when the provider is
enabled.
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
    from ._provider import AmplitudeProvider

__all__ = ["LIMITS", "SETTINGS", "AmplitudeProvider", "__version__", "register_providers"]

ZONES: Final = ("US", "EU")


def _zone(value: str) -> str:
    zone = value.strip().upper()
    if zone not in ZONES:
        raise ValueError(f"expected one of {', '.join(ZONES)}")
    return zone


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return value


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "api_key",
        help="API key of the Amplitude project (Settings → Projects → your project → General).",
        aliases=("AMPLITUDE_API_KEY",),
        required=True,
        secret=True,
    ),
    Setting(
        "server_zone",
        help="Data residency: US (api2.amplitude.com) or EU (api.eu.amplitude.com).",
        aliases=("AMPLITUDE_SERVER_ZONE",),
        default="US",
        parse=_zone,
    ),
    Setting(
        "use_batch",
        help="true: the Batch Event Upload API (/batch, 20 MB per request) instead of HTTP V2.",
        aliases=("AMPLITUDE_USE_BATCH",),
        default="false",
        parse=_bool,
    ),
    Setting(
        "server_url",
        help="Full endpoint URL, overriding the zone (a proxy, or a local test server).",
        aliases=("AMPLITUDE_SERVER_URL",),
        parse=_url,
    ),
    Setting(
        "min_id_length",
        help="Shortest user_id/device_id Amplitude accepts (Amplitude's default is 5).",
        aliases=("AMPLITUDE_MIN_ID_LENGTH",),
        parse=_positive,
    ),
)

#: HTTP V2: fewer than 2,000 events and under 1 MB per request. ``max_bytes`` leaves room
#: for what fanout's size estimate does not count (the Amplitude field names, the
#: envelope); the provider checks the exact body and splits or rejects what still exceeds.
LIMITS = BatchLimits(max_events=2000, max_bytes=700_000, max_event_bytes=999_000)


#: Public names imported on first use (their module imports the SDK): name → module.
_LAZY: Final = {"AmplitudeProvider": "._provider"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "amplitude",
        # By name: the SDK is imported when the provider is enabled.
        "fanout_amplitude._provider:AmplitudeProvider.from_config",
        settings=SETTINGS,
        limits=LIMITS,
        kinds=frozenset({"identify", "track", "page", "group"}),
        capabilities=frozenset(
            {
                Capability.HISTORICAL_IMPORT,  # `time` is kept, however old
                Capability.IDENTITY_MERGE,  # user_id + device_id on one event
                Capability.GROUPS,
                Capability.DEDUPLICATION,  # event_id → insert_id
            }
        ),
        description="Amplitude HTTP V2 / Batch API, as amplitude-analytics sends it.",
    )
