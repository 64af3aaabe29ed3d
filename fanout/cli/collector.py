"""``fanout collector``: run the reference collector, manage projects and keys, show a
timeline.

``serve`` needs the ``collector`` extra (Starlette, uvicorn); ``projects``, ``keys`` and
``timeline`` open the database directly: a SQLite file needs only the standard library,
a ``postgresql://`` URL needs the ``postgres`` extra (psycopg).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import click

from ..collector.database import open_store
from ..collector.keys import DEFAULT_PROJECT, INGEST, SCOPES
from ..collector.store import Store, StoreError, read_timeline

_db_option = click.option(
    "--db",
    "db",
    default="fanout-collector.db",
    show_default=True,
    envvar="FANOUT_COLLECTOR_DB",
    show_envvar=True,
    help="SQLite file of the collector (created if missing), or a postgresql:// URL.",
)


@contextlib.contextmanager
def _opened(db: str) -> Iterator[Store]:
    """The store, closed after; a database that cannot be opened is a clear error."""
    try:
        store = open_store(db)
    except (StoreError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield store
    finally:
        store.close()


@click.group("collector")
def collector_group() -> None:
    """The reference collector: fanout's native protocol over HTTP, in SQLite or PostgreSQL."""


@collector_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port; 0 picks a free one.")
@_db_option
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              envvar="FANOUT_COLLECTOR_RATE_LIMIT", show_envvar=True,
              help="Events per second per key, reads included (bursts up to one second's "
                   "worth). Default: unlimited.")
@click.option("--max-connections", type=click.IntRange(min=16), default=4096,
              show_default=True, help="Open connections at most (kept below the "
              "descriptor limit); above it the oldest idle connection is closed.")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds a request's headers may take to arrive.")
@click.option("--body-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Seconds a request's body may take to arrive.")
@click.option("--body-budget", type=click.IntRange(min=1), default=32, show_default=True,
              help="MiB of request bodies held in memory at once, over all connections "
                   "(per worker).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              envvar="FANOUT_COLLECTOR_WORKERS", show_envvar=True,
              help="Server processes sharing the port and the database (POSIX). Every event "
                   "id is stored once whichever worker receives it.")
def serve_command(host: str, port: int, db: str, rate_limit: float | None,
                  max_connections: int, header_timeout: float, body_timeout: float,
                  body_budget: int, workers: int) -> None:
    """Serve POST /v1/batch until SIGINT/SIGTERM; prints `listening on URL` when ready."""
    try:
        from ..collector.app import AppOptions
        from ..collector.database import is_postgres_url
        from ..collector.guard import ServingLimits
        from ..collector.server import bind, serve
        from ..collector.workers import serve_workers
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    if workers > 1 and rate_limit is not None and not is_postgres_url(db):
        raise click.ClickException(
            "--rate-limit with --workers needs PostgreSQL (its limits are shared by every "
            "process); SQLite's are kept in one process's memory"
        )
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    options = AppOptions(body_budget=body_budget * 1024 * 1024, body_timeout=body_timeout)
    serving = ServingLimits(max_connections=max_connections, header_timeout=header_timeout)
    with sock:
        try:
            store = open_store(db)
        except (StoreError, ImportError) as exc:
            raise click.ClickException(str(exc)) from None
        if not store.list_keys():
            click.echo("note: no server keys yet; create one with `fanout collector keys "
                       "create --scope ingest`", err=True)
        if workers > 1:
            store.close()  # each worker opens its own connections after the fork
            click.echo(f"starting {workers} workers", err=True)
            status = serve_workers(
                lambda: open_store(db), sock, workers, rate_limit=rate_limit,
                options=options, serving=serving,
                on_ready=lambda url: click.echo(f"listening on {url}"),
            )
            if status:
                raise click.ClickException("a worker failed; every worker was stopped")
        else:
            serve(
                store, sock, limiter=store.limiter(rate_limit), options=options,
                serving=serving, on_ready=lambda url: click.echo(f"listening on {url}"),
            )
    click.echo("stopped", err=True)


@collector_group.group("projects")
def projects_group() -> None:
    """Create and list projects: each owns its events, identities and keys."""


