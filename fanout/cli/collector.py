"""``fanout collector``: run the reference collector, manage its keys, show a timeline.

``serve`` needs the ``collector`` extra (Starlette, uvicorn); ``keys`` and ``timeline``
open the SQLite file directly and need only the standard library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..collector.sqlite import SQLiteStore

_db_option = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    default="fanout-collector.db",
    show_default=True,
    envvar="FANOUT_COLLECTOR_DB",
    show_envvar=True,
    help="SQLite file of the collector (created if missing).",
)


@click.group("collector")
def collector_group() -> None:
    """The reference collector: fanout's native protocol over HTTP, stored in SQLite."""


@collector_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port; 0 picks a free one.")
@_db_option
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              envvar="FANOUT_COLLECTOR_RATE_LIMIT", show_envvar=True,
              help="Events per second per key (bursts up to one second's worth). "
                   "Default: unlimited.")
def serve_command(host: str, port: int, db: Path, rate_limit: float | None) -> None:
    """Serve POST /v1/batch until SIGINT/SIGTERM; prints `listening on URL` when ready."""
    try:
        from ..collector.server import bind, serve
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    store = SQLiteStore(db)
    if not store.list_keys():
        click.echo("note: no server keys yet; create one with `fanout collector keys create "
                   f"--label NAME --db {db}`", err=True)
    serve(store, sock, rate_limit=rate_limit,
          on_ready=lambda url: click.echo(f"listening on {url}"))
    click.echo("stopped", err=True)


@collector_group.group("keys")
def keys_group() -> None:
    """Create, list and revoke server keys (only their hashes are stored)."""


@keys_group.command("create")
@click.option("--label", required=True, help="What the key is for, e.g. 'api-prod'.")
@_db_option
def keys_create(label: str, db: Path) -> None:
    """Create a key and print it once (it cannot be shown again)."""
    store = SQLiteStore(db)
    try:
        info, key = store.create_key(label)
    finally:
        store.close()
    click.echo(key)
    click.echo(f"key {info.id} ({label}) created; store it now, it is not kept.", err=True)


@keys_group.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(db: Path, as_json: bool) -> None:
    """List keys: id, label, created, revoked (never the keys themselves)."""
    store = SQLiteStore(db)
    try:
        keys = store.list_keys()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([k.__dict__ for k in keys], indent=2))
        return
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        click.echo(f"{k.id:>4}  {k.label:<24} created {k.created_at}  {state}")


@keys_group.command("revoke")
@click.argument("key_id", type=int)
@_db_option
def keys_revoke(key_id: int, db: Path) -> None:
    """Revoke key KEY_ID (see `keys list`); its requests get 401 from then on."""
    store = SQLiteStore(db)
    try:
        done = store.revoke_key(key_id)
    finally:
        store.close()
    if not done:
        click.echo(f"no active key {key_id}", err=True)
        sys.exit(1)
    click.echo(f"key {key_id} revoked")


@collector_group.command("timeline")
@click.argument("person_id")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON lines.")
def timeline_command(person_id: str, db: Path, as_json: bool) -> None:
    """The stitched timeline of PERSON_ID: their events and their anonymous past."""
    if not db.exists():
        raise click.ClickException(f"no collector database at {db}")
    store = SQLiteStore(db)
    try:
        events = store.person_events(person_id)
        linked = store.linked_ids(person_id)
    finally:
        store.close()
    if as_json:
        for e in events:
            click.echo(json.dumps(e, ensure_ascii=False))
        return
    click.echo(format_timeline(person_id, linked, events))


def format_timeline(person_id: str, linked: list[str], events: list[dict[str, Any]]) -> str:
    """A terminal rendering of a person's events (shared with ``fanout demo``)."""
    head = f"timeline of {person_id}"
    if linked:
        head += f" (also known as {', '.join(linked)})"
    lines = [head]
    for e in events:
        who = e.get("person_id") or f"anon:{e.get('anonymous_id')}"
        what = e.get("name") or (e.get("properties") or {}).get("path") or ""
        lines.append(f"  {e['timestamp']}  {e['kind']:<8} {what:<24} {who:<20} {e['event_id']}")
    if not events:
        lines.append("  (no events)")
    return "\n".join(lines)
