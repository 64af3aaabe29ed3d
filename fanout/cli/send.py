"""``fanout track`` / ``fanout identify``: send one event from the shell or a script."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from .._client import Client
from .._report import FlushReport
from ._common import build_client, parse_pairs, user_errors


def _send(
    providers: tuple[str, ...], timeout: float, quiet: bool, call: Callable[[Client], str]
) -> None:
    """Build a client, make one call, shut down within ``timeout`` and report; exit 1 unless
    every provider got the event."""
    client = build_client(providers, register_atexit=False)
    with user_errors():
        event_id = call(client)
    report: FlushReport = client.shutdown(timeout=timeout)
    if not quiet:
        click.echo(event_id)
        click.echo(report.table(), err=True)
    if not report.ok:
        sys.exit(1)


#: A command's call: the client method with the command's own arguments bound; the shared
#: ``--event-id`` / ``--timestamp`` values arrive as keywords.
SendCall = Callable[..., str]

_common = [
    click.option("-P", "--provider", "providers", multiple=True, help="Send only to these."),
    click.option("--event-id", help="Idempotency key (e.g. a Stripe event id)."),
    click.option("--timestamp", help="ISO 8601 time of the event (default: now)."),
    click.option("--timeout", type=float, default=10.0, show_default=True),
    click.option("-q", "--quiet", is_flag=True, help="Print nothing; use the exit status."),
]


def _sending(command: Callable[..., SendCall]) -> Callable[..., None]:
    """The options every sending command shares, and what they do, in one place.

    ``command`` takes only its own arguments and returns its call; this adds the shared
    options, passes ``--event-id`` and ``--timestamp`` to the call, and sends it with
    :func:`_send`.
    """

    @functools.wraps(command)
    def run(
        *,
        providers: tuple[str, ...],
        event_id: str | None,
        timestamp: str | None,
        timeout: float,
        quiet: bool,
        **own: Any,
    ) -> None:
        call = command(**own)
        _send(
            providers,
            timeout,
            quiet,
            lambda client: call(client, event_id=event_id, timestamp=timestamp),
        )

    wrapped: Callable[..., None] = run
    for option in reversed(_common):
        wrapped = option(wrapped)
    return wrapped


@click.command("track")
@click.argument("name")
@click.option("--person", "person_id", help="The person's id.")
@click.option("--anonymous", "anonymous_id", help="An anonymous visitor id.")
@click.option("-p", "--property", "props", multiple=True, metavar="KEY=VALUE")
@_sending
def track_command(
    name: str, person_id: str | None, anonymous_id: str | None, props: tuple[str, ...]
) -> SendCall:
    """Track event NAME; prints its event id. Exit 1 if any provider did not get it."""
    properties = parse_pairs(props, "--property")
    return lambda client, **common: client.track(
        name, person_id=person_id, anonymous_id=anonymous_id, properties=properties, **common
    )


@click.command("identify")
@click.argument("person_id")
@click.option("--anonymous", "anonymous_id", help="Link this anonymous visitor id.")
@click.option("-t", "--trait", "traits", multiple=True, metavar="KEY=VALUE")
@_sending
def identify_command(
    person_id: str, anonymous_id: str | None, traits: tuple[str, ...]
) -> SendCall:
    """Identify PERSON_ID with traits; prints the event id."""
    values = parse_pairs(traits, "--trait")
    return lambda client, **common: client.identify(
        person_id, anonymous_id=anonymous_id, traits=values, **common
    )
