"""The durable spool with real files, real subprocesses and real forks.

Dead processes are real: a child process tracks events to a provider that never answers
and then leaves by SIGKILL or ``os._exit``; the test's client, on the same directory, takes
its spool over and delivers it to an in-memory provider of the same name. Every test
counts sent, delivered, duplicated and dropped exactly.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fanout
from fanout._spool import SpoolQueue
from fanout._spoolfile import decode_payload, lock_if_dead, read_spool, spool_dirs, spool_info
from fanout.testing import InMemoryProvider

# A process that tracks N events into a spool for provider "sink", which hangs, so nothing
# leaves; it prints "spooled" once its spool holds all N, then leaves as told.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import fanout
    from fanout._spoolfile import read_spool, spool_dirs

    class Hanging:
        name = "sink"
        def send(self, batch):
            threading.Event().wait(3600)
        def close(self):
            pass

    root, n, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = fanout.Client(providers=[Hanging()], spool_dir=root, environ={},
                           load_entry_points=False, batch_size=50)
    for i in range(n):
        client.track("order", person_id=f"p{i % 7}", event_id=f"ev-{i}", properties={"i": i})
    time.sleep(0.2)  # a settle longer than the 50 ms loss window
    print("spooled", flush=True)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif how == "exit":
        os._exit(0)
    sys.stdin.readline()  # "wait": stay alive until the test closes stdin
    """
)


def spawn(root: Path, n: int, how: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(n), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spooled"
    return proc


def reap(proc: subprocess.Popen[str]) -> int:
    """Wait for ``proc`` (killing it if it still runs after 10 s) and close its pipes."""
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)
    finally:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def make(root: Path, provider: InMemoryProvider, **kwargs: object) -> fanout.Client:
    return fanout.Client(
        providers=[provider], spool_dir=root, environ=kwargs.pop("environ", {}),  # type: ignore[arg-type]
        load_entry_points=False, register_atexit=False, flush_interval=0.05, **kwargs,  # type: ignore[arg-type]
    )


def ids(events: list[fanout.Event]) -> collections.Counter[str]:
    return collections.Counter(e.event_id for e in events)


@pytest.mark.parametrize("how", ["kill", "term", "exit"])
def test_a_dead_process_spool_is_taken_over_and_delivered_once(tmp_path: Path, how: str) -> None:
    proc = spawn(tmp_path, 2000, how)
    assert reap(proc) == {"kill": -signal.SIGKILL, "term": -signal.SIGTERM, "exit": 0}[how]
    [dead] = list(spool_dirs(tmp_path, "sink"))
    assert not spool_info(dead).alive and spool_info(dead).events == 2000

    sink = InMemoryProvider("sink")
    client = make(tmp_path, sink)
    report = client.shutdown(timeout=10)
    counts = ids(sink.events)
    assert len(counts) == 2000 and set(counts) == {f"ev-{i}" for i in range(2000)}
    assert max(counts.values()) == 1  # no duplicates
    assert report["sink"].delivered == 2000 and report.ok
    assert list(spool_dirs(tmp_path)) == []  # the dead spool and our own are gone


def test_a_live_process_spool_is_never_taken(tmp_path: Path) -> None:
    proc = spawn(tmp_path, 300, "wait")
    try:
        sink = InMemoryProvider("sink")
        client = make(tmp_path, sink)
        client.track("mine", person_id="me", event_id="mine-1")
        report = client.shutdown(timeout=5)
        assert [e.event_id for e in sink.events] == ["mine-1"]
        assert report["sink"].delivered == 1
        [live] = list(spool_dirs(tmp_path, "sink"))
        assert spool_info(live).alive and spool_info(live).events == 300
    finally:
        proc.kill()
        reap(proc)
    # Once it is gone, the next client takes its 300.
    sink = InMemoryProvider("sink")
    make(tmp_path, sink).shutdown(timeout=10)
    assert ids(sink.events) == collections.Counter(f"ev-{i}" for i in range(300))


