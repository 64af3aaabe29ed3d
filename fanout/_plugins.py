"""Plugin loading: entry points through pluggy, each plugin isolated from the others.

Built-in providers register through the same ``register_providers`` hook as third-party
ones, so ``fanout plugins`` and ``fanout check`` show them without special cases.

Two places deliberately do not use pluggy's all-at-once calls:

- Entry points are loaded one at a time (``load_setuptools_entrypoints(group, name=...)``)
  because the all-at-once form stops at the first plugin that fails to import.
- Hooks are called implementation by implementation (``get_hookimpls()``), each in its own
  ``try``, because ``_multicall`` lets one plugin's exception stop the rest.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import re
from collections.abc import Iterable
from typing import Any

import pluggy

from . import hookspecs
from ._exceptions import PluginError
from .processors import Processor
from .provider import (
    ALL_KINDS,
    BatchLimits,
    ProviderFactory,
    ProviderSpec,
    Setting,
    split_instance,
)

__all__ = ["PluginInfo", "Registry", "load_registry", "ENTRY_POINT_GROUP"]

logger = logging.getLogger("fanout.plugins")

ENTRY_POINT_GROUP = "fanout"
BUILTIN = "fanout.builtin"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_INSTANCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclasses.dataclass
class PluginInfo:
    """One plugin as ``fanout plugins`` lists it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    loaded: bool = False
    error: str | None = None
    providers: list[str] = dataclasses.field(default_factory=list)
    processors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Registry:
    """What the plugins offered, built once per client."""

    pm: pluggy.PluginManager
    providers: dict[str, ProviderSpec]
    processors: dict[str, Processor]
    plugins: list[PluginInfo]
    #: provider name → every plugin that registered it, when more than one did.
    conflicts: dict[str, list[str]]

    def spec(self, name: str) -> ProviderSpec:
        """The declaration of ``name``, which may be a named instance (``posthog:eu``).

        An instance is the registered provider under its own name, so it gets its own
        channel, settings (``FANOUT_POSTHOG_EU_*``), stats and dead letters, for every
        provider, third-party ones included, with no code in the plugin.
        """
        base, instance = split_instance(name)
        if instance is not None:
            if not _INSTANCE.match(instance):
                raise PluginError(
                    f"instance name {instance!r} in {name!r} must be lowercase letters, "
                    "digits, '-' or '_'"
                )
            return dataclasses.replace(self.spec(base), name=name)
        if name in self.conflicts:
            raise PluginError(
                f"provider {name!r} is registered by several plugins "
                f"({', '.join(self.conflicts[name])}); uninstall or block one "
                "(FANOUT_DISABLE_PLUGINS)",
                plugin=self.conflicts[name][-1],
            )
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise PluginError(
                f"no provider named {name!r} is installed (installed: {known})"
            ) from None


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def load_registry(
    *,
    load_entry_points: bool = True,
    allow: Iterable[str] | None = None,
    deny: Iterable[str] = (),
    extra_plugins: Iterable[Any] = (),
) -> Registry:
    """Load the built-ins, the allowed entry points and ``extra_plugins``; run the hooks."""
    from . import providers as builtin_providers

    pm = _new_manager()
    infos: dict[str, PluginInfo] = {}
    pm.register(builtin_providers, name=BUILTIN)
    infos[BUILTIN] = PluginInfo(BUILTIN, "fanout-analytics", _version(), loaded=True)

    if load_entry_points:
        _load_entry_points(pm, infos, allow=None if allow is None else set(allow), deny=set(deny))
    for plugin in extra_plugins:
        if pm.is_registered(plugin):  # also installed as an entry point: load it once
            continue
        name = pm.register(plugin)
        if name is not None:
            infos[name] = PluginInfo(name, loaded=True)

    registry = Registry(pm, {}, {}, list(infos.values()), {})
    _collect_providers(registry, infos)
    _collect_processors(registry, infos)
    return registry


def _version() -> str | None:
    try:
        return importlib.metadata.version("fanout-analytics")
    except importlib.metadata.PackageNotFoundError:
        return None


def _load_entry_points(
    pm: pluggy.PluginManager,
    infos: dict[str, PluginInfo],
    *,
    allow: set[str] | None,
    deny: set[str],
) -> None:
    seen: set[str] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            ep.name,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
        infos[ep.name] = info
        if ep.name in deny or (allow is not None and ep.name not in allow):
            pm.set_blocked(ep.name)
            info.error = "disabled by FANOUT_DISABLE_PLUGINS / FANOUT_PLUGINS"
            continue
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the rest
            info.error = f"failed to load: {type(exc).__name__}: {exc}"
            logger.warning("fanout plugin %r failed to load: %s", ep.name, info.error)
            continue
        info.loaded = True


def _collect_providers(registry: Registry, infos: dict[str, PluginInfo]) -> None:
    for impl in registry.pm.hook.register_providers.get_hookimpls():
        plugin = impl.plugin_name

        def register(
            name: str,
            factory: ProviderFactory | str,
            *,
            settings: tuple[Setting, ...] | list[Setting] = (),
            limits: BatchLimits | None = None,
            kinds: frozenset[str] | set[str] | None = None,
            capabilities: frozenset[str] | set[str] = frozenset(),
            description: str = "",
            auto_enable: bool = True,
            _plugin: str = plugin,
        ) -> None:
            if not isinstance(name, str) or not _NAME.match(name):
                raise PluginError(
                    f"provider name {name!r} must be lowercase letters, digits, '-' or '_'",
                    plugin=_plugin,
                )
            kind_set = ALL_KINDS if kinds is None else frozenset(kinds)
            if not kind_set <= ALL_KINDS:
                raise PluginError(f"unknown kinds {sorted(kind_set - ALL_KINDS)}", plugin=_plugin)
            spec = ProviderSpec(
                name=name,
                factory=factory,
                settings=tuple(settings),
                limits=limits or BatchLimits(),
                kinds=kind_set,
                capabilities=frozenset(capabilities),
                description=description,
                plugin=_plugin,
                auto_enable=auto_enable,
            )
            if name in registry.providers:
                first = registry.providers[name].plugin
                registry.conflicts.setdefault(name, [first]).append(_plugin)
                logger.warning("provider %r is registered by both %r and %r", name, first, _plugin)
                return
            registry.providers[name] = spec
            if _plugin in infos:
                infos[_plugin].providers.append(name)

        _call_isolated(impl, infos, register=register)


def _collect_processors(registry: Registry, infos: dict[str, PluginInfo]) -> None:
    for impl in registry.pm.hook.register_processors.get_hookimpls():
        plugin = impl.plugin_name

        def register(name: str, processor: Processor, _plugin: str = plugin) -> None:
            if not callable(processor):
                raise PluginError(f"processor {name!r} is not callable", plugin=_plugin)
            if name in registry.processors:
                raise PluginError(f"processor {name!r} is registered twice", plugin=_plugin)
            registry.processors[name] = processor
            if _plugin in infos:
                infos[_plugin].processors.append(name)

        _call_isolated(impl, infos, register=register)


def _call_isolated(impl: pluggy.HookImpl, infos: dict[str, PluginInfo], **kwargs: Any) -> None:
    try:
        impl.function(**kwargs)
    except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the rest
        info = infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
        info.error = f"{impl.function.__name__} failed: {type(exc).__name__}: {exc}"
        logger.warning("fanout plugin %r: %s", impl.plugin_name, info.error)
