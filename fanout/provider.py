"""What a provider plugin implements and declares. The public surface for plugin authors.

A provider only translates a batch of :class:`~fanout.Event` to its backend's wire format
and sends it; queues, threads, batching, retries, dead letters and statistics belong to the
channel that owns it. Failures are reported by raising :class:`RetryableError` or
:class:`PermanentError` (or :class:`BatchTooLarge`); anything else a provider raises is
treated as a retryable bug and logged with the provider's name.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from ._events import KINDS, Event
from ._exceptions import (
    BatchTooLarge,
    ConfigError,
    DeliveryError,
    PermanentError,
    PluginError,
    RetryableError,
)
from ._lazy import lazy_exports
from ._redact import Redactor
from .hookspecs import RegisterProcessor, RegisterProvider, hookimpl

__all__ = [
    "ALL_KINDS",
    "BatchLimits",
    "BatchTooLarge",
    "Capability",
    "ConfigError",
    "DeliveryError",
    "Event",
    "PermanentError",
    "Provider",
    "ProviderConfig",
    "ProviderFactory",
    "ProviderSpec",
    "Redactor",
    "RegisterProcessor",
    "RegisterProvider",
    "RetryableError",
    "Setting",
    "close_provider",
    "describe_instance",
    "hookimpl",
    "lazy_exports",
    "provider_after_fork",
]

T = TypeVar("T")

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
    """Sends one batch to one backend. ``send`` is the one required member.

    ``send`` is called from the provider's own channel worker, one batch at a time, so a
    provider needs no locking of its own. It returns normally when the backend accepted the
    whole batch, and raises to say otherwise:

    - :class:`RetryableError` (``retry_after=`` seconds if the backend said so): timeouts,
      connection errors, 5xx, 429. The channel retries with backoff. With ``pending=[i,
      ...]`` the other events were delivered and only those are retried.
    - :class:`BatchTooLarge`: the channel splits the batch and sends the halves.
    - :class:`PermanentError`: the batch is dead-lettered, or with ``rejected={index:
      reason}`` only those events are, and the rest count as delivered.

    Optional members, read once when the channel is built (see :func:`close_provider`,
    :func:`provider_after_fork`, :func:`describe_instance`):

    ``close() -> None``
        Release connections; called once at shutdown from the channel's thread. Default:
        nothing to release.
    ``after_fork() -> None``
        Reset per-process state in a forked child. Default: nothing to reset
        (:class:`fanout.http.HttpSender` already starts afresh in a child by itself).
    ``name: str``, ``limits: BatchLimits``, ``kinds: frozenset[str]``
        Only for provider objects passed straight to ``Client(providers=[obj])``, which
        have no registration: ``name`` is required; ``limits`` defaults to
        ``BatchLimits()`` and ``kinds`` to every kind.
    """

    def send(self, batch: Sequence[Event]) -> None: ...


def close_provider(provider: Provider) -> None:
    """Call the provider's optional ``close()``."""
    close = getattr(provider, "close", None)
    if callable(close):
        close()


def provider_after_fork(provider: Provider) -> None:
    """Call the provider's optional ``after_fork()``."""
    hook = getattr(provider, "after_fork", None)
    if callable(hook):
        hook()


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
        """The environment variables this setting is read from, in order of precedence.

        A named instance (``posthog:eu``) reads only ``FANOUT_POSTHOG_EU_<FIELD>``: the
        vendor's own names (``POSTHOG_API_KEY``) belong to the unnamed instance.
        """
        own = f"FANOUT_{env_token(provider)}_{self.field.upper()}"
        return (own,) if INSTANCE_SEPARATOR in provider else (own, *self.aliases)


#: ``posthog:eu`` is the instance ``eu`` of the provider ``posthog``.
INSTANCE_SEPARATOR: Final = ":"


def env_token(name: str) -> str:
    """``my-provider`` → ``MY_PROVIDER``, ``posthog:eu`` → ``POSTHOG_EU``: the form a
    provider (or instance) name takes in variable names."""
    return name.upper().replace("-", "_").replace(".", "_").replace(INSTANCE_SEPARATOR, "_")