def test_clean_shutdown_leaves_no_spool_and_delivers_everything(tmp_path: Path) -> None:
    sink = InMemoryProvider("sink")
    client = make(tmp_path, sink)
    for i in range(500):
        client.track("x", person_id="u", event_id=f"e{i}")
    report = client.shutdown(timeout=10)
    assert report["sink"].delivered == 500 and report.ok
    assert ids(sink.events) == collections.Counter(f"e{i}" for i in range(500))
    assert list(spool_dirs(tmp_path)) == []


def test_sync_mode_puts_each_event_on_disk_before_track_returns(tmp_path: Path) -> None:
    blocked = _Gate("sink")
    client = make(tmp_path, blocked, environ={"FANOUT_SPOOL_SYNC": "1"})  # type: ignore[arg-type]
    try:
        for i in range(20):
            client.track("x", person_id="u", event_id=f"s{i}")
            [spool] = list(spool_dirs(tmp_path, "sink"))
            on_disk = [line for _, line in read_spool(spool).events]
            assert len(on_disk) == i + 1 and decode_payload(on_disk[-1]).event_id == f"s{i}"
    finally:
        blocked.release.set()
        report = client.shutdown(timeout=5)
    assert report["sink"].delivered == 20


def test_shutdown_keeps_undelivered_events_on_disk_for_the_next_process(tmp_path: Path) -> None:
    gate = _Gate("sink")
    client = make(tmp_path, gate, batch_size=10)
    for i in range(100):
        client.track("x", person_id="u", event_id=f"k{i}")
    assert gate.entered.wait(5)
    report = client.shutdown(timeout=0.3)  # the backend hangs past the deadline
    gate.release.set()
    # The batch in flight is reported (shutdown_timeout) but was never acknowledged, so it
    # stays on disk with the 90 that never left: nothing is dead-lettered for the rest.
    assert report["sink"].losses == {"shutdown_timeout": 10}
    assert report["sink"].pending == 90 and report["sink"].delivered == 0
    sink = InMemoryProvider("sink")
    again = make(tmp_path, sink).shutdown(timeout=5)
    assert ids(sink.events) == collections.Counter(f"k{i}" for i in range(100))
    assert again["sink"].delivered == 100 and again.ok


def test_events_older_than_max_age_are_dropped_and_counted(tmp_path: Path) -> None:
    proc = spawn(tmp_path, 50, "kill")
    reap(proc)
    time.sleep(0.05)
    sink = InMemoryProvider("sink")
    client = make(tmp_path, sink, environ={"FANOUT_SPOOL_MAX_AGE": "0.01"})  # type: ignore[arg-type]
    report = client.shutdown(timeout=5)
    assert sink.events == []
    assert report["sink"].losses == {"expired": 50} and report["sink"].dropped == 50


def test_torn_and_corrupt_records_are_skipped_and_counted(tmp_path: Path) -> None:
    proc = spawn(tmp_path, 10, "kill")
    reap(proc)
    [dead] = list(spool_dirs(tmp_path, "sink"))
    [segment] = [p for p in dead.iterdir() if p.suffix == ".seg"]
    with open(segment, "ab") as f:
        f.write(b"?garbage\n")  # an unreadable record
        f.write(b'{"kind":"track","event_id":"torn","na')  # a write cut by a crash
    sink = InMemoryProvider("sink")
    report = make(tmp_path, sink).shutdown(timeout=5)
    assert ids(sink.events) == collections.Counter(f"ev-{i}" for i in range(10))
    assert report["sink"].losses == {"spool_corrupt": 1}


