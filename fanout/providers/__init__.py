"""Built-in providers, registered through the same hook as third-party plugins."""

from __future__ import annotations

from ..hookspecs import RegisterProvider, hookimpl
from ..provider import BatchLimits, ProviderConfig, Setting
from . import console, null


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
        "memory",
        _memory_factory,
        description="Keeps events in memory for tests (fanout.testing).",
        auto_enable=False,
        limits=BatchLimits(max_events=10_000, max_bytes=64 * 1024 * 1024),
    )


def _memory_factory(config: ProviderConfig) -> object:
    from ..testing import InMemoryProvider

    return InMemoryProvider()
