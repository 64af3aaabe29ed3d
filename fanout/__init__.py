"""fanout: server-side analytics for Python backends.

One call — ``fanout.track("checkout.finished", person_id=..., event_id=stripe_event.id)``
— reaches every enabled analytics backend, each batched, retried and isolated in its own
channel, so a slow or broken backend never slows the caller or costs the others an event.
"""

from __future__ import annotations

from .__about__ import __version__
from ._client import Client
from ._context import RequestContext, context
from ._default import (
    aflush,
    alias,
    ashutdown,
    flush,
    get_default_client,
    group,
    identify,
    page,
    set_default_client,
    shutdown,
    track,
)
from ._events import Event
from ._exceptions import (
    BatchTooLarge,
    ConfigError,
    DeliveryError,
    FanoutError,
    InvalidEvent,
    PermanentError,
    PluginError,
    RetryableError,
)
from ._report import ChannelReport, DeliveryFailure, FlushReport
from .hookspecs import hookimpl
from .processors import Processor
from .provider import BatchLimits, Provider, ProviderConfig, Setting

__all__ = [
    "BatchLimits",
    "BatchTooLarge",
    "ChannelReport",
    "Client",
    "ConfigError",
    "DeliveryError",
    "DeliveryFailure",
    "Event",
    "FanoutError",
    "FlushReport",
    "InvalidEvent",
    "PermanentError",
    "PluginError",
    "Processor",
    "Provider",
    "ProviderConfig",
    "RequestContext",
    "RetryableError",
    "Setting",
    "__version__",
    "aflush",
    "alias",
    "ashutdown",
    "context",
    "flush",
    "get_default_client",
    "group",
    "hookimpl",
    "identify",
    "page",
    "set_default_client",
    "shutdown",
    "track",
]

# Public classes read as ``fanout.Client`` in reprs and tracebacks, not as private modules.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("fanout."):
        _obj.__module__ = "fanout"
del _name, _obj