def split_instance(name: str) -> tuple[str, str | None]:
    """``posthog:eu`` → ``("posthog", "eu")``; ``posthog`` → ``("posthog", None)``."""
    base, sep, instance = name.partition(INSTANCE_SEPARATOR)
    return base, (instance if sep else None)


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
    #: The batch size to use when ``FANOUT_BATCH_SIZE`` is not set (``None``: 100). A
    #: backend that takes large batches cheaply (Mixpanel: 2,000 per request) sends fewer,
    #: larger requests by default, which costs the app fewer worker wake-ups.
    preferred_events: int | None = None


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
        """The parsed value of ``field`` (untyped; prefer the typed getters below)."""
        return self.settings.get(field, default)

    def _typed(self, field: str, kind: type[T], default: T | None) -> T | None:
        value = self.settings.get(field)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"setting {field!r} of provider {self.name!r} must be a {kind.__name__}, "
                f"not {type(value).__name__} (declare a parse= for it)",
                variable=self.variable(field),
                provider=self.name,
            )
        return value

    def get_str(self, field: str, default: str | None = None) -> str | None:
        """``field`` as a string, or ``default`` when unset."""
        return self._typed(field, str, default)

    def get_int(self, field: str, default: int | None = None) -> int | None:
        return self._typed(field, int, default)

    def get_float(self, field: str, default: float | None = None) -> float | None:
        return self._typed(field, float, default)

    def get_bool(self, field: str, default: bool | None = None) -> bool | None:
        return self._typed(field, bool, default)

    def require_str(self, field: str) -> str:
        """``field`` as a string, or a ``ConfigError`` naming its variable."""
        value = self.get_str(field)
        if value is None:
            self.require(field)  # raises
        assert value is not None
        return value

    def variable(self, field: str) -> str:
        """The ``FANOUT_<PROVIDER>_<FIELD>`` variable of ``field``."""
        return f"FANOUT_{env_token(self.name)}_{field.upper()}"

    def require(self, field: str) -> Any:
        """The value of ``field``, or a ``ConfigError`` naming it (for factories' own checks)."""
        value = self.settings.get(field)
        if value is None:
            raise ConfigError(
                f"provider {self.name!r} needs the setting {field!r}",
                variable=self.variable(field),
                provider=self.name,
            )
        return value


ProviderFactory = Callable[[ProviderConfig], Provider]


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    """A provider as registered: how to build it, and everything fanout shows about it."""

    name: str
    #: A callable, or ``"module:attribute"`` naming one. The string form is imported only
    #: when the provider is enabled, so declaring a provider never imports its vendor SDK.
    factory: ProviderFactory | str
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

    def load_factory(self) -> ProviderFactory:
        """The factory callable, importing it now when it was declared by name."""
        if not isinstance(self.factory, str):
            return self.factory
        module, _, attr = self.factory.partition(":")
        try:
            target: Any = importlib.import_module(module)
            for part in attr.split(".") if attr else ():
                target = getattr(target, part)
        except Exception as exc:  # noqa: BLE001 - report which plugin failed
            raise PluginError(
                f"provider {self.name!r} (plugin {self.plugin}) could not import its factory "
                f"{self.factory!r}: {type(exc).__name__}: {exc}",
                plugin=self.plugin,
            ) from None
        if not callable(target):
            raise PluginError(
                f"provider {self.name!r}: {self.factory!r} is not callable", plugin=self.plugin
            )
        factory: ProviderFactory = target
        return factory


def describe_instance(provider: Provider) -> ProviderSpec:
    """The declaration of a provider object passed straight to ``Client(providers=[...])``.

    Such objects have no registration, so their optional ``name``, ``limits`` and ``kinds``
    attributes stand in for it (see :class:`Provider`).
    """
    name = getattr(provider, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"provider object {type(provider).__name__} needs a 'name' attribute",
            variable="providers",
        )
    limits = getattr(provider, "limits", None)
    kinds = getattr(provider, "kinds", None)
    return ProviderSpec(
        name=name,
        factory=lambda config: provider,
        limits=limits if isinstance(limits, BatchLimits) else BatchLimits(),
        kinds=ALL_KINDS if kinds is None else frozenset(kinds),
        plugin="(instance)",
        auto_enable=False,
    )