@projects_group.command("create")
@click.argument("name")
@_db_option
def projects_create(name: str, db: str) -> None:
    """Create project NAME (lowercase letters, digits, '_', '.', '-')."""
    with _opened(db) as store:
        try:
            project = store.create_project(name)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"project {project.name} created (id {project.id})")


@projects_group.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def projects_list(db: str, as_json: bool) -> None:
    """List projects."""
    with _opened(db) as store:
        projects = store.list_projects()
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in projects], indent=2))
        return
    for p in projects:
        click.echo(f"{p.id:>4}  {p.name:<24} created {p.created_at}")


@collector_group.group("keys")
def keys_group() -> None:
    """Create, list and revoke server keys (only their hashes are stored)."""


@keys_group.command("create")
@click.option("--project", default=DEFAULT_PROJECT, show_default=True,
              help=f"The key's project ('{DEFAULT_PROJECT}' is created if missing).")
@click.option("--scope", type=click.Choice(SCOPES), default=INGEST, show_default=True,
              help="ingest: POST /v1/batch only (for app servers); read: timelines only.")
@click.option("--label", default=None, help="What the key is for, e.g. 'api-prod'.")
@_db_option
def keys_create(project: str, scope: str, label: str | None, db: str) -> None:
    """Create a key and print it once (it cannot be shown again)."""
    label = label or f"{project}-{scope}"
    with _opened(db) as store:
        if project == DEFAULT_PROJECT and store.project(project) is None:
            store.create_project(project)
        try:
            info, key = store.create_key(project, (scope,), label)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(key)
    click.echo(f"key {info.id} ({label}, project {project}, scope {scope}) created; store it "
               "now, it is not kept.", err=True)


@keys_group.command("list")
@_db_option
@click.option("--project", default=None, help="Only this project's keys.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(db: str, project: str | None, as_json: bool) -> None:
    """List keys: id, label, project, scopes, created, revoked (never the keys)."""
    with _opened(db) as store:
        keys = store.list_keys(project)
    if as_json:
        click.echo(json.dumps([k.__dict__ for k in keys], indent=2))
        return
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        click.echo(f"{k.id:>4}  {k.label:<24} {k.project:<16} {'+'.join(k.scopes):<12} "
                   f"created {k.created_at}  {state}")


@keys_group.command("revoke")
@click.argument("key_id", type=int)
@_db_option
def keys_revoke(key_id: int, db: str) -> None:
    """Revoke key KEY_ID (see `keys list`); its requests get 401 from then on."""
    with _opened(db) as store:
        done = store.revoke_key(key_id)
    if not done:
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"key {key_id} revoked")


@collector_group.command("timeline")
@click.argument("person_id")
@_db_option
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Events read per page; every page is read.")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON lines.")
def timeline_command(person_id: str, db: str, project: str, page_size: int,
                     as_json: bool) -> None:
    """The stitched timeline of PERSON_ID: their events and their anonymous past, all pages."""
    if "://" not in db:
        from pathlib import Path

        if not Path(db).exists():
            raise click.ClickException(f"no collector database at {db}")
    with _opened(db) as store:
        found = store.project(project)
        if found is None:
            raise click.ClickException(f"no project {project!r}")
        linked = store.linked_ids(found.id, person_id)
        events = read_timeline(store, found.id, person_id, page_size=page_size)
        if as_json:
            for e in events:
                click.echo(json.dumps(e, ensure_ascii=False))
            return
        click.echo(format_timeline(person_id, linked, events))


def format_timeline(person_id: str, linked: list[str], events: Any) -> str:
    """A terminal rendering of a person's events (shared with ``fanout demo``)."""
    head = f"timeline of {person_id}"
    if linked:
        head += f" (also known as {', '.join(linked)})"
    lines = [head]
    for e in events:
        who = e.get("person_id") or f"anon:{e.get('anonymous_id')}"
        what = e.get("name") or (e.get("properties") or {}).get("path") or ""
        lines.append(f"  {e['timestamp']}  {e['kind']:<8} {what:<24} {who:<20} {e['event_id']}")
    if len(lines) == 1:
        lines.append("  (no events)")
    return "\n".join(lines)
