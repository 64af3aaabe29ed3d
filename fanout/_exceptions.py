"""The exceptions fanout raises, and the ones providers raise to the channel.

The tree is shallow on purpose (after httpx)::

    FanoutError
    ├── ConfigError        a setting is missing or malformed; names the variable, never its value
    ├── InvalidEvent       bad caller input; also a ValueError; the only thing track() raises
    ├── PluginError        a plugin failed to load or to register what it offers
    └── DeliveryError      raised *by providers* inside the worker, never seen by callers
        ├── RetryableError timeouts, connection errors, 5xx, 429 (carries retry_after)
        └── PermanentError the backend refused: bad key, malformed batch, rejected events
            └── BatchTooLarge   the batch must be split and sent again in halves

Delivery failures never reach business code: the channel turns them into statistics,
dead-letter records and ``on_error`` calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class FanoutError(Exception):
    """Base class of every exception fanout defines."""


class ConfigError(FanoutError):
    """A setting is missing or malformed.

    ``variable`` names the environment variable (or keyword argument) at fault so that the
    operator knows what to fix; the value itself is never included, because it may be a secret.
    """

    def __init__(self, message: str, *, variable: str | None = None, provider: str | None = None):
        super().__init__(message)
        self.variable = variable
        self.provider = provider


class InvalidEvent(FanoutError, ValueError):
    """The caller passed something that cannot become an event; nothing was queued anywhere.

    ``path`` points at the offending value inside the call, e.g. ``properties.cart[2].price``.
    """

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class PluginError(FanoutError):
    """A plugin failed to import, or offered something fanout cannot accept."""

    def __init__(self, message: str, *, plugin: str | None = None):
        super().__init__(message)
        self.plugin = plugin


class DeliveryError(FanoutError):
    """A provider could not deliver a batch. Raised by providers, handled by the channel."""

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class RetryableError(DeliveryError):
    """Try again later; ``retry_after`` (seconds) is the backend's own hint.

    Without ``pending`` nothing of the batch was delivered and all of it is retried. With
    ``pending`` (batch indices) the backend took the other events: only the pending ones
    are retried, and the rest count as delivered. ``rejected`` (index → reason) names
    events refused for good in the same attempt; they are dead-lettered, not retried. A
    provider that sends one batch in several requests reports what it got through this
    way instead of remembering ids across calls.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        pending: Iterable[int] | None = None,
        rejected: Mapping[int, str] | None = None,
    ):
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after
        self.pending = sorted(set(pending)) if pending is not None else None
        self.rejected = dict(rejected) if rejected is not None else None


class PermanentError(DeliveryError):
    """Sending again will not help.

    Without ``rejected`` the whole batch failed. With ``rejected`` (batch index → reason)
    only those events failed and every other event of the batch counts as delivered: this is
    how a provider reports a backend that names the records it refused.
    """

    def __init__(
        self,
        message: str,
        *,
        rejected: Mapping[int, str] | None = None,
        status_code: int | None = None,
    ):
        super().__init__(message, status_code=status_code)
        self.rejected = dict(rejected) if rejected is not None else None


class BatchTooLarge(PermanentError):
    """The backend refused the batch for its size (HTTP 413): split it and send the halves."""
