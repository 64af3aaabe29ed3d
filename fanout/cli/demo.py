"""``fanout demo``: the whole path, end to end, on the embedded reference collector.

It starts the collector in a thread on a free local port with a temporary SQLite file,
creates a project and an ingest key, and sends one customer's story through a real
:class:`fanout.Client` to the collector, the console provider and any vendor provider
configured in the environment (``POSTHOG_API_KEY``...): anonymous page views, a signup
that identifies the visitor, a Stripe-style ``checkout.finished`` keyed by the Stripe
event id, the same webhook redelivered (stored once), and a renewal from a "cron job".
Then it flushes, prints each provider's delivery figures and the stitched timeline the
collector stored, and stops everything it started: no thread, port or file is left behind.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import shutil
import tempfile
from pathlib import Path

import click

from .. import _config, events
from .._client import Client
from .._plugins import BUILTIN
from .._setup import load_client_registry, select_providers
from ..collector.keys import INGEST
from ..collector.sqlite import SQLiteStore
from ..collector.store import read_timeline
from ._common import user_errors
from .collector import format_timeline


def _vendor_providers() -> list[str]:
    """Plugin providers whose required settings are present in the environment."""
    env = _config.environ()
    registry = load_client_registry(_config.ClientOptions.resolve(env, {}))
    auto = select_providers(registry, env, None)
    return [name for name in auto if registry.providers[name].plugin != BUILTIN]


@click.command("demo")
@click.option("--console/--no-console", default=True, show_default=True,
              help="Also print every event as a JSON line on stderr.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds the final flush may take across all providers.")
def demo_command(console: bool, timeout: float) -> None:
    """Run a realistic event sequence through fanout and show what the collector stored."""
    try:
        from ..collector.server import ServerThread
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    tmp = Path(tempfile.mkdtemp(prefix="fanout-demo-"))
    try:
        store = SQLiteStore(tmp / "collector.db")
        project = store.create_project("demo")
        _, key = store.create_key(project.name, (INGEST,), "demo")
        with ServerThread(store) as server:
            click.echo(f"collector listening on {server.url} (database {tmp / 'collector.db'})")
            providers = ["collector", *(["console"] if console else []), *_vendor_providers()]
            with user_errors():
                client = Client(
                    providers=providers,
                    settings={"collector": {"url": server.url, "key": key}},
                    flush_interval=0.2,
                    register_atexit=False,
                )
            click.echo(f"sending to: {', '.join(client.providers)}")
            try:
                person_id, sent = _story(client)
                report = client.flush(timeout)
            finally:
                final = client.shutdown(timeout)
            click.echo("")
            click.echo(final.table())
            stored = store.count_events(project.id)
            click.echo(
                f"\ncollector: {sent} events sent, {stored} stored "
                f"({sent - stored} redelivery deduplicated on event_id)"
            )
            click.echo("")
            click.echo(
                format_timeline(person_id, store.linked_ids(project.id, person_id),
                                read_timeline(store, project.id, person_id))
            )
        if report.timed_out or not final.ok:
            raise SystemExit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _story(client: Client) -> tuple[str, int]:
    """One customer, from first visit to first renewal; returns their id and events sent."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    start = now - _dt.timedelta(days=30, minutes=20)

    def at(minutes: float) -> _dt.datetime:
        return start + _dt.timedelta(minutes=minutes)

    anonymous_id = f"anon_{secrets.token_hex(4)}"
    person_id = f"user_{secrets.token_hex(4)}"
    stripe_event = f"evt_{secrets.token_hex(12)}"
    checkout_id = f"cs_test_{secrets.token_hex(8)}"
    subscription_id = f"sub_{secrets.token_hex(8)}"
    web = {"ip": "203.0.113.42", "user_agent": "Mozilla/5.0 (demo)"}

    # An anonymous visitor browses (the web backend tracks server-rendered pages).
    client.page("https://example.com/", anonymous_id=anonymous_id, title="Home",
                referrer="https://www.google.com/", timestamp=at(0), context=web)
    client.page("https://example.com/pricing", anonymous_id=anonymous_id, title="Pricing",
                timestamp=at(2), context=web)
    events.checkout_started(client, anonymous_id=anonymous_id, checkout_id=checkout_id,
                            amount=2900, currency="usd", plan="pro", interval="month",
                            timestamp=at(3), context=web)
    # They sign up: identify links the visitor's past to the new account.
    client.identify(person_id, anonymous_id=anonymous_id, timestamp=at(5),
                    traits={"email": "ada@example.com", "name": "Ada", "plan": "pro"})
    events.signed_up(client, person_id=person_id, anonymous_id=anonymous_id, method="email",
                     plan="pro", timestamp=at(5.1))
    # Stripe's webhook: the Stripe event id is the event_id, so a redelivery counts once.
    for _ in range(2):
        events.checkout_finished(client, person_id=person_id, checkout_id=checkout_id,
                                 amount=2900, currency="usd", plan="pro", interval="month",
                                 event_id=stripe_event, timestamp=at(7))
    events.subscription_created(client, person_id=person_id, subscription_id=subscription_id,
                                plan="pro", interval="month", amount=2900, currency="usd",
                                event_id=f"{stripe_event}_sub", timestamp=at(7.1))
    # A month later, the billing cron job renews the subscription.
    events.subscription_renewed(client, person_id=person_id, subscription_id=subscription_id,
                                plan="pro", interval="month", amount=2900, currency="usd",
                                period=2, event_id=f"renewal_{subscription_id}_2",
                                timestamp=now)
    return person_id, 9
