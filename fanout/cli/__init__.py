"""The ``fanout`` command line.

Subcommands live in their own modules; plugins add theirs through the
``register_commands(cli)`` hook. Exit codes: 0 success, 1 a delivery or check failed,
2 bad usage or configuration (click's convention), 130 interrupted.
"""

from __future__ import annotations

import logging
import sys

import click

from ..__about__ import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


def _register_builtin_commands() -> None:
    from . import check, demo, plugins, send

    main.add_command(plugins.plugins_command)
    main.add_command(check.check_command)
    main.add_command(send.track_command)
    main.add_command(send.identify_command)
    main.add_command(demo.demo_command)
    from . import collector

    main.add_command(collector.collector_group)


def _register_plugin_commands() -> None:
    from .._plugins import load_registry

    try:
        registry = load_registry()
    except Exception as exc:  # noqa: BLE001 - the CLI must start even if plugins are broken
        click.echo(f"fanout: plugins failed to load: {exc}", err=True)
        return
    for impl in registry.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=main)
        except Exception as exc:  # noqa: BLE001
            click.echo(
                f"fanout: plugin {impl.plugin_name!r} failed to add commands: {exc}", err=True
            )


_register_builtin_commands()
_register_plugin_commands()


def run() -> None:
    """Console entry point: Ctrl-C exits with 130 and no traceback."""
    try:
        main()
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
