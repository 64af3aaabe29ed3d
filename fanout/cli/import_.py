"""``fanout import FILE...``: history from export files, through the same channels.

Each record becomes an event with its vendor's id (see :mod:`fanout._importers`) and goes
through an ordinary client (``overflow=block``, so a slow backend slows the reader instead of
dropping): batching, retries, 429s and the providers' historical routes for old events all
apply. Every ``--chunk`` lines the client is flushed and, once that chunk is resolved, the
file's checkpoint (line and byte offset) is written, so ``--resume`` goes on from the last
delivered line and seeks past the rest. Bad records are reported as ``file:line``, written
to ``<state>/rejects.jsonl`` and never stop the others.

The progress display uses rich (``pip install 'fanout-analytics[import]'``) when it is
installed and stderr is a terminal; otherwise a plain line every few seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from .._client import Client
from .._importers import (
    CSV_FIELDS,
    FORMATS,
    ImportError_,
    convert,
    default_format,
    detect_format,
    read_records,
)
from .._report import FlushReport
from ._common import build_client, parse_pairs

MAX_REPORTED = 20


#: Seconds between progress updates: the bar re-renders (rich, in its own thread) and the
#: per-provider counts are read at most this often, never per event.
PROGRESS_EVERY = 0.25


class _Progress:
    """rich's live bar where available and useful, else a plain line every 2 s."""

    def __init__(self, enabled: bool) -> None:
        self._rich: Any = None
        self._last = 0.0
        self._shown = 0.0
        self._start = time.monotonic()
        if enabled and sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )
            except ImportError:
                pass
            else:
                self._rich = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.fields[rate]:>8.0f} ev/s"),
                    TextColumn("{task.fields[counts]}"),
                    TimeRemainingColumn(),
                    console=Console(stderr=True),
                    refresh_per_second=1 / PROGRESS_EVERY,
                )
                self._rich.start()
        self._task: Any = None
        self.enabled = enabled

    def file(self, name: str, total: int | None) -> None:
        if self._rich is not None:
            self._task = self._rich.add_task(name, total=total, rate=0.0, counts="")

    def due(self) -> bool:
        """Whether an update would show anything now (cheap; asked every few hundred lines)."""
        return self.enabled and time.monotonic() - self._shown >= PROGRESS_EVERY

    def update(self, offset: int, events: int, counts: str) -> None:
        now = self._shown = time.monotonic()
        rate = events / max(now - self._start, 1e-9)
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, completed=offset, rate=rate, counts=counts)
        elif self.enabled and now - self._last >= 2.0:
            self._last = now
            click.echo(f"{events} events, {rate:.0f} ev/s  {counts}", err=True)

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()


def _checkpoint_path(state: Path, path: str) -> Path:
    key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    return state / f"checkpoint-{key}.json"


def _identity(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"file": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _save(checkpoint: Path, data: dict[str, Any]) -> None:
    tmp = checkpoint.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, checkpoint)