def test_an_unwritable_directory_degrades_to_memory_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    sink = InMemoryProvider("sink")
    client = make(not_a_dir, sink)
    with caplog.at_level(logging.WARNING, logger="fanout.spool"):
        for i in range(300):
            client.track("x", person_id="u", event_id=f"d{i}")
        report = client.shutdown(timeout=5)
    assert ids(sink.events) == collections.Counter(f"d{i}" for i in range(300))
    assert report.ok and report["sink"].delivered == 300
    warnings = [r for r in caplog.records if r.name == "fanout.spool"]
    assert len(warnings) == 1 and "keeping events in memory" in warnings[0].getMessage()


def test_a_forked_child_gets_its_own_spool_and_never_frees_the_parents(tmp_path: Path) -> None:
    gate = _Gate("sink")
    client = make(tmp_path, gate)
    try:
        for i in range(10):
            client.track("parent", person_id="u", event_id=f"parent-{i}")
        queue: SpoolQueue = client._channels[0]._queue  # type: ignore[assignment]
        _wait_for(lambda: queue.directory is not None and len(read_spool(queue.directory).events) == 10)
        parent_spool = queue.directory
        assert parent_spool is not None
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            ok = lock_if_dead(parent_spool) is None
            for i in range(5):
                client.track("child", person_id="u", event_id=f"child-{i}")
            time.sleep(0.2)
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"1"  # the child saw the parent's lock held
        os.close(r)
        os.waitpid(pid, 0)
        spools = {p: spool_info(p) for p in spool_dirs(tmp_path, "sink")}
        assert spools[parent_spool].alive and spools[parent_spool].events == 10
        [child] = [i for p, i in spools.items() if p != parent_spool]
        assert not child.alive and child.events == 5
    finally:
        gate.release.set()
        client.shutdown(timeout=5)


