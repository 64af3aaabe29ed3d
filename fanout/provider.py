"""What a provider plugin implements and declares. The public surface for plugin authors.

A provider only translates a batch of :class:`~fanout.Event` to its backend's wire format
and sends it; queues, threads, batching, retries, dead letters and statistics belong to the
channel that owns it. Failures are reported by raising :class:`RetryableError` or
:class:`PermanentError` (or :class:`BatchTooLarge`); anything else a provider raises is
treated as a retryable bug and logged with the provider's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from ._events import KINDS, Event
from ._exceptions import BatchTooLarge, ConfigError, PermanentError, RetryableError

__all__ = [
    "ALL_KINDS",
    "BatchLimits",
    "BatchTooLarge",
    "Capability",
    "PermanentError",
    "Provider",
    "ProviderConfig",
    "ProviderFactory",
    "ProviderSpec",
    "RetryableError",
    "Setting",
]

#: Every event kind; a provider that supports fewer declares ``kinds=`` explicitly.
ALL_KINDS: Final[frozenset[str]] = KINDS


class Capability:
    """Names of optional abilities a provider declares (shown by ``fanout plugins``)."""

    HISTORICAL_IMPORT: Final = "historical_import"
    IDENTITY_MERGE: Final = "identity_merge"
    GROUPS: Final = "groups"
    DEDUPLICATION: Final = "deduplication"


@runtime_checkable
class Provider(Protocol):
    """Sends one batch to one backend.

    ``send`` is called from the provider's own channel worker, one batch at a time, so a
    provider needs no locking of its own. It returns normally when the backend accepted the
    whole batch, and raises to say otherwise:

    - :class:`RetryableError` (``retry_after=`` seconds if the backend said so): timeouts,
      connection errors, 5xx, 429. The channel retries with backoff.
    - :class:`BatchTooLarge`: the channel splits the batch and sends the halves.
    - :class:`PermanentError`: the batch is dead-lettered, or with ``rejected={index:
      reason}`` only those events are, and the rest count as delivered.
    """

    def send(self, batch: Sequence[Event]) -> None: ...

    def close(self) -> None:
        """Release connections. Called once at shutdown, from the channel's thread."""
        ...


@dataclasses.dataclass(frozen=True)
class Setting:
    """One configuration field of a provider.

    It is read from ``FANOUT_<PROVIDER>_<FIELD>`` first, then from each of ``aliases`` (the
    vendor's own conventional names, e.g. ``POSTHOG_API_KEY``). ``secret=True`` masks the
    value in ``repr``, logs, ``fanout plugins`` / ``fanout check`` and error messages.
    ``parse`` turns the string into the value the factory receives; it raises ``ValueError``
    for a malformed value, which becomes a ``ConfigError`` naming the variable.
    """

    field: str
    help: str = ""
    aliases: tuple[str, ...] = ()
    default: str | None = None
    required: bool = False
    secret: bool = False
    parse: Callable[[str], Any] = str

    def env_names(self, provider: str) -> tuple[str, ...]:
        """The environment variables this setting is read from, in order of precedence."""
        return (f"FANOUT_{env_token(provider)}_{self.field.upper()}", *self.aliases)


def env_token(name: str) -> str:
    """``my-provider`` → ``MY_PROVIDER``: the form a provider name takes in variable names."""
    return name.upper().replace("-", "_").replace(".", "_")


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    """What one request to the backend may carry, from the backend's documentation.

    The channel never builds a batch above ``max_events`` or ``max_bytes`` (by the events'
    approximate encoded size), and dead-letters, with a reason, an event above
    ``max_event_bytes`` rather than sending something the backend will refuse.
    """

    max_events: int = 500
    max_bytes: int = 4 * 1024 * 1024
    max_event_bytes: int = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    """What a provider factory receives: its resolved settings and delivery knobs."""

    name: str
    settings: Mapping[str, Any]
    timeout: float = 10.0

    def __repr__(self) -> str:
        # Values are masked wholesale: the factory knows which are secret, repr does not.
        return f"ProviderConfig(name={self.name!r}, settings=<{len(self.settings)} values>)"

    def get(self, field: str, default: Any = None) -> Any:
        return self.settings.get(field, default)

    def require(self, field: str) -> Any:
        """The value of ``field``, or a ``ConfigError`` naming it (for factories' own checks)."""
        value = self.settings.get(field)
        if value is None:
            raise ConfigError(
                f"provider {self.name!r} needs the setting {field!r}",
                variable=f"FANOUT_{env_token(self.name)}_{field.upper()}",
                provider=self.name,
            )
        return value


ProviderFactory = Callable[[ProviderConfig], Provider]


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    """A provider as registered: how to build it, and everything fanout shows about it."""

    name: str
    factory: ProviderFactory
    settings: tuple[Setting, ...] = ()
    limits: BatchLimits = BatchLimits()
    kinds: frozenset[str] = ALL_KINDS
    capabilities: frozenset[str] = frozenset()
    description: str = ""
    plugin: str = ""
    #: Enabled automatically when FANOUT_PROVIDERS is unset and its required settings are set.
    auto_enable: bool = True

    def required_settings(self) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if s.required)
