"""``fanout deadletter list | show | replay``: the dead letters, read back and sent again.

Replay, per provider file: the file is first renamed aside (so dead letters written
meanwhile, by this replay or by live processes, start a fresh file), the records that the
filters leave out are written back, and the selected events go through a client with that
one provider. What fails again is dead-lettered again by the channel, with its new reason;
what was delivered is gone. Nothing is lost if the replay itself is killed: the renamed
file stays (``<provider>.jsonl.replay-<pid>``) and can be renamed back.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .._config import FANOUT_DEAD_LETTER_DIR, environ
from .._replay import DeadLetter, dead_letter_files, parse_since, read_dead_letters
from ._common import build_client, user_errors


def _directory(option: Path | None) -> Path:
    if option is not None:
        return option
    with user_errors():
        value = FANOUT_DEAD_LETTER_DIR.read(environ())
    if value is None:
        raise click.UsageError("no dead-letter directory: pass --dir or set FANOUT_DEAD_LETTER_DIR")
    return Path(value)


def _since(value: str | None) -> _dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def _selected(record: DeadLetter, since: _dt.datetime | None) -> bool:
    if record.event is None:
        return False
    return since is None or (record.failed_at is not None and record.failed_at >= since)


_options = [
    click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
                 help="Dead-letter directory (default: FANOUT_DEAD_LETTER_DIR)."),
    click.option("-P", "--provider", help="Only this provider's dead letters."),
    click.option("--since", help="Only those that failed since: 2h, 3d or an ISO 8601 time."),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with_options(f: F) -> F:
    for option in reversed(_options):
        f = option(f)
    return f


@click.group("deadletter")
def deadletter_group() -> None:
    """Inspect and replay dead letters (FANOUT_DEAD_LETTER_DIR)."""


@deadletter_group.command("list")
@_with_options
def list_command(directory: Path | None, provider: str | None, since: str | None) -> None:
    """Counts per provider and reason."""
    root, cutoff = _directory(directory), _since(since)
    counts: Counter[tuple[str, str]] = Counter()
    for path in dead_letter_files(root, provider):
        for record in read_dead_letters(path):
            if record.event is None:
                counts[(record.provider, "unreadable")] += 1
            elif _selected(record, cutoff):
                counts[(record.provider, record.reason)] += 1
    if not counts:
        click.echo(f"no dead letters in {root}")
        return
    width = max(len(p) for p, _ in counts)
    for (name, reason), n in sorted(counts.items()):
        click.echo(f"{name:<{width}}  {reason:<18} {n:>8}")
    click.echo(f"{sum(counts.values())} dead letter(s)")


@deadletter_group.command("show")
@_with_options
@click.option("-n", "--limit", type=int, default=20, show_default=True)
def show_command(
    directory: Path | None, provider: str | None, since: str | None, limit: int
) -> None:
    """Print dead letters as JSON lines (reason, error, event)."""
    root, cutoff = _directory(directory), _since(since)
    shown = 0
    for path in dead_letter_files(root, provider):
        for record in read_dead_letters(path):
            if not _selected(record, cutoff):
                continue
            if shown >= limit:
                click.echo("... more; raise --limit to see them", err=True)
                return
            click.echo(record.raw.rstrip("\n"))
            shown += 1


@deadletter_group.command("replay")
@_with_options
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; send nothing.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def replay_command(
    directory: Path | None, provider: str | None, since: str | None, dry_run: bool,
    timeout: float,
) -> None:
    """Send dead letters again, each to its own provider, with its original event id.
    Exit 1 unless every replayed event was delivered."""
    root, cutoff = _directory(directory), _since(since)
    delivered = failed = skipped = 0
    for path in dead_letter_files(root, provider):
        name = path.name.removesuffix(".jsonl")
        records = list(read_dead_letters(path))
        chosen = [r for r in records if _selected(r, cutoff)]
        skipped_here = len(records) - len(chosen)
        if dry_run:
            click.echo(f"{name}: would replay {len(chosen)}, skip {skipped_here}")
            skipped += skipped_here
            continue
        if not chosen:
            skipped += skipped_here
            continue
        aside = path.with_name(f"{path.name}.replay-{os.getpid()}")
        os.replace(path, aside)
        picked = {id(r) for r in chosen}
        kept = [r.raw if r.raw.endswith("\n") else r.raw + "\n"
                for r in records if id(r) not in picked]
        if kept:
            with open(path, "a", encoding="utf-8") as f:
                f.writelines(kept)
        client = build_client(
            (name,), register_atexit=False, dead_letter_dir=str(root), overflow="block",
            block_timeout=timeout, sync=False,
        )
        for record in chosen:
            assert record.event is not None
            client.send(record.event)
        report = client.shutdown(timeout=timeout)[name]
        aside.unlink()
        delivered += report.delivered
        failed += report.failed + report.dropped
        skipped += skipped_here
        click.echo(
            f"{name}: delivered {report.delivered}, failed again {report.failed + report.dropped}"
            f", skipped {skipped_here}",
            err=True,
        )
    summary = {"delivered": delivered, "failed_again": failed, "skipped": skipped}
    click.echo(json.dumps(summary))
    if failed:
        sys.exit(1)
