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


def _job(project_id: int, *ids: str, person: str = "ada", key_id: int = 0):
    from fanout.collector.postgres import _Insert

    ingested = validate_batch(
        [{"event_id": i, "kind": "identify", "person_id": person, "anonymous_id": f"anon_{i}",
          "timestamp": "2024-05-01T10:00:00.000Z"} for i in ids])
    return _Insert(project_id, ingested.rows, ingested.links, key_id)


def test_one_statement_for_a_group_of_batches_counts_each_batch_as_if_alone(
        make_store, store_kind):
    """Batches written together (group commit) get the counts they would get one after
    the other: the first of a repeated id wins, within a batch, between batches of the
    group, and against ids stored before (then the statement falls back to row-by-row
    dedupe); projects never share ids, and each event keeps its own batch's key."""
    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    store = PostgresStore(url)
    try:
        p1, p2 = store.create_project("p1").id, store.create_project("p2").id
        # Nothing stored yet: the plain claim stores every first occurrence.
        assert store._commit([_job(p1, "a", "b", "a", key_id=1), _job(p1, "b", "c", key_id=2),
                              _job(p2, "a", person="bob", key_id=3)]) == [(2, 1), (1, 1), (1, 0)]
        # "a" of p1 and "a" of p2 exist now: the plain claim fails, dedupe row by row.
        assert store._commit([_job(p1, "a", "d", key_id=4), _job(p2, "a", "e", "e", key_id=5),
                              _job(p2, "f", key_id=6)]) == [(1, 1), (1, 2), (1, 0)]
        assert (store.count_events(p1), store.count_events(p2)) == (4, 3)
        assert store.event_ids(p1) == ["a", "b", "c", "d"]
        assert store.event_ids(p2) == ["a", "e", "f"]
        # Links go to their own batch's project, once each (duplicate events' too, as in
        # SQLite: a link is not an event).
        assert store.linked_ids(p1, "ada") == ["anon_a", "anon_b", "anon_c", "anon_d"]
        assert store.linked_ids(p2, "bob") == ["anon_a"]
        assert store.linked_ids(p2, "ada") == ["anon_a", "anon_e", "anon_f"]
        # Nothing is left over from the failed plain claim.
        assert store._commit([_job(p1, "a", "b", "c", "d")]) == [(0, 4)]
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        keys = conn.execute("SELECT project_id, event_id, key_id FROM events ORDER BY seq")
        assert list(keys) == [(p1, "a", 1), (p1, "b", 1), (p1, "c", 2), (p2, "a", 3),
                              (p1, "d", 4), (p2, "e", 5), (p2, "f", 6)]
        (claimed,) = conn.execute("SELECT count(*) FROM event_ids").fetchone()
        # The failed plain claims ran before any event was written: no sequence number
        # was drawn for an event that was not kept (the claim fails first, at no cost).
        (last_seq,) = conn.execute("SELECT last_value FROM events_seq").fetchone()
    assert claimed == 7
    assert last_seq == 7


def test_events_keep_arrival_order_whatever_the_claim_order(make_store, store_kind):
    """The claim takes ids in sorted order (the lock order between processes) but the
    events are numbered in arrival order, in the plain path and in the dedupe path, and
    with two projects in one group."""
    from fanout.collector.postgres import PostgresStore

    store = PostgresStore(make_store.new_db())
    try:
        p1, p2 = store.create_project("p1").id, store.create_project("p2").id
        assert store._commit([_job(p1, "z", "y", "m"), _job(p2, "y", "b")]) == [(3, 0), (2, 0)]
        # "y" exists in p1: the dedupe path, ids again out of sorted order.
        assert store._commit([_job(p1, "q", "y", "c"), _job(p2, "x", "a")]) == [(2, 1), (2, 0)]
        assert store.event_ids(p1) == ["z", "y", "m", "q", "c"]
        assert store.event_ids(p2) == ["y", "b", "x", "a"]
        assert store.event_ids() == ["z", "y", "m", "y", "b", "q", "c", "x", "a"]
    finally:
        store.close()


