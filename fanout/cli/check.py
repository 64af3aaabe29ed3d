"""``fanout check``: validate the configuration, optionally send one test event."""

from __future__ import annotations

import sys

import click

from .. import _config
from .._config import ENV_VARS, environ
from .._setup import explain_null
from ._common import build_client, user_errors


@click.command("check")
@click.option("--send-test-event", is_flag=True, help="Send one event to every provider.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait.")
@click.option("-P", "--provider", "providers", multiple=True, help="Check only these providers.")
def check_command(send_test_event: bool, timeout: float, providers: tuple[str, ...]) -> None:
    """Validate configuration and report per provider; exit 1 if a test event fails."""
    env = environ()
    with user_errors():
        for var in ENV_VARS:
            var.read(env)  # raises ConfigError naming a malformed variable
    client = build_client(providers, register_atexit=False, sync=False)
    implicit_null = not providers and _config.FANOUT_PROVIDERS.read(env) is None
    if implicit_null and client.providers == ["null"]:
        # Building the client logged what each provider needs; say it even with logging off.
        client.shutdown(timeout=timeout)
        click.echo(explain_null(client.registry, env), err=True)
        sys.exit(1)
    click.echo(f"configuration ok: providers {', '.join(client.providers)}")
    if not send_test_event:
        client.shutdown(timeout=timeout)
        return
    event_id = client.track(
        "fanout.check",
        anonymous_id="fanout-check",
        properties={"source": "fanout check"},
    )
    report = client.shutdown(timeout=timeout)
    click.echo(f"test event {event_id}:")
    failed = False
    for name, r in report.items():
        if r.delivered >= 1:
            status = "delivered"
        elif r.skipped:
            status = "skipped (kind not supported)"
        elif r.pending:
            status = f"still pending after {timeout}s"
            failed = True
        else:
            reasons = ", ".join(f"{k}={v}" for k, v in r.losses.items()) or "unknown"
            status = f"FAILED ({reasons})"
            failed = True
        click.echo(f"  {name:<12} {status}")
    if failed:
        sys.exit(1)
