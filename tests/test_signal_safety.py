"""Signals landing while the main thread tracks: no lock left held, nothing lost.

A signal's Python handler runs where the interpreter next checks for pending calls, which
CPython does at the end of every call: Ctrl-C's ``KeyboardInterrupt``, or the ``SystemExit``
of the SIGTERM handler docs/lifecycle.md recommends, can be raised anywhere in ``track()``,
for instance right after a queue's ``lock.acquire()`` returned and before the ``try`` that
releases it began. The lock then stayed held: the exit hook's flush waited for it forever,
the process hung, and everything queued was lost.

Real processes, real signals, the reference collector (``fanout collector serve``): each
child tracks in a tight loop on its main thread and takes ``SIGNALS`` signals at staggered
random moments, each sent once it has answered the one before. It catches all but the last
(as a REPL, or a loop that retries, would), so that each signal is one more chance to land
in such a window; the last ends it through the exit hook, which must deliver everything
within ``EXIT_BOUND`` seconds. Counted exactly: the child names its events (``event_id``)
and reports how many calls it made and which of them a signal cut short (their event may or
may not be queued); every other event must be stored, once, and nothing else.

With the old ``acquire()``-then-``try`` queue locks, 2 to 6 of the 8 children of every case
hung (a signal in 30 or so left a lock held); with the fix, 160 children of each case (4,000
signals in all) neither hung nor lost an event.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fanout.collector.keys import INGEST
from fanout.collector.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

#: Children per case, how many run at once, and signals per child.
CHILDREN = 8
PARALLEL = 4
SIGNALS = 25
#: Seconds a child may take to exit after its last signal (it takes well under one).
EXIT_BOUND = 20.0

CHILD = """
import faulthandler, os, signal, sys

import fanout

faulthandler.register(signal.SIGUSR1, all_threads=True)  # the stacks, should it hang
if os.environ["SIG"] == "TERM":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # as docs/lifecycle.md says
    caught = SystemExit
else:
    caught = KeyboardInterrupt
signals = int(os.environ["SIGNALS"])
prefix = os.environ["PREFIX"]
track = fanout.track
n = 0
cut = []
try:
    while True:
        try:  # the answer inside: the next signal may come as soon as it is written
            if cut:
                os.write(1, b"+\\n")
            while True:
                n += 1  # counted before the call: no signal lands in between
                track("ev", person_id="p", event_id=f"{prefix}{n}")
                if n == 300:
                    os.write(1, b"ready\\n")
        except caught:
            cut.append(n)  # the call it cut short, if any, was the n-th
            if len(cut) == signals:
                raise
finally:
    os.write(1, f"{n} {' '.join(map(str, cut))}\\n".encode())
"""


@dataclasses.dataclass
class Served:
    url: str
    key: str
    db: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``fanout collector serve`` process for the module's cases."""
    db = tmp_path_factory.mktemp("collector") / "c.db"
    store = SQLiteStore(db)
    store.create_project("tests")
    _, key = store.create_key("tests", (INGEST,), "signals")
    store.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from fanout.cli import main; main()",
         "collector", "serve", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        assert line.startswith("listening on "), line
        yield Served(line.removeprefix("listening on "), key, db)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@dataclasses.dataclass
class Outcome:
    prefix: str
    hung: str | None = None  # why the child counts as hung, with its stacks
    tracked: int = 0
    cut: set[int] = dataclasses.field(default_factory=set)
    spool: Path | None = None


def _lines(stream: Iterator[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line.strip())
    into.put(None)


def _run_child(script: Path, env: dict[str, str], sig: signal.Signals, prefix: str,
               cwd: Path) -> Outcome:
    """One child: ready, ``SIGNALS`` signals each after the previous one's answer, exit."""
    outcome = Outcome(prefix)
    err = cwd / f"{prefix}stderr.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=cwd,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    rng = random.Random()
    try:
        expected = "ready"
        for _ in range(SIGNALS):
            try:
                line = lines.get(timeout=60 if expected == "ready" else EXIT_BOUND)
            except queue.Empty:
                line = "(nothing)"
            if line != expected:
                outcome.hung = f"answered {line!r} instead of {expected!r}"
                break
            expected = "+"
            time.sleep(rng.uniform(0.001, 0.02))
            proc.send_signal(sig)
        if outcome.hung is None:
            try:
                proc.wait(EXIT_BOUND)
            except subprocess.TimeoutExpired:
                outcome.hung = f"still running {EXIT_BOUND:.0f} s after its last signal"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack
            time.sleep(0.5)
            proc.kill()
        proc.wait()
        reader.join(10)
        proc.stdout.close()
    if outcome.hung is not None:
        outcome.hung += "\n" + err.read_text()[-4000:]
        return outcome
    last = [line for line in iter(lines.get_nowait, None) if line and line != "+"]
    tracked, *cut = last[-1].split()
    outcome.tracked = int(tracked)
    outcome.cut = {int(c) for c in cut}
    return outcome


@pytest.mark.parametrize("queue_kind", ["memory", "spool"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_while_tracking_never_hang_the_exit_nor_lose_an_event(
    served: Served, tmp_path: Path, sig: signal.Signals, queue_kind: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    base = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    base.update(
        FANOUT_PROVIDERS="collector",
        FANOUT_COLLECTOR_URL=served.url,
        FANOUT_COLLECTOR_KEY=served.key,
        FANOUT_SHUTDOWN_TIMEOUT="10",
        SIG=sig.name.removeprefix("SIG"),
        SIGNALS=str(SIGNALS),
    )
    run = f"{tmp_path.name}-"

    def one(i: int) -> Outcome:
        prefix = f"{run}{i}-"
        env = {**base, "PREFIX": prefix}
        spool = None
        if queue_kind == "spool":
            spool = tmp_path / f"spool{i}"  # one each: no child takes over another's spool
            env["FANOUT_SPOOL_DIR"] = str(spool)
        outcome = _run_child(script, env, sig, prefix, tmp_path)
        outcome.spool = spool
        return outcome

    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(one, range(CHILDREN)))

    store = SQLiteStore(served.db)
    try:
        stored = [e for e in store.event_ids() if e.startswith(run)]
    finally:
        store.close()
    by_child: dict[str, list[int]] = collections.defaultdict(list)
    for event_id in stored:
        prefix, _, n = event_id.rpartition("-")
        by_child[prefix + "-"].append(int(n))

    hung = [o for o in outcomes if o.hung is not None]
    wrong = []
    for o in outcomes:
        if o.hung is not None:
            continue
        got = by_child.get(o.prefix, [])
        tracked = set(range(1, o.tracked + 1))
        missing = tracked - o.cut - set(got)
        extra = set(got) - tracked
        twice = len(got) - len(set(got))
        if missing or extra or twice:
            wrong.append(f"{o.prefix}: {o.tracked} tracked, {len(o.cut)} cut short, "
                         f"{len(missing)} missing, {len(extra)} unknown, {twice} twice")
        if o.spool is not None:
            left = [p for p in (o.spool / "collector").glob("*") if p.is_dir()]
            if left:
                wrong.append(f"{o.prefix}: the spool left {left} behind")
    assert not hung, (
        f"{len(hung)} of {CHILDREN} children ({SIGNALS} signals each) hung:\n"
        + "\n".join(f"--- {o.prefix} {o.hung}" for o in hung)
    )
    assert not wrong, "\n".join(wrong)
    assert sum(o.tracked for o in outcomes) > CHILDREN * SIGNALS  # they did track
