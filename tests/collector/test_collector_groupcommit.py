"""Group commit (fanout.collector.groupcommit): writes queued while one transaction commits
go in the next one together, each with its own result, and one write's failure is its own.

Real threads against a real lock; the SQLite test stores concurrent, overlapping batches
and counts accepted and duplicate events exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from fanout.collector.groupcommit import GroupCommit
from fanout.collector.ingest import validate_batch
from fanout.collector.sqlite import SQLiteStore
from fanout.collector.store import InsertResult


def _wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the bound")
        time.sleep(0.005)


def test_writes_queued_behind_a_commit_share_the_next_one_with_their_own_results() -> None:
    lock = threading.Lock()
    groups: list[list[int]] = []
    first_started, release = threading.Event(), threading.Event()

    def commit(jobs: Sequence[int]) -> list[int]:
        groups.append(list(jobs))
        if len(groups) == 1:
            first_started.set()
            assert release.wait(10)
        return [job * 10 for job in jobs]

    writes: GroupCommit[int, int] = GroupCommit(lock, commit)
    results: dict[int, int] = {}

    def submit(job: int) -> None:
        results[job] = writes.submit(job)

    leader = threading.Thread(target=submit, args=(0,))
    leader.start()
    assert first_started.wait(10)
    followers = [threading.Thread(target=submit, args=(j,)) for j in range(1, 6)]
    for t in followers:
        t.start()
    _wait_until(lambda: writes.queued == 5)
    release.set()
    for t in [leader, *followers]:
        t.join(10)
    assert groups[0] == [0]
    assert sorted(groups[1]) == [1, 2, 3, 4, 5]  # one transaction for the five
    assert len(groups) == 2
    assert results == {j: j * 10 for j in range(6)}
    assert writes.queued == 0


def test_a_failing_write_fails_alone_and_the_rest_of_its_group_commits() -> None:
    lock = threading.Lock()
    groups: list[list[int]] = []
    committed: list[int] = []

    def commit(jobs: Sequence[int]) -> list[int]:
        groups.append(list(jobs))
        if 13 in jobs:
            raise ValueError("job 13 cannot be written")
        committed.extend(jobs)
        return list(jobs)

    writes: GroupCommit[int, int] = GroupCommit(lock, commit)
    outcomes: dict[int, object] = {}

    def submit(job: int) -> None:
        try:
            outcomes[job] = writes.submit(job)
        except ValueError as exc:
            outcomes[job] = exc

    with lock:  # hold the writer lock so that all three queue into one group
        threads = [threading.Thread(target=submit, args=(j,)) for j in (12, 13, 14)]
        for t in threads:
            t.start()
        _wait_until(lambda: writes.queued == 3)
    for t in threads:
        t.join(10)
    assert sorted(groups[0]) == [12, 13, 14]  # the group failed, then each went alone
    assert sorted(map(tuple, groups[1:])) == [(12,), (13,), (14,)]
    assert sorted(committed) == [12, 14]
    assert outcomes[12] == 12 and outcomes[14] == 14
    assert isinstance(outcomes[13], ValueError)


def _events(ids: list[str]) -> list[dict[str, object]]:
    return [{"event_id": e, "name": "order", "person_id": f"p{i % 7}",
             "timestamp": "2026-01-02T03:04:05.678Z"} for i, e in enumerate(ids)]


def test_sqlite_counts_each_batch_exactly_when_concurrent_batches_overlap(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    project = store.create_project("p")
    # 8 senders, 40 batches of 50 events; each batch shares half its ids with another.
    batches = [[f"e{b * 25 + i}" for i in range(50)] for b in range(40)]
    sent = sum(len(b) for b in batches)
    distinct = len({e for b in batches for e in b})
    results: list[InsertResult] = []
    guard = threading.Lock()

    def sender(mine: list[list[str]]) -> None:
        for ids in mine:
            ingested = validate_batch(_events(ids))
            assert not ingested.rejected
            result = store.insert(project.id, ingested.rows, ingested.links)
            with guard:
                results.append(result)

    threads = [threading.Thread(target=sender, args=(batches[s::8],)) for s in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 40
        assert sum(r.accepted for r in results) == distinct == 1025
        assert sum(r.duplicates for r in results) == sent - distinct == 975
        stored = store.event_ids(project.id)
        assert len(stored) == len(set(stored)) == distinct
    finally:
        store.close()


def test_sqlite_insert_error_reaches_its_caller(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    project = store.create_project("p")
    ingested = validate_batch(_events(["a", "b"]))
    store.close()  # a closed connection: the insert fails, and says so to its caller
    with pytest.raises(Exception, match="closed"):
        store.insert(project.id, ingested.rows, ingested.links)
