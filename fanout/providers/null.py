"""``null``: accepts and discards. The default when nothing else is configured, so that
an application can call ``fanout.track()`` unconditionally in every environment."""

from __future__ import annotations

from collections.abc import Sequence

from .._events import Event
from ..provider import ProviderConfig


class NullProvider:
    def __init__(self) -> None:
        self.count = 0

    @classmethod
    def from_config(cls, config: ProviderConfig) -> NullProvider:
        return cls()

    def send(self, batch: Sequence[Event]) -> None:
        self.count += len(batch)

    def close(self) -> None:
        pass
