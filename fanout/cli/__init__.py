"""The ``fanout`` command line.

Subcommands live in their own modules; plugins add theirs through the
``register_commands(cli)`` hook. Exit codes: 0 success, 1 a delivery or check failed,
2 bad usage or configuration (click's convention), 130 interrupted.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any, Final

import click

from ..__about__ import __version__

#: Built-in subcommands, imported only when used or listed: ``fanout --version`` and
#: ``fanout track`` do not pay for the collector's or the demo's imports.
_BUILTIN: Final[dict[str, str]] = {
    "plugins": "fanout.cli.plugins:plugins_command",
    "check": "fanout.cli.check:check_command",
    "track": "fanout.cli.send:track_command",
    "identify": "fanout.cli.send:identify_command",
    "demo": "fanout.cli.demo:demo_command",
    "collector": "fanout.cli.collector:collector_group",
    "spool": "fanout.cli.spool:spool_group",
    "deadletter": "fanout.cli.deadletter:deadletter_group",
    "import": "fanout.cli.import_:import_command",
}


class FanoutGroup(click.Group):
    """Loads built-in commands on demand and plugin commands only when a name is unknown
    (or the list is shown), so plugins' imports are never paid for a built-in command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugins_loaded = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return sorted({*_BUILTIN, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _BUILTIN and cmd_name not in self.commands:
            module, _, attr = _BUILTIN[cmd_name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        found = super().get_command(ctx, cmd_name)
        if found is None and not self._plugins_loaded:
            self._load_plugin_commands()
            found = super().get_command(ctx, cmd_name)
        return found

    def _load_plugin_commands(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from .. import _config
        from .._setup import load_client_registry

        try:
            options = _config.ClientOptions.resolve(_config.environ(), {})
            registry = load_client_registry(options)
        except Exception as exc:  # noqa: BLE001 - the CLI must start even if plugins are broken
            click.echo(f"fanout: plugins failed to load: {exc}", err=True)
            return
        for impl in registry.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=self)
            except Exception as exc:  # noqa: BLE001
                click.echo(
                    f"fanout: plugin {impl.plugin_name!r} failed to add commands: {exc}", err=True
                )


@click.group(cls=FanoutGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fanout")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug) to stderr.")
def main(verbose: int) -> None:
    """Send server-side analytics events to every enabled backend."""
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def run() -> None:
    """Console entry point: Ctrl-C exits with 130 and no traceback."""
    try:
        main()
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