def test_a_full_filesystem_degrades_to_memory(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount(8) here")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        sink = InMemoryProvider("sink")
        gate = _Gate("sink", then=sink)
        client = make(mnt, gate)
        for i in range(3000):  # ~600 KB of events: more than the filesystem holds
            client.track("x", person_id="u", event_id=f"f{i}", properties={"pad": "p" * 100})
        queue: SpoolQueue = client._channels[0]._queue  # type: ignore[assignment]
        _wait_for(lambda: queue.degraded)
        gate.release.set()
        report = client.shutdown(timeout=10)
        assert ids(sink.events) == collections.Counter(f"f{i}" for i in range(3000))
        assert report.ok and report["sink"].delivered == 3000
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class _Gate:
    """A provider that waits for ``release`` before each batch; then passes it on."""

    def __init__(self, name: str, then: InMemoryProvider | None = None) -> None:
        import threading

        self.name = name
        self.release = threading.Event()
        self.entered = threading.Event()
        self.then = then

    def send(self, batch: list[fanout.Event]) -> None:
        self.entered.set()
        if not self.release.wait(30):
            raise fanout.RetryableError("gate closed")
        if self.then is not None:
            self.then.send(batch)

    def close(self) -> None:
        self.release.set()


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_killed_spool_gives_back_the_very_events_it_was_given(tmp_path: Path) -> None:
    # Positional lines carry every field and the timestamp to the microsecond: the events
    # a second process takes over are equal to the originals, tuple for tuple.
    sent = [
        fanout.Event("track", name="paid", person_id="p", properties={"a": [1, 2.5, None]},
                     context={"ip": "192.0.2.1"}, event_id="full"),
        fanout.Event("group", anonymous_id="v", group_type="team", group_id="t1",
                     traits={"n": "é"}, event_id="grp"),
        fanout.Event("alias", person_id="new", previous_id="old", event_id="al"),
    ]
    queue = SpoolQueue(tmp_path, "sink", max_events=100, max_bytes=10**6, recover=False)
    for event in sent:
        assert queue.put(event)
    _wait_for(lambda: queue.directory is not None and len(read_spool(queue.directory).events) == 3)
    spool = queue.directory
    assert spool is not None
    queue.reset_after_fork()  # let go of the files without resolving anything, as a kill does
    fd = lock_if_dead(spool)
    assert fd is not None  # nobody holds it now: it can be taken over
    os.close(fd)
    heir = SpoolQueue(tmp_path, "sink", max_events=100, max_bytes=10**6)
    got = heir.take(100, 10**6)
    assert got == sent and heir.losses() == {}
    heir.ack(got)
    heir.close()


def test_a_spool_written_as_canonical_objects_by_an_older_fanout_is_still_delivered(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "sink" / "999999-00000000"
    spool.mkdir(parents=True)
    (spool / "lock").write_text("999999 host 0\n")
    events = [fanout.Event("track", name="old", person_id="u", event_id=f"o{i}") for i in range(5)]
    lines = b"".join(e.to_json() + b"\n" for e in events)
    (spool / "0000000000000000.seg").write_bytes(b"H 0\nA 0\nT %.3f\n" % time.time() + lines)
    sink = InMemoryProvider("sink")
    report = make(tmp_path, sink).shutdown(timeout=5)
    assert ids(sink.events) == collections.Counter(f"o{i}" for i in range(5))
    assert report["sink"].delivered == 5 and report["sink"].dropped == 0 and report.ok


def test_taken_over_lines_are_decoded_when_taken_and_bad_ones_resolved_in_order(
    tmp_path: Path,
) -> None:
    # A take-over only reads and copies lines; take() decodes them. A line that parses but
    # is no event, or does not parse, is counted and acknowledged with the batch it came
    # in (or the batch still in flight before it), never ahead of an event not yet sent.
    from fanout._spoolfile import encode_lines

    good = [fanout.Event("track", name="n", person_id="p", event_id=f"g{i}") for i in range(5)]
    bad_time = b'["track","b1","yesterday","p",null,"n",{},{},{},null,null,null]\n'
    short = b'["track","b2"]\n'
    lines = (
        bytes(encode_lines(good[:2])) + bad_time + short
        + bytes(encode_lines(good[2:4])) + b"[1, 2\n" + bytes(encode_lines(good[4:]))
    )
    spool = tmp_path / "sink" / "999999-00000000"
    spool.mkdir(parents=True)
    (spool / "lock").write_text("999999 host 0\n")
    (spool / "0000000000000000.seg").write_bytes(b"H 0\nA 0\nT %.3f\n" % time.time() + lines)

    heir = SpoolQueue(tmp_path, "sink", max_events=100, max_bytes=10**6)
    assert len(heir) == 8 and heir.losses() == {}  # nothing decoded yet
    first = heir.take(2, 10**6)  # g0 g1, left in flight
    second = heir.take(2, 10**6)  # b1 b2 skipped (with `first`), then g2 g3
    assert first == good[:2] and second == good[2:4]
    assert heir.losses() == {"spool_corrupt": 2}
    directory = heir.directory
    assert directory is not None

    def waiting() -> int:
        return len(read_spool(directory).events)

    _wait_for(lambda: waiting() == 8)  # nothing acknowledged yet
    heir.ack(first)
    _wait_for(lambda: waiting() == 4)  # g0 g1 b1 b2 resolved; g2 still in flight
    heir.ack(second)
    _wait_for(lambda: waiting() == 2)
    third = heir.take(10, 10**6)  # the broken JSON skipped, then g4
    assert third == good[4:] and heir.losses() == {"spool_corrupt": 3}
    heir.ack(third)
    _wait_for(lambda: waiting() == 0)
    assert heir.take(10, 10**6) == [] and len(heir) == 0
    heir.close()
    assert list(spool_dirs(tmp_path, "sink")) == []  # all resolved: the spool is deleted


@pytest.mark.parametrize("kind", ["spool", "memory"])
def test_take_cuts_batches_by_count_and_by_encoded_bytes_as_the_memory_queue(
    tmp_path: Path, kind: str
) -> None:
    # take() takes a whole batch in one step when it fits (the common case) and falls back
    # to the event-by-event cut when it does not: both queues cut the same batches.
    from fanout._queue import MemoryQueue

    small = [fanout.Event("track", name="s", person_id="p", event_id=f"s{i}") for i in range(7)]
    big = fanout.Event("track", name="b", person_id="p", event_id="big",
                       properties={"blob": "x" * 5000})
    events = [*small[:3], big, *small[3:]]
    queue: SpoolQueue | MemoryQueue = (
        SpoolQueue(tmp_path, "sink", max_events=100, max_bytes=10**6, recover=False)
        if kind == "spool" else MemoryQueue(100, 10**6)
    )
    for event in events:
        assert queue.put(event)
    one = small[0].size
    got = [
        queue.take(2, 10**6),  # by count: s0 s1
        queue.take(5, 3 * one),  # by bytes: s2, and big would not fit after it
        queue.take(5, 3 * one),  # big alone, though above max_bytes: at least one
        queue.take(3, 2 * one),  # by bytes again: s3 s4
        queue.take(100, 10**6),  # the rest, whole: s5 s6
        queue.take(100, 10**6),  # nothing left
    ]
    assert [[e.event_id for e in batch] for batch in got] == [
        ["s0", "s1"], ["s2"], ["big"], ["s3", "s4"], ["s5", "s6"], []]
    assert len(queue) == 0 and queue.nbytes == 0
    for batch in got:
        queue.ack(batch)
    queue.close()
    assert list(spool_dirs(tmp_path, "sink")) == []  # every event resolved: no spool left


def _dead_spool(root: Path, body: bytes, name: str = "999999-00000000") -> Path:
    """A spool left by a process that is gone (no one holds its lock), holding ``body``."""
    spool = root / "sink" / name
    spool.mkdir(parents=True)
    (spool / "lock").write_text("999999 host 0\n")
    (spool / "0000000000000000.seg").write_bytes(b"H 0\nA 0\nT %.3f\n" % time.time() + body)
    return spool


def test_group_commits_are_b_lines_resolved_in_part_by_acks_inside_them(tmp_path: Path) -> None:
    # The writer appends each group commit as one ``B n [...]`` line; an acknowledgement
    # that falls inside a B line resolves only the events before it.
    from fanout._spoolfile import encode_batch

    events = [fanout.Event("track", name="n", person_id="p", event_id=f"e{i}") for i in range(6)]
    line = bytes(encode_batch(events[:4], bytearray()))
    assert line.startswith(b"B 4 [[") and line.count(b"\n") == 1
    body = line + b"A 3\n" + bytes(encode_batch(events[4:], bytearray()))
    _dead_spool(tmp_path, body)
    waiting = read_spool(tmp_path / "sink" / "999999-00000000").events
    assert [decode_payload(p) for _, p in waiting] == events[3:]
    sink = InMemoryProvider("sink")
    report = make(tmp_path, sink).shutdown(timeout=5)
    assert ids(sink.events) == collections.Counter(["e3", "e4", "e5"])
    assert report["sink"].delivered == 3 and report["sink"].dropped == 0 and report.ok


def test_an_unreadable_b_line_keeps_the_numbering_and_counts_each_event_once(
    tmp_path: Path,
) -> None:
    # A B line whose array does not parse, or holds fewer events than it says, still takes
    # its n sequence numbers: the acks after it resolve the right events, and its
    # unresolved events are counted as corrupt, exactly.
    from fanout._spoolfile import encode_batch

    good = [fanout.Event("track", name="n", person_id="p", event_id=f"g{i}") for i in range(4)]
    body = (
        b"B 3 [[1,2],[3\n"  # 3 events, not JSON
        + bytes(encode_batch(good[:2], bytearray()))
        + b'B 2 [["track"]]\n'  # says 2, holds 1
        + b"A 1\n"  # resolves the first of the broken three
        + bytes(encode_batch(good[2:], bytearray()))
        + b"B 5 [[tor"  # a torn last line: never written, not counted
    )
    _dead_spool(tmp_path, body)
    records = read_spool(tmp_path / "sink" / "999999-00000000")
    # The first line is parsed at once (an ack falls inside it); the short one only when
    # its events are taken, so it is listed for now and proves corrupt when decoded.
    assert records.corrupt == 2 and len(records.events) == 2 + 4
    sink = InMemoryProvider("sink")
    report = make(tmp_path, sink).shutdown(timeout=5)
    assert ids(sink.events) == collections.Counter(f"g{i}" for i in range(4))
    assert report["sink"].delivered == 4
    assert report["sink"].losses == {"spool_corrupt": 4} and report["sink"].dropped == 4


def test_b_line_events_taken_over_twice_arrive_once_each(tmp_path: Path) -> None:
    # A take-over copies parsed B-line events into its own spool as a B line again; a
    # second process taking that over (the first died too) gets the very same events.
    sent = [fanout.Event("track", name="paid", person_id=f"p{i}", event_id=f"t{i}",
                         properties={"i": i, "x": [1.5, None, "é"]}) for i in range(30)]
    queue = SpoolQueue(tmp_path, "sink", max_events=100, max_bytes=10**6, recover=False)
    for event in sent:
        assert queue.put(event)
    _wait_for(lambda: queue.directory is not None
              and len(read_spool(queue.directory).events) == 30)
    queue.reset_after_fork()  # gone without resolving anything
    first = SpoolQueue(tmp_path, "sink", max_events=100, max_bytes=10**6)
    assert len(first) == 30
    directory = first.directory
    assert directory is not None
    copied = (directory / "0000000000000000.seg").read_bytes()
    b_lines = [line for line in copied.splitlines() if line.startswith(b"B ")]
    # copied as B lines again (one per group commit of the dead writer), not line by line
    assert sum(int(line.split(b" ")[1]) for line in b_lines) == 30
    assert not any(line.startswith(b"[") for line in copied.splitlines())
    first.reset_after_fork()  # the heir dies too, before taking anything
    second = SpoolQueue(tmp_path, "sink", max_events=100, max_bytes=10**6)
    got = second.take(100, 10**6)
    assert got == sent and second.losses() == {} and len(second) == 0
    second.ack(got)
    second.close()
    assert list(spool_dirs(tmp_path, "sink")) == []


def test_drain_reports_what_it_took_over_however_fast_delivery_goes(tmp_path: Path) -> None:
    # The null provider resolves a batch at once, and its worker starts as its channel is
    # built, while the memory channel after it is still taking a big spool over: by the time
    # the client is built, part of what null took over is delivered. The count comes from
    # the dead spools on disk (before and after the take-over), not from what is pending.
    for provider, n in (("null", 250), ("memory", 40_000)):
        queue = SpoolQueue(tmp_path, provider, max_events=10**5, max_bytes=10**8, recover=False)
        for i in range(n):
            assert queue.put(fanout.Event("track", name="n", person_id="p", event_id=f"d{i}"))
        _wait_for(lambda q=queue, n=n: q.directory is not None  # type: ignore[misc]
                  and len(read_spool(q.directory).events) == n)
        queue.reset_after_fork()  # gone, as after a kill
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    done = subprocess.run(
        [sys.executable, "-c", "from fanout.cli import run; run()", "spool", "drain",
         "--dir", str(tmp_path), "--timeout", "60"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**env, "FANOUT_PROVIDERS": "null,memory", "FANOUT_BATCH_SIZE": "10",
             "FANOUT_QUEUE_SIZE": "100000"},
    )
    assert done.returncode == 0, done.stderr
    assert "null: took over 250 event(s)" in done.stderr
    assert "memory: took over 40000 event(s)" in done.stderr
    assert list(spool_dirs(tmp_path)) == []  # all delivered, nothing left
