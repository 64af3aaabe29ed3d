"""Built-in providers, registered through the same hook as third-party plugins."""

from __future__ import annotations

from ..collector import protocol as _collector_protocol
from ..hookspecs import RegisterProvider, hookimpl
from ..provider import BatchLimits, Capability, Provider, ProviderConfig, Setting
from . import console, memory, null


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        "null",
        null.NullProvider.from_config,
        description="Accepts and discards every event (counting them).",
        auto_enable=False,
        limits=BatchLimits(max_events=10_000, max_bytes=64 * 1024 * 1024),
    )
    register(
        "console",
        console.ConsoleProvider.from_config,
        settings=(
            Setting(
                "file",
                help="Where to write JSON lines: '-' for stderr (default), or a file path.",
                default="-",
            ),
        ),
        description="Writes each event as one JSON line to stderr or a file (development).",
        auto_enable=False,
        limits=BatchLimits(max_events=1000, max_bytes=16 * 1024 * 1024),
    )
    register(
        "collector",
        _collector_factory,
        settings=(
            Setting(
                "url",
                help="Base URL of a fanout collector, e.g. http://127.0.0.1:8765.",
                required=True,
                parse=_collector_protocol.parse_url,
            ),
            Setting("key", help="Server key (sk_...) from `fanout collector keys create`.",
                    required=True, secret=True),
        ),
        description="fanout's own HTTP protocol (docs/protocol.md): the reference collector.",
        limits=BatchLimits(
            max_events=_collector_protocol.MAX_BATCH_EVENTS,
            # Below the protocol's exact byte limit, because the channel batches by each
            # event's estimated size; the provider checks the exact size before sending.
            max_bytes=_collector_protocol.MAX_BATCH_BYTES * 4 // 5,
            max_event_bytes=_collector_protocol.MAX_EVENT_BYTES,
        ),
        capabilities={
            Capability.DEDUPLICATION,
            Capability.IDENTITY_MERGE,
            Capability.HISTORICAL_IMPORT,
            Capability.GROUPS,
        },
    )
    register(
        "webhook",
        "fanout.providers.webhook:WebhookProvider.from_config",
        settings=(
            Setting(
                "url",
                help="URL the signed JSON batches are POSTed to.",
                required=True,
                parse=_webhook_url,
            ),
            Setting("secret", help="HMAC-SHA256 signing secret shared with the receiver.",
                    required=True, secret=True),
        ),
        description="Signed JSON batches of fanout's canonical events to any URL.",
        limits=BatchLimits(max_events=500, max_bytes=768 * 1024, max_event_bytes=1000 * 1024),
        capabilities={Capability.DEDUPLICATION, Capability.HISTORICAL_IMPORT},
    )
    register(
        "memory",
        _memory_factory,
        description="Keeps events in memory for tests (fanout.testing).",
        auto_enable=False,
        limits=BatchLimits(max_events=10_000, max_bytes=64 * 1024 * 1024),
    )


def _collector_factory(config: ProviderConfig) -> Provider:
    # Imported on use: httpx costs an import only when the collector is enabled.
    from .collector import CollectorProvider

    return CollectorProvider.from_config(config)


def _webhook_url(value: str) -> str:
    from .webhook import parse_url

    return parse_url(value)


def _memory_factory(config: ProviderConfig) -> Provider:
    return memory.InMemoryProvider()