def test_key_lookups_grouped_in_one_query_each_get_their_own_answer(make_store, store_kind):
    """Concurrent lookups share a query (as writes share a statement) yet each gets its
    own key, ``None`` for an unknown or revoked one, and a revocation committed by another
    process is seen by the next lookup."""
    import threading

    from fanout.collector.keys import hash_key
    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    first, second = PostgresStore(url), PostgresStore(url)
    try:
        first.create_project("p1")
        second.create_project("p2")
        keys = [first.create_key(p, ("ingest",), f"k{i}") for i, p in
                enumerate(["p1", "p2", "p1", "p2"])]
        revoked = first.create_key("p1", ("read",), "gone")
        assert second.revoke_key(revoked[0].id)
        asked = [key for _, key in keys] + [revoked[1], "sk_unknown"]
        expected = [(info.id, info.project) for info, _ in keys] + [None, None]
        answers: list[list[tuple[int, str] | None]] = []
        lock = threading.Lock()

        def look() -> None:
            got = []
            for _ in range(20):
                for key in asked:
                    info = first.key_for(key)
                    got.append(None if info is None else (info.id, info.project))
            with lock:
                answers.append(got)

        threads = [threading.Thread(target=look) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [expected * 20] * 8
        assert second.revoke_key(keys[0][0].id)
        assert first.key_for(keys[0][1]) is None
        assert first.key_for(keys[1][1]) is not None
        # The lookup is a statement prepared on each connection: one that lost it (any
        # DEALLOCATE ALL) prepares it again.
        with first._pool.connection() as conn:
            conn.execute("DEALLOCATE ALL")
        assert first.key_for(keys[1][1]) == keys[1][0]
        assert first.key_for(revoked[1]) is None
        # A group of several lookups is one query by an array of hashes (one hash, the
        # common case, has a statement of its own): repeated, unknown and revoked keys.
        hashes = [hash_key(k) for k in (keys[1][1], revoked[1], keys[2][1], keys[1][1], "sk_x")]
        assert first._read_keys(hashes) == [keys[1][0], None, keys[2][0], keys[1][0], None]
        assert first._read_keys([hash_key(keys[3][1])]) == [keys[3][0]]
    finally:
        first.close()
        second.close()


def test_arrays_built_for_the_batch_statement_arrive_as_sent(make_store, store_kind):
    """The store's own binary arrays (not psycopg's dumper): empty, all-NULL, mixed and
    non-ASCII text, one value repeated, elements on both sides of the looked-up length
    words (4 KiB), bytes with NUL, 64-bit integers, read back by the server."""
    from fanout.collector.pgarrays import (
        bytea_array,
        encoded_text_array,
        int8_array,
        register,
        text_array,
    )

    cases = [
        (["a", "ü€😀", ""], [b"x\x00y", b""], [1, -2, 2**62]),
        ([None, "x", None], [], [-(2**63)]),
        ([], [b"z"], []),
        ((None, None), (b"a" * 70_000,), (0, 7)),
        (["track"] * 3, [b"b" * 4095, b"c" * 4096, b""], [5, 5]),
        (["é" * 5000, "x"], [b"d"] * 2, []),
        (["same", None, "same"], [], []),
    ]
    with psycopg.connect(make_store.new_db(), autocommit=True) as conn:
        register(conn.adapters)
        for texts, blobs, ints in cases:
            encoded = [t.encode() for t in texts if t is not None]
            got = conn.execute(
                "SELECT %b::text[], %b::bytea[], %b::int8[], cardinality(%b::text[]),"
                " %b::text[]",
                (text_array(texts), bytea_array(blobs), int8_array(ints), text_array(texts),
                 encoded_text_array(encoded)),
            ).fetchone()
            assert got is not None
            assert list(got[0]) == list(texts)
            assert [bytes(b) for b in got[1]] == list(blobs)
            assert list(got[2]) == list(ints)
            assert got[3] == len(texts)
            assert list(got[4]) == [t for t in texts if t is not None]


def test_copy_rows_built_for_the_batch_write_arrive_as_sent(make_store, store_kind):
    """The store's binary COPY rows: constant columns (framed once, before and between
    per-row ones), NULLs in a per-row column and a column NULL throughout, non-ASCII and
    empty text, values on both sides of the looked-up length words (4 KiB), bytes with
    NUL, 64-bit integers, and timestamptz, read back by the server."""
    from fanout.collector.pgarrays import (
        copy_rows,
        int8_field,
        int8_fields,
        text_fields,
        timestamptz_field,
    )

    when = dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=dt.timezone.utc)
    texts = ["a", "ü€😀", "", None, "é" * 5000]
    blobs = [b"x\x00y", b"", b"b" * 4095, b"c" * 4096, b"d" * 70_000]
    ints = [1, -2, 2**62, -(2**63), 0]
    rows = copy_rows(5, [int8_field(7), text_fields(["same"] * 5), text_fields(texts),
                         timestamptz_field(when), list(blobs), int8_fields(ints),
                         text_fields([None] * 5), int8_fields([3] * 5)])
    with psycopg.connect(make_store.new_db(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n serial, p int8, k text, t text, w timestamptz,"
                     " b bytea, i int8, z text, c int8)")
        with conn.cursor() as cur, cur.copy(
                "COPY t (p, k, t, w, b, i, z, c) FROM STDIN (FORMAT binary)") as copy:
            copy.write(rows)
        got = conn.execute("SELECT p, k, t, w, b, i, z, c FROM t ORDER BY n").fetchall()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (5,)
        # One row: each per-row column's one length word (not looked up as a batch).
        with conn.cursor() as cur, cur.copy("COPY t (b, i) FROM STDIN (FORMAT binary)") as copy:
            copy.write(copy_rows(1, [[b"solo"], int8_fields([9])]))
        assert conn.execute("SELECT b, i FROM t WHERE n > 5").fetchall() == [(b"solo", 9)]
    assert [tuple(row) for row in got] == [
        (7, "same", text, when, blob, i, None, 3)
        for text, blob, i in zip(texts, blobs, ints, strict=True)]
    assert int8_fields([4, 4]) == int8_field(4)  # one value: framed once


def test_a_copy_script_that_fails_raises_its_error_class_and_leaves_the_connection_idle(
        make_store, store_kind):
    """The COPY script's error is psycopg's class for its SQLSTATE (the store tells a
    duplicate id from anything else by it), the transaction it opened is rolled back
    (nothing of it stays, the pooled connection is idle) and the connection writes the
    next script."""
    from fanout.collector.pgarrays import copy_rows, int8_fields
    from fanout.collector.pgwire import copy_in as _copy_in

    script = (b"BEGIN; COPY t (i) FROM STDIN (FORMAT binary);"
              b" COPY u (i) FROM STDIN (FORMAT binary); COMMIT")
    with psycopg.connect(make_store.new_db(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (i int8 PRIMARY KEY); CREATE TABLE u (i int8 CHECK (i > 0))")
        conn.execute("INSERT INTO t VALUES (2)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            _copy_in(conn, script, [copy_rows(2, [int8_fields([1, 2])]),
                                    copy_rows(1, [int8_fields([1])])])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(psycopg.errors.CheckViolation):  # the second COPY fails
            _copy_in(conn, script, [copy_rows(1, [int8_fields([3])]),
                                    copy_rows(2, [int8_fields([5, -1])])])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM u").fetchone() == (0,)
        _copy_in(conn, script, [copy_rows(2, [int8_fields([1, 4])]),
                                copy_rows(3, [int8_fields([1, 2, 3])])])
        assert [i for (i,) in conn.execute("SELECT i FROM t ORDER BY i")] == [1, 2, 4]
        assert [i for (i,) in conn.execute("SELECT i FROM u ORDER BY i")] == [1, 2, 3]


def test_two_stores_racing_on_the_same_ids_count_each_exactly_once(make_store, store_kind):
    """Two stores (two collector processes' worth) with four threads each write
    overlapping batches at once: groups form within each store, plain claims collide
    with the other store's uncommitted ones and fall back to row-by-row dedupe; every id
    is stored once and every other copy is counted a duplicate."""
    import threading

    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    stores = [PostgresStore(url) for _ in range(2)]
    project = stores[0].create_project("p").id
    ids = [f"evt_{i}" for i in range(300)]
    results: list[object] = []
    go = threading.Barrier(8)

    def write(store: PostgresStore, thread: int) -> None:
        go.wait()
        for n in range(15):
            start = (thread * 37 + n * 53) % len(ids)
            batch = (ids + ids)[start:start + 40]
            try:
                results.append(store.insert(project, _rows(*batch), []))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                results.append(exc)

    threads = [threading.Thread(target=write, args=(stores[t % 2], t)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not [r for r in results if isinstance(r, Exception)], results[:3]
        sent = 8 * 15 * 40
        written = {i for t in range(8) for n in range(15)
                   for i in (ids + ids)[(t * 37 + n * 53) % len(ids):][:40]}
        assert sum(r.accepted for r in results) == len(written) == stores[1].count_events()
        assert sum(r.duplicates for r in results) == sent - len(written)
        assert sorted(stores[0].event_ids()) == sorted(written)
    finally:
        for s in stores:
            s.close()


def test_the_pool_hands_out_at_most_its_size_and_a_caller_waits_for_a_free_one(
        make_store, store_kind):
    """Connections are reused (never more backends than the pool's size), a caller finding
    every slot taken waits until one is given back, and a connection an exception left
    inside a transaction is closed, not handed to the next caller."""
    import threading

    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    store = PostgresStore(url, pool_size=2)
    try:
        project = store.create_project("p")
        pool = store._pool
        held = threading.Event()
        release = threading.Event()
        pids: list[int] = []

        def hold() -> None:
            with pool.connection() as conn:
                pids.append(conn.pgconn.backend_pid)
                held.set()
                release.wait(10)

        holders = [threading.Thread(target=hold) for _ in range(2)]
        for t in holders:
            held.clear()
            t.start()
            assert held.wait(10)
        # Both slots are taken: a third caller waits until a holder gives one back.
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(store.count_events()))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and got == []
        release.set()
        waiter.join(10)
        for t in holders:
            t.join(10)
        assert got == [0]
        assert len(set(pids)) == 2
        with pool.connection() as conn:
            assert conn.pgconn.backend_pid in pids  # reused, not a third backend
        # Left inside a transaction by an exception: discarded.
        with pytest.raises(RuntimeError), pool.connection() as conn:
            conn.execute("BEGIN")
            broken_pid = conn.pgconn.backend_pid
            raise RuntimeError("interrupted")
        for _ in range(3):
            with pool.connection() as conn:
                assert conn.pgconn.backend_pid != broken_pid
                assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert store.insert(project.id, _rows("e1", "e2", "e1"), []) == (2, 1)
        assert store.count_events() == 2
    finally:
        store.close()


def test_closing_the_store_wakes_a_caller_waiting_for_a_connection(make_store, store_kind):
    """A caller waiting for a slot when the store closes gets StoreError then, instead of
    waiting out the pool's 30 s; a call after close() gets it at once."""
    import threading

    from fanout.collector.postgres import PostgresStore
    from fanout.collector.store import StoreError

    store = PostgresStore(make_store.new_db(), pool_size=1)
    pool = store._pool
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pool.connection():
            held.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        outcome: list[BaseException | int] = []

        def wait_for_slot() -> None:
            try:
                outcome.append(store.count_events())
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
                outcome.append(exc)

        waiter = threading.Thread(target=wait_for_slot)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and outcome == []  # every slot taken: it waits
        store.close()
        waiter.join(10)  # well under the pool's 30 s wait
        assert not waiter.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], StoreError)
        assert "closed" in str(outcome[0])
        with pytest.raises(StoreError, match="closed"):
            store.count_events()
    finally:
        release.set()
        holder.join(10)
        store.close()


def test_a_key_listing_follows_its_row_after_a_change(make_store, store_kind):
    """Listings are reused by their row's exact values, so a row changed in the database
    (relabelled, rescoped, revoked) is read anew at the next lookup."""
    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    store = PostgresStore(url)
    try:
        store.create_project("p")
        info, key = store.create_key("p", ("ingest",), "first")
        assert store.key_for(key) == info
        assert store.key_for(key) == info
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE server_keys SET label = 'second', scopes = 'ingest,read'"
                         " WHERE id = %s", (info.id,))
        changed = store.key_for(key)
        assert changed is not None
        assert (changed.label, changed.scopes) == ("second", ("ingest", "read"))
        assert store.revoke_key(info.id)
        assert store.key_for(key) is None
    finally:
        store.close()


def test_a_key_lookup_on_a_connection_the_server_closed_fails_once_then_reconnects(
        make_store, store_kind):
    """The lookup is one blocking exchange through libpq: a connection whose backend was
    terminated raises a psycopg error (never a wrong answer), is dropped from the pool,
    and the next lookup runs on a fresh connection."""
    from fanout.collector.postgres import PostgresStore

    url = make_store.new_db()
    store = PostgresStore(url, pool_size=1)
    try:
        store.create_project("p")
        info, key = store.create_key("p", ("ingest",), "k")
        assert store.key_for(key) == info
        with store._pool.connection() as conn:
            victim = conn.pgconn.backend_pid
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (victim,))  # waits
        with pytest.raises(psycopg.OperationalError):
            store.key_for(key)
        assert store.key_for(key) == info
        with store._pool.connection() as conn:
            assert conn.pgconn.backend_pid != victim
    finally:
        store.close()
