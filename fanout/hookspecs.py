"""The plugin hooks. Few on purpose: each offers things through a ``register`` callback.

A plugin is a module (or object) with functions marked ``@fanout.hookimpl``, exposed through
the ``fanout`` entry-point group::

    [project.entry-points.fanout]
    posthog = "fanout_posthog"

Hooks run once, when a :class:`fanout.Client` is built, never per event: an exception in
one plugin's hook is reported and does not stop the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    import click

    from .processors import Processor
    from .provider import BatchLimits, ProviderFactory, Setting

__all__ = ["hookimpl", "hookspec", "RegisterProvider", "RegisterProcessor"]

hookspec = pluggy.HookspecMarker("fanout")
hookimpl = pluggy.HookimplMarker("fanout")


class RegisterProvider(Protocol):
    def __call__(
        self,
        name: str,
        factory: ProviderFactory | str,
        *,
        settings: tuple[Setting, ...] | list[Setting] = (),
        limits: BatchLimits | None = None,
        kinds: frozenset[str] | set[str] | None = None,
        capabilities: frozenset[str] | set[str] = frozenset(),
        description: str = "",
        auto_enable: bool = True,
    ) -> None: ...


class RegisterProcessor(Protocol):
    def __call__(self, name: str, processor: Processor) -> None: ...


@hookspec
def register_providers(register: RegisterProvider) -> None:
    """Offer provider factories.

    :param register: call ``register(name, factory, settings=..., limits=..., kinds=...,
        capabilities=..., description=...)`` once per provider. ``name`` is also the
        ``FANOUT_PROVIDERS`` token and the ``FANOUT_<NAME>_*`` prefix. A name registered
        twice is an error naming both plugins. ``factory`` may be ``"module:attribute"``:
        it is imported only when the provider is enabled, so a plugin whose provider needs
        a heavy vendor SDK costs nothing to processes that do not use it.
    """


@hookspec
def register_processors(register: RegisterProcessor) -> None:
    """Offer named processors that ``FANOUT_PROCESSORS`` / ``Client(processors=...)`` select.

    :param register: call ``register(name, processor)``; a processor is a callable taking an
        :class:`~fanout.Event` and returning an event (the same or a changed copy) or
        ``None`` to drop it.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``fanout`` command line.

    :param cli: the top-level click group; call ``cli.add_command(...)``.
    """
