"""Wiring: options + environment + plugin registry → processors, channels, redactor.

``Client`` keeps the API (tracking, flush, shutdown, stats); everything that decides what
a client is made of lives here, once. :func:`select_providers` is the one answer to "which
providers are enabled", shared by the client, ``fanout plugins``, ``fanout check`` and the
demo, so they can never disagree.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _config
from ._channel import Channel, ChannelLike, ErrorCallback
from ._config import ClientOptions, Delivery, resolve_settings
from ._deadletter import DeadLetters
from ._exceptions import ConfigError, FanoutError, PluginError
from ._observe import DeliveryObserver
from ._plugins import Registry, load_registry
from ._redact import Redactor
from ._spool import SpoolOptions  # spool
from .processors import Processor, ip_processor
from .provider import (
    Provider,
    ProviderConfig,
    ProviderSpec,
    close_provider,
    describe_instance,
    split_instance,
)

__all__ = ["Wiring", "wire", "select_providers", "load_client_registry", "explain_null"]

logger = logging.getLogger("fanout")


@dataclasses.dataclass
class Wiring:
    """What one client is made of."""

    options: ClientOptions
    registry: Registry
    channels: list[ChannelLike]
    processors: list[Processor]
    redact: Redactor
    #: What each event is handed to when that is not every channel: the one relay channel
    #: in process mode (fanout/_relay.py). ``None``: every non-sync channel.
    fan_out: list[Channel] | None = None


def load_client_registry(
    options: ClientOptions, *, load_entry_points: bool = True, plugins: Iterable[object] = ()
) -> Registry:
    """The registry as ``options`` allow it (``FANOUT_PLUGINS`` / ``FANOUT_DISABLE_PLUGINS``)."""
    return load_registry(
        load_entry_points=load_entry_points,
        allow=options.plugins,
        deny=options.disable_plugins,
        extra_plugins=plugins,
    )


def select_providers(
    registry: Registry,
    env: Mapping[str, str],
    chosen: Sequence[str] | None,
    *,
    variable: str = "FANOUT_PROVIDERS",
    has_instances: bool = False,
) -> list[str]:
    """The names of the registered providers to enable, in order.

    ``chosen`` (``FANOUT_PROVIDERS`` or ``Client(providers=[...])``) wins; unknown names are
    a ``ConfigError``. Otherwise every installed provider that enables itself and has its
    required settings; ``null`` when there is none (and no provider object was passed).
    """
    if chosen is not None:
        unknown = [n for n in chosen if split_instance(n)[0] not in registry.providers]
        if unknown:
            installed = ", ".join(sorted(registry.providers))
            broken = [p.name for p in registry.plugins if p.error]
            hint = f"; plugins that failed to load: {', '.join(broken)}" if broken else ""
            raise ConfigError(
                f"{variable} names unknown provider(s) {', '.join(unknown)} "
                f"(installed: {installed}){hint}",
                variable=variable,
            )
        return list(dict.fromkeys(chosen))
    if has_instances:
        return []
    auto = [
        spec.name
        for spec in registry.providers.values()
        if spec.auto_enable
        and spec.name not in registry.conflicts
        and not _config.missing_settings(spec, env)
    ]
    return auto or ["null"]


def explain_null(registry: Registry, env: Mapping[str, str]) -> str:
    """Why no provider enabled itself: what each installed one needs, and near misses.

    A misspelled ``POSTHOG_APIKEY`` used to fall back to ``null`` in silence: every event
    discarded, ``fanout check`` saying "ok". The message names the variable each provider
    needs and any set variable that looks like a typo of one.
    """
    needs: list[str] = []
    expected: set[str] = set()
    for spec in registry.providers.values():
        if not spec.auto_enable or spec.name in registry.conflicts:
            continue
        missing = _config.missing_settings(spec, env)
        names = [" or ".join(s.env_names(spec.name)) for s in missing]
        needs.append(f"{spec.name} needs {', '.join(names)}")
        for setting in spec.settings:
            expected.update(setting.env_names(spec.name))
    hints = []
    for var in sorted(env):
        if var in expected or not var.isupper():
            continue
        close = difflib.get_close_matches(var, expected, n=1, cutoff=0.85)
        if close:
            hints.append(f"{var} is set; did you mean {close[0]}?")
    installed = "; ".join(needs) if needs else "no provider plugin is installed"
    return (
        "fanout: no provider is configured, so events go to 'null' and are discarded. "
        f"{installed}. " + " ".join(hints) + " Set FANOUT_PROVIDERS=null to silence this."
    ).replace("  ", " ")


def wire(
    *,
    env: Mapping[str, str],
    options: ClientOptions,
    registry: Registry,
    providers: Sequence[str | Provider] | None,
    settings: Mapping[str, Mapping[str, Any]],
    delivery: Mapping[str, Any],
    per_provider_delivery: Mapping[str, Mapping[str, Any]],
    processors: Sequence[str | Processor] | None,
    on_error: ErrorCallback | None,
    observer: DeliveryObserver | None = None,
    spool: SpoolOptions | None = None,  # spool: durable queues when spool.directory is set
) -> Wiring:
    """Build every channel (each provider resolved once) and the processor chain."""
    instances = [p for p in providers or () if not isinstance(p, str)]
    names = select_providers(
        registry,
        env,
        options.providers,
        variable="providers" if providers is not None else "FANOUT_PROVIDERS",
        has_instances=bool(instances),
    )
    if names == ["null"] and options.providers is None:
        logger.warning("%s", explain_null(registry, env))
    specs = [registry.spec(name) for name in names] + [describe_instance(p) for p in instances]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"provider {spec.name!r} is enabled twice", variable="providers")
        seen.add(spec.name)

    resolved: list[tuple[ProviderSpec, dict[str, Any], Delivery]] = []
    secrets: list[str] = []
    for spec in specs:
        values = resolve_settings(spec, env, settings.get(spec.name))
        secrets += [str(values[s.field]) for s in spec.settings if s.secret and values.get(s.field)]
        opts = Delivery.resolve(spec.name, env, delivery, per_provider_delivery.get(spec.name, {}))
        resolved.append((spec, values, opts))
    redact = Redactor(secrets)

    dead_letters = (
        DeadLetters(options.dead_letter_dir) if options.dead_letter_dir is not None else None
    )
    def build_channels() -> list[Channel]:
        channels: list[Channel] = []
        try:
            for spec, values, opts in resolved:
                provider = _build(spec, values, opts.request_timeout, redact)
                channels.append(
                    Channel(
                        spec.name,
                        provider,
                        options=opts,
                        limits=spec.limits,
                        kinds=spec.kinds,
                        dead_letters=dead_letters,
                        on_error=on_error,
                        redact=redact,
                        observer=observer,
                        queue=spool.queue_for(spec.name, opts) if spool else None,  # spool
                    )
                )
        except FanoutError:
            for channel in channels:
                _close_quietly(channel.provider)
            raise
        return channels

    chain = _processors(options, registry, processors)
    if options.delivery_mode == "process":  # relay: the providers run in a child process
        from ._relay import wire_process

        relay = wire_process(
            env=env,
            options=options,
            names=[spec.name for spec, _, _ in resolved],
            delivery={spec.name: opts for spec, _, opts in resolved},
            instances=instances,
            kwargs={
                "settings": settings,
                "delivery": delivery,
                "per_provider_delivery": per_provider_delivery,
                "spool_dir": spool.directory if spool else None,
            },
            on_error=on_error,
            fallback=build_channels,
        )
        return Wiring(options, registry, relay.channels(), chain, redact, [relay.channel])
    if observer is None:
        observer = metrics_observer(options.metrics)
    channels = build_channels()
    if observer is not None:
        observer.attach(channels)
    return Wiring(options, registry, list[ChannelLike](channels), chain, redact)


def metrics_observer(mode: str) -> DeliveryObserver | None:
    """The OpenTelemetry observer when ``mode`` and the installed packages allow it.

    ``auto`` costs nothing when the ``otel`` extra is not installed: one ``find_spec``.
    """
    if mode == "off":
        return None
    try:
        installed = importlib.util.find_spec("opentelemetry.metrics") is not None
    except (ImportError, ValueError):  # a broken or shadowed installation counts as absent
        installed = False
    if not installed:
        if mode == "otel":
            raise ConfigError(
                "FANOUT_METRICS=otel needs OpenTelemetry: pip install 'fanout-analytics[otel]'",
                variable="FANOUT_METRICS",
            )
        return None
    from .integrations import otel

    return otel.observer()


def _build(
    spec: ProviderSpec, values: dict[str, Any], timeout: float, redact: Redactor
) -> Provider:
    factory = spec.load_factory()
    try:
        provider = factory(ProviderConfig(spec.name, values, timeout))
    except FanoutError:
        raise
    except Exception as exc:  # noqa: BLE001 - report which plugin failed, then stop
        raise PluginError(
            f"provider {spec.name!r} (plugin {spec.plugin}) failed to start: "
            f"{type(exc).__name__}: {redact(str(exc))}",
            plugin=spec.plugin,
        ) from None
    if not callable(getattr(provider, "send", None)):
        raise PluginError(f"provider {spec.name!r} has no send()", plugin=spec.plugin)
    return provider


def _processors(
    options: ClientOptions, registry: Registry, processors: Sequence[str | Processor] | None
) -> list[Processor]:
    chain: list[Processor] = []
    builtin = ip_processor(options.ip)  # type: ignore[arg-type]
    if builtin is not None:
        chain.append(builtin)
    names: Sequence[str | Processor] = options.processors if processors is None else processors
    for item in names:
        if callable(item):
            chain.append(item)
            continue
        try:
            chain.append(registry.processors[item])
        except KeyError:
            known = ", ".join(sorted(registry.processors)) or "none"
            raise ConfigError(
                f"unknown processor {item!r} (registered: {known})",
                variable="FANOUT_PROCESSORS",
            ) from None
    return chain


def _close_quietly(provider: Provider) -> None:
    try:
        close_provider(provider)
    except Exception:  # noqa: BLE001
        logger.debug("closing a provider after a failed start raised", exc_info=True)
