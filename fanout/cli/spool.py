"""``fanout spool status | drain``: what dead processes left on disk, and delivering it.

``drain`` is a client like any other: building it with the spool directory takes over
every spool whose owner is gone (never a live one) for each enabled provider, and its
shutdown delivers them within ``--timeout``. It fits a deploy hook or a cron job.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import click

from .._config import FANOUT_SPOOL_DIR, environ
from .._spoolfile import spool_dirs, spool_info
from ._common import build_client, user_errors


def _spool_dir(option: Path | None) -> Path:
    if option is not None:
        return option
    with user_errors():
        value = FANOUT_SPOOL_DIR.read(environ())
    if value is None:
        raise click.UsageError("no spool directory: pass --dir or set FANOUT_SPOOL_DIR")
    return Path(value)


_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Spool directory (default: FANOUT_SPOOL_DIR).",
)


@click.group("spool")
def spool_group() -> None:
    """Inspect and deliver the durable spool (FANOUT_SPOOL_DIR)."""


@spool_group.command("status")
@_dir_option
def status_command(directory: Path | None) -> None:
    """Per provider and process: events waiting, bytes, age of the oldest, owner alive."""
    root = _spool_dir(directory)
    infos = [spool_info(p) for p in spool_dirs(root)]
    if not infos:
        click.echo(f"no spools in {root}")
        return
    rows = [("provider", "pid", "owner", "events", "bytes", "oldest")]
    for i in infos:
        age = "-" if i.age is None else _age(i.age)
        owner = "alive" if i.alive else "gone"
        rows.append((i.provider, str(i.pid or "?"), owner, str(i.events), str(i.nbytes), age))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) if n < 3 else c.rjust(w)
                             for n, (c, w) in enumerate(zip(row, widths, strict=True))))
    waiting = sum(i.events for i in infos if not i.alive)
    click.echo(f"{waiting} event(s) in spools of processes that are gone")


def _waiting(root: Path) -> collections.Counter[str]:
    """Events in the spools of processes that are gone, per provider."""
    waiting: collections.Counter[str] = collections.Counter()
    for info in (spool_info(p) for p in spool_dirs(root)):
        if not info.alive:
            waiting[info.provider] += info.events
    return waiting


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


@spool_group.command("drain")
@_dir_option
@click.option("-P", "--provider", "providers", multiple=True, help="Drain only these.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def drain_command(
    directory: Path | None, providers: tuple[str, ...], timeout: float, quiet: bool
) -> None:
    """Deliver what processes that are gone left in the spool; exit 1 unless all went."""
    root = _spool_dir(directory)
    before = _waiting(root)
    client = build_client(providers, register_atexit=False, spool_dir=root, sync=False)
    # What the take-over removed from the dead spools, counted on disk: the channels start
    # delivering as they are built, so their pending count is already lower by then.
    after = _waiting(root)
    taken = {name: before[name] - after[name] for name in client.stats()}
    report = client.shutdown(timeout=timeout)
    left = [
        i for i in (spool_info(p) for p in spool_dirs(root))
        if not i.alive and i.events and i.provider in client.providers
    ]
    if not quiet:
        for name, n in taken.items():
            click.echo(f"{name}: took over {n} event(s)", err=True)
        click.echo(report.table(), err=True)
        others = sorted({
            i.provider for i in (spool_info(p) for p in spool_dirs(root))
            if not i.alive and i.events and i.provider not in client.providers
        })
        if others:
            click.echo(f"not enabled here, left in the spool: {', '.join(others)}", err=True)
    if not report.ok or left:
        sys.exit(1)