def _counts(client: Client | None) -> str:
    if client is None:
        return ""
    return " ".join(f"{n}={r.delivered}" for n, r in client.stats().items())


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A number of seconds or a rate whose inverse is one too: not NaN (which passes
    ``FloatRange``), not infinite, not so small that its inverse overflows."""
    if value is not None and not (math.isfinite(value) and math.isfinite(1.0 / value)):
        raise click.BadParameter(f"{value!r} is not a usable number", ctx=ctx, param=param)
    return value


@click.command("import")
# Every file is checked before the first is read: a missing one must not leave the others
# half-imported.
@click.argument(
    "files", nargs=-1, required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, allow_dash=True),
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: guessed per file.")
@click.option("--to", "to", help="Comma-separated providers (default: the enabled ones).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), callback=_finite,
              help="At most this many events per second.")
@click.option("--resume", is_flag=True, help="Go on from each file's last checkpoint.")
@click.option("--dry-run", is_flag=True, help="Read and convert; send nothing.")
@click.option("--map", "mapping", multiple=True, metavar="FIELD=COLUMN",
              help="CSV: the column of name, person_id, anonymous_id, event_id, timestamp, kind.")
@click.option("--state", type=click.Path(path_type=Path, file_okay=False),
              default=Path(".fanout-import"), show_default=True,
              help="Where checkpoints and rejects.jsonl are kept.")
@click.option("--chunk", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Lines between checkpoints.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, callback=_finite,
              help="Seconds to wait for each chunk's delivery.")
@click.option("--progress/--no-progress", default=True)
def import_command(
    files: tuple[str, ...], fmt: str | None, to: str | None, rate: float | None, resume: bool,
    dry_run: bool, mapping: tuple[str, ...], state: Path, chunk: int, timeout: float,
    progress: bool,
) -> None:
    """Import history from FILE... (JSON lines or CSV, plain or gzip, - for stdin).
    Exit 0 only when every record was delivered to every provider."""
    columns = {k: str(v) for k, v in parse_pairs(mapping, "--map").items()}
    unknown = sorted(set(columns) - set(CSV_FIELDS))
    if unknown:
        raise click.BadParameter(
            f"no field {', '.join(map(repr, unknown))}; a CSV maps {', '.join(CSV_FIELDS)}",
            param_hint="--map",
        )
    providers = tuple(p.strip() for p in (to or "").split(",") if p.strip())
    client = None if dry_run else build_client(
        providers, register_atexit=False, overflow="block", block_timeout=timeout, sync=False
    )
    state.mkdir(parents=True, exist_ok=True)
    rejects_path = state / "rejects.jsonl"
    bar = _Progress(progress)
    read = sent = rejected = 0
    send = client.send if client is not None else None
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    timed_out = False
    try:
        with open(rejects_path, "a", encoding="utf-8") as rejects:
            for path in files:
                checkpoint = _checkpoint_path(state, path) if path != "-" else None
                start_line = start_offset = 0
                ident = _identity(path) if checkpoint is not None else {}
                if resume and checkpoint is not None and checkpoint.exists():
                    saved = json.loads(checkpoint.read_text())
                    if {k: saved.get(k) for k in ident} == ident:
                        if saved.get("done"):
                            click.echo(f"{path}: already imported (checkpoint)", err=True)
                            continue
                        start_line, start_offset = saved["line"], saved["offset"]
                        click.echo(f"{path}: resuming after line {start_line}", err=True)
                bar.file(path, ident.get("size"))
                file_fmt = fmt or default_format(path)
                done_line, done_offset = start_line, start_offset
                since_flush = 0
                for line, offset, record in read_records(
                    path, file_fmt or "fanout", start_line=start_line, start_offset=start_offset
                ):
                    read += 1
                    try:
                        if file_fmt is None and not isinstance(record, ImportError_):
                            file_fmt = detect_format(record)
                            if file_fmt is None:
                                raise ImportError_("cannot tell the format; pass --format")
                        events = convert(file_fmt or "fanout", record, columns)
                    except ImportError_ as exc:
                        rejected += 1
                        if rejected <= MAX_REPORTED:
                            click.echo(f"{path}:{line}: {exc}", err=True)
                        rejects.write(json.dumps({
                            "file": path, "line": line, "error": str(exc),
                            "record": None if isinstance(record, ImportError_) else record,
                        }, default=str) + "\n")
                        events = []
                    for event in events:
                        if interval:
                            next_at += interval
                            ahead = next_at - time.monotonic()
                            if ahead > 0.01:
                                time.sleep(ahead)
                            elif ahead < -1.0:
                                next_at = time.monotonic()  # no bursts after a stall
                        if send is not None:
                            send(event)
                    sent += len(events)
                    since_flush += 1
                    if since_flush >= chunk:
                        since_flush = 0
                        if not _flushed(client, timeout):
                            timed_out = True
                        elif checkpoint is not None and not dry_run:
                            # (a dry run sends nothing, so it marks nothing as imported)
                            done_line, done_offset = line, offset
                            _save(checkpoint, {**ident, "line": line, "offset": offset})
                    if not read & 511 and bar.due():
                        bar.update(offset, sent, _counts(client))
                if _flushed(client, timeout):
                    if checkpoint is not None and not dry_run:
                        _save(checkpoint, {**ident, "line": done_line, "offset": done_offset,
                                           "done": True})
                else:
                    timed_out = True
    finally:
        bar.stop()
    report = client.shutdown(timeout=timeout) if client is not None else None
    _summary(report, read, sent, rejected, rejects_path, dry_run)
    if rejected or timed_out or (report is not None and not report.ok):
        sys.exit(1)


def _flushed(client: Client | None, timeout: float) -> bool:
    if client is None:
        return True
    report = client.flush(timeout=timeout)
    return not report.timed_out


def _summary(
    report: FlushReport | None, read: int, sent: int, rejected: int, rejects: Path,
    dry_run: bool,
) -> None:
    verb = "would send" if dry_run else "sent"
    click.echo(f"records read {read}, events {verb} {sent}, rejected {rejected}", err=True)
    if rejected:
        click.echo(f"rejected records are in {rejects}", err=True)
    if report is None:
        return
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        click.echo(report.table(), err=True)
        return
    table = Table(title="fanout import")
    for col in ("provider", "delivered", "failed", "dropped", "skipped", "pending"):
        table.add_column(col, justify="left" if col == "provider" else "right")
    for name, r in report.items():
        table.add_row(name, *(str(x) for x in (r.delivered, r.failed, r.dropped, r.skipped,
                                                r.pending)))
    Console(stderr=True).print(table)
