"""``fanout demo``: the whole path, end to end, on the embedded reference collector."""

from __future__ import annotations

import click


@click.command("demo")
def demo_command() -> None:
    """Run a realistic event sequence through fanout and show what the collector stored."""
    click.echo("fanout demo: not available yet", err=True)
    raise SystemExit(1)
