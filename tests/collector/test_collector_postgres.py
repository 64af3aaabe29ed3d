"""What only the PostgreSQL store has: monthly partitions made on demand, and the dedupe
key kept across them (the shared suite covers everything both stores do)."""

from __future__ import annotations

import datetime as dt

import pytest

from fanout.collector.ingest import validate_batch

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")

pytestmark = pytest.mark.parametrize("store_kind", ["postgresql"])


def _rows(*ids: str):
    batch = [{"event_id": i, "name": "paid", "person_id": "ada",
              "timestamp": "2024-05-01T10:00:00.000Z"} for i in ids]
    return validate_batch(batch).rows


class _Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_an_event_id_is_stored_once_across_monthly_partitions(make_store, store_kind):
    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    clock = _Clock(dt.datetime(2024, 1, 31, 23, 59, 59, tzinfo=dt.timezone.utc))
    store = PostgresStore(url, clock=clock)
    try:
        project = store.create_project("p")
        assert store.insert(project.id, _rows("evt_1"), []) == (1, 0)
        clock.now = dt.datetime(2024, 2, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
        # The redelivery arrives a month later, in the next partition: still a duplicate.
        assert store.insert(project.id, _rows("evt_1", "evt_2"), []) == (1, 1)
        clock.now = dt.datetime(2024, 4, 15, tzinfo=dt.timezone.utc)  # a month skipped
        assert store.insert(project.id, _rows("evt_2", "evt_3", "evt_3"), []) == (1, 2)
        assert store.event_ids() == ["evt_1", "evt_2", "evt_3"]
        page = store.timeline(project.id, "ada", limit=10, max_bytes=1 << 20)
        assert len(page.events) == 3 and page.next_cursor is None
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        placed = conn.execute(
            "SELECT event_id, tableoid::regclass::text FROM events ORDER BY seq").fetchall()
        partitions = [name for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass ORDER BY 1")]
        (claimed,) = conn.execute("SELECT count(*) FROM event_ids").fetchone()
    assert placed == [("evt_1", "events_2024_01"), ("evt_2", "events_2024_02"),
                      ("evt_3", "events_2024_04")]
    # Each month used and the one after it, made ahead so a month's end never waits.
    assert partitions == ["events_2024_01", "events_2024_02", "events_2024_03",
                          "events_2024_04", "events_2024_05"]
    assert claimed == 3


def test_two_stores_create_the_same_partition_at_once_without_error(make_store, store_kind):
    """Two processes starting in the same month both create its partition; the advisory
    lock makes one wait for the other instead of failing on a duplicate name."""
    import threading

    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    when = dt.datetime(2031, 7, 1, tzinfo=dt.timezone.utc)
    stores = [PostgresStore(url, clock=_Clock(when)) for _ in range(4)]
    project = stores[0].create_project("p")
    results: list[object] = []
    go = threading.Barrier(len(stores))

    def insert(store, n):
        go.wait()
        try:
            results.append(store.insert(project.id, _rows(f"a{n}", "shared"), []))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=insert, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not [r for r in results if isinstance(r, Exception)], results
        assert sum(r.accepted for r in results) == 5  # a0..a3 and "shared" once
        assert sum(r.duplicates for r in results) == 3
        assert stores[0].count_events() == 5
    finally:
        for s in stores:
            s.close()
