"""The PostgreSQL store: several collector processes on one database server.

Same semantics as :mod:`.sqlite` (dedupe per project, stitching, keys, projects, timeline
pages), built for more than one writer:

- **One transaction per group of batches.** The batches a process receives while its
  previous write runs are written together by its next one (group commit,
  :mod:`.groupcommit`): one transaction, one WAL flush for the group; each request still
  returns only after it committed, with its own batch's counts. The common case, every id
  new, is one simple-query script, ``BEGIN; COPY event_ids ...; COPY <month's partition>
  ...; COMMIT``, whose rows travel in ``COPY``'s binary format (:func:`.pgarrays.copy_rows`):
  three round trips (each ``COPY`` waits for the server to ask for its data), and the
  server inserts the rows in bulk (one WAL record per heap page rather than per row, no
  ``unnest`` materialised, no per-row executor), which measured about a fifth of the
  database's CPU per event less than one ``INSERT ... SELECT FROM unnest(...)`` statement.
  The claim of the ids in ``event_ids`` goes first: when an id exists already it fails
  the transaction at once, before any event is written (no sequence number drawn), and
  the group is written again by one ``INSERT`` of arrays (``unnest``) with
  ``ON CONFLICT DO NOTHING ... RETURNING``, which says which events were stored. A
  group with identity links inserts them by one more statement of arrays before the
  ``COMMIT`` (``ON CONFLICT DO NOTHING``, which ``COPY`` cannot do). Ids are claimed in
  sorted order (the collector sorts them), so two processes inserting batches that
  overlap wait for each other instead of deadlocking; a deadlock PostgreSQL detects
  anyway (links against ids) is retried.
- **Dedupe across partitions.** ``events`` is partitioned by arrival time (one range
  partition per month of ``received_at``, created on demand and one month ahead), and a
  unique index on a partitioned table must contain the partition key, which would make
  ``(project_id, event_id)`` unique only *within* a month. So the dedupe key lives in its
  own unpartitioned table ``event_ids`` (primary key ``(project_id, event_id)``), written in
  the same statement as the event: an id is stored exactly once whatever month it arrives
  in and whichever process receives it. Partitioning by arrival, not by the event's own
  timestamp, keeps the number of partitions bounded by the calendar (a client sending
  year-1 and year-9999 timestamps cannot create thousands) and lets old months be detached
  or dropped whole.
- **Shared rate limits.** :meth:`PostgresStore.limiter` returns a token bucket kept in the
  ``rate_buckets`` table, updated by one upsert per request on the database's clock, so
  every collector process on the database spends the same buckets.
- **Connections.** A small pool (:class:`_Pool`) of autocommit connections: one for the
  process's writes, the others for key lookups (grouped as writes are, one query for the
  lookups that queued behind the previous one), timeline pages and health checks running
  at the same moment; a connection that fails is discarded, not reused.

Timestamps are stored as the canonical ``YYYY-MM-DDTHH:MM:SS.mmmZ`` text with the ``"C"``
collation, so text order is time order whatever the database's locale, exactly as in
SQLite, and cursors are interchangeable between the stores.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, NamedTuple, TypeVar

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import pq, sql
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "the PostgreSQL store needs psycopg 3: pip install 'fanout-analytics[postgres]'"
    ) from exc

from .groupcommit import GroupCommit
from .ingest import Link, Row
from .keys import (
    KeyInfo,
    Project,
    check_project_name,
    generate_key,
    hash_key,
    parse_scopes,
    scopes_text,
)
from .pgarrays import (
    TEXT_ARRAY_OID,
    TEXT_OID,
    Column,
    bytea_array,
    copy_rows,
    encoded_text_array,
    int8_array,
    int8_fields,
    text_array,
    text_fields,
    timestamptz_field,
)
from .pgarrays import register as register_arrays
from .pgwire import copy_in, query_prepared, rolled_back_on_error
from .ratelimit import Limiter
from .store import WOULD_WAIT, InsertResult, StoreError, WouldWait
from .timeline import Cursor, Page, cut

__all__ = ["SCHEMA_VERSION", "PostgresLimiter", "PostgresStore", "partition_name"]

#: ``fanout_schema.version`` of a database this module made.
SCHEMA_VERSION: Final = 1
# Any constant: serialises schema creation and partition creation between processes.
_DDL_LOCK: Final = 0x66616E6F7574  # "fanout"

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS fanout_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  text NOT NULL
);
CREATE TABLE IF NOT EXISTS server_keys (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project_id  bigint NOT NULL REFERENCES projects (id),
    scopes      text NOT NULL,
    label       text NOT NULL,
    key_hash    text NOT NULL UNIQUE,
    created_at  text NOT NULL,
    revoked_at  text
);
CREATE SEQUENCE IF NOT EXISTS events_seq;
CREATE TABLE IF NOT EXISTS event_ids (
    project_id  bigint NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, event_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq          bigint NOT NULL DEFAULT nextval('events_seq'),
    project_id   bigint NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    kind         text NOT NULL,
    timestamp    text COLLATE "C" NOT NULL,
    person_id    text COLLATE "C",
    anonymous_id text COLLATE "C",
    name         text,
    key_id       bigint NOT NULL,
    received_at  timestamptz NOT NULL,
    body         bytea NOT NULL
) PARTITION BY RANGE (received_at);
CREATE INDEX IF NOT EXISTS events_person ON events (project_id, person_id, timestamp, seq)
    WHERE person_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_anonymous ON events (project_id, anonymous_id, timestamp, seq)
    WHERE anonymous_id IS NOT NULL AND person_id IS NULL;
CREATE TABLE IF NOT EXISTS identity_links (
    project_id   bigint NOT NULL,
    anonymous_id text COLLATE "C" NOT NULL,
    person_id    text COLLATE "C" NOT NULL,
    linked_at    text NOT NULL,
    PRIMARY KEY (project_id, anonymous_id, person_id)
);
CREATE INDEX IF NOT EXISTS identity_links_person ON identity_links (project_id, person_id);
CREATE TABLE IF NOT EXISTS rate_buckets (
    key_id      bigint PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated     double precision NOT NULL,
    allowed     boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    id          integer PRIMARY KEY,
    checked_at  timestamptz NOT NULL
);
"""

# The dedupe statement (a group holding an id stored before; see the module docstring).
# Each column arrives as one binary array built by :mod:`.pgarrays` (psycopg's own list
# dumper loops in Python per element), one element per event, deduplicated in Python
# beforehand (the first of repeated ids wins, as INSERT OR IGNORE does in SQLite). The
# events go straight into their month's partition ({partition}: the store knows it from
# the arrival time), in array (arrival) order, so ``seq`` follows arrival. The claim
# reads its own two arrays, sorted by Python beforehand (the lock order between
# processes).
_EVENTS: Final = """
INSERT INTO {partition} (project_id, event_id, kind, timestamp, person_id, anonymous_id, name,
                         key_id, received_at, body)
SELECT project_id, event_id, kind, timestamp, person_id, anonymous_id, name, key_id,
       %(received)s, body
FROM unnest(%(projects)b::int8[], %(ids)b::text[], %(kinds)b::text[],
            %(timestamps)b::text[], %(persons)b::text[], %(anonymous)b::text[],
            %(names)b::text[], %(keys)b::int8[], %(bodies)b::bytea[]) WITH ORDINALITY
     AS b (project_id, event_id, kind, timestamp, person_id, anonymous_id, name, key_id,
           body, position)"""
_INSERT_LINKS: Final = """
    INSERT INTO identity_links (project_id, anonymous_id, person_id, linked_at)
    SELECT p, a, ps, t
    FROM unnest(%(link_projects)b::int8[], %(link_anonymous)b::text[],
                %(link_persons)b::text[], %(link_times)b::text[]) AS l (p, a, ps, t)
    ORDER BY p, a, ps
    ON CONFLICT DO NOTHING"""
# The links in the dedupe statement; a group written by COPY runs the insert alone.
_LINKS: Final = ", links AS (" + _INSERT_LINKS + "\n)"
_LINKS_ALONE: Final = _INSERT_LINKS.encode()
# The common case (every id new): the claim, then the events, by COPY (see the module
# docstring); without links the script commits too, with links it leaves the transaction
# open for them.
_COPY_CLAIM: Final = "COPY event_ids (project_id, event_id) FROM STDIN (FORMAT binary)"
_COPY_EVENTS: Final = "COPY {partition} ({columns}) FROM STDIN (FORMAT binary)"
_CLAIM: Final = """
INSERT INTO event_ids (project_id, event_id)
SELECT * FROM unnest(%(claim_projects)b::int8[], %(claim_ids)b::text[])"""
# Some id exists: claim row by row, store the events whose id was claimed (in arrival
# order: ``seq`` follows the arrays' positions), return them.
_INSERT_DEDUPE: Final = """WITH claimed AS (""" + _CLAIM + """
    ON CONFLICT DO NOTHING
    RETURNING project_id, event_id
){links}, stored AS ({events}
    WHERE (project_id, event_id) IN (SELECT project_id, event_id FROM claimed)
    ORDER BY position
    RETURNING project_id, event_id
)
SELECT project_id, event_id FROM stored
"""


def _copy_script(partition: str, links: bool, columns: Sequence[str]) -> bytes:
    """The simple-query script writing a group whose ids are all new into ``partition``
    (a name :func:`partition_name` made), its rows' ``columns`` in that order (names of
    ``events``' columns); committing unless the group has links."""
    assert re.fullmatch(r"events_\d{4}_\d{2}", partition), partition
    assert all(re.fullmatch(r"[a-z_]+", c) for c in columns), columns
    events = _COPY_EVENTS.format(partition=f'"{partition}"', columns=", ".join(columns))
    return f"BEGIN; {_COPY_CLAIM}; {events}{'' if links else '; COMMIT'}".encode()


def _dedupe_statement(partition: str, links: bool) -> bytes:
    """The dedupe statement for the events of ``partition`` (a name :func:`partition_name`
    made: letters, digits and ``_``, so quoting it needs no escaping), with the links' CTE
    when there are links, as the bytes psycopg sends."""
    assert re.fullmatch(r"events_\d{4}_\d{2}", partition), partition
    events = _EVENTS.format(partition=f'"{partition}"')
    return _INSERT_DEDUPE.replace("{events}", events).replace(
        "{links}", _LINKS if links else "").encode()


# The person's own events and the linked anonymous ids' events, each read in index order
# from the cursor on, merged by the database (UNION ALL + ORDER BY + LIMIT is a merge of two
# short sorted inputs).
_TIMELINE: Final = """
(SELECT timestamp, seq, body FROM events
 WHERE project_id = %(project)s AND person_id = %(person)s
   AND (timestamp, seq) > (%(ts)s, %(seq)s)
 ORDER BY timestamp, seq LIMIT %(limit)s)
UNION ALL
(SELECT timestamp, seq, body FROM events
 WHERE project_id = %(project)s AND person_id IS NULL
   AND anonymous_id IN (SELECT anonymous_id FROM identity_links
                        WHERE project_id = %(project)s AND person_id = %(person)s)
   AND (timestamp, seq) > (%(ts)s, %(seq)s)
 ORDER BY timestamp, seq LIMIT %(limit)s)
ORDER BY 1, 2 LIMIT %(limit)s
"""

_KEY_COLUMNS: Final = (
    "k.id, k.label, k.created_at, k.revoked_at, k.project_id, p.name, k.scopes"
    " FROM server_keys k JOIN projects p ON p.id = k.project_id"
)
# One query for a group of key lookups, prepared on each connection and run through
# :mod:`.pgwire`: by one hash (most groups are one request's lookup) or by an array of
# them. Two statements, because PostgreSQL plans ``= ANY($1)`` again at every execution
# (its plan for a known array looks cheaper than the generic one), about 130 µs of the
# database's CPU per lookup here, while ``= $1`` settles on its generic plan after five.
_KEY_LOOKUP: Final = (f"SELECT k.key_hash, {_KEY_COLUMNS}"
                      " WHERE k.key_hash = $1 AND k.revoked_at IS NULL").encode()
_KEYS_LOOKUP: Final = _KEY_LOOKUP.replace(b"= $1", b"= ANY($1)")
_START: Final = Cursor("", -1)
_RETRIES: Final = 5
# Key listings kept by their rows at most (keys are few: a full dict starts over).
_LISTINGS: Final = 1024
_SAFE_URL: Final = re.compile(r"//[^@/]*@")
_T = TypeVar("_T")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _month(when: _dt.datetime) -> _dt.datetime:
    return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(month: _dt.datetime) -> _dt.datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


def partition_name(month: _dt.datetime) -> str:
    """The partition of ``events`` holding the events received in ``month``."""
    return f"events_{month.year:04d}_{month.month:02d}"


def _key(row: tuple[int, str, str, str | None, int, str, str]) -> KeyInfo:
    key_id, label, created, revoked, project_id, project, scopes = row
    return KeyInfo(key_id, label, created, revoked, project_id, project, parse_scopes(scopes))


def _key_from_text(row: Sequence[bytes | None]) -> KeyInfo:
    """A row of :data:`_KEY_LOOKUP` in text format (all but ``revoked_at`` NOT NULL)."""
    key_id, label, created, revoked, project_id, project, scopes = (
        None if v is None else v.decode() for v in row)
    assert key_id and label is not None and created and project_id and project and scopes
    return KeyInfo(int(key_id), label, created, revoked, int(project_id), project,
                   parse_scopes(scopes))


class _Insert(NamedTuple):
    """One request's batch, waiting to be written (alone or in a group)."""

    project_id: int
    rows: Sequence[Row]
    links: Sequence[Link]
    key_id: int


class _Batch:
    """The events of a group of batches as ``COPY`` rows (every id new) or as the dedupe
    statement's parameters: repeated ids (within a batch or between batches of the group)
    dropped, the first kept, and each batch's counts worked out from what was stored.

    The columns are cut from the rows by one ``zip(*rows)`` (rows are tuples), and the
    common case, no repeated id, is found by one set of (project, id) pairs: no Python
    loop per event."""

    def __init__(self, jobs: Sequence[_Insert]) -> None:
        self.jobs = jobs
        rows: list[Row] = []
        projects: list[int] = []
        keys: list[int] = []
        for job in jobs:
            rows += job.rows
            projects += [job.project_id] * len(job.rows)
            keys += [job.key_id] * len(job.rows)
        self.counts = [len(job.rows) for job in jobs]
        pairs = list(zip(projects, [row[0] for row in rows], strict=True))
        self.owner: dict[tuple[int, str], int] | None = None
        if len(set(pairs)) != len(pairs):  # repeated ids: keep the first of each
            owner: dict[tuple[int, str], int] = {}
            kept: list[int] = []
            position = 0
            for index, job in enumerate(jobs):
                for _ in job.rows:
                    if pairs[position] not in owner:
                        owner[pairs[position]] = index
                        kept.append(position)
                    else:
                        self.counts[index] -= 1
                    position += 1
            rows = [rows[i] for i in kept]
            projects = [projects[i] for i in kept]
            keys = [keys[i] for i in kept]
            self.owner = owner
        self.rows, self.projects, self.keys, self.pairs = rows, projects, keys, pairs
        self.links = [(job.project_id, *link) for job in jobs for link in job.links]

    def copy(self, received: _dt.datetime) -> tuple[bytes, bytes, tuple[str, ...]]:
        """The rows of the claim (sorted: the lock order between processes) and of the
        events (in arrival order) for the ``COPY`` script, and the events' column order:
        the columns the same in every row of the group (its project, its key, the
        arrival time, often the kind and name) first, framed once for all rows."""
        ids, kinds, timestamps, persons, anonymous, names, bodies = zip(*self.rows,
                                                                      strict=True)
        encoded = list(map(str.encode, ids))
        count = len(encoded)
        projects = int8_fields(self.projects)
        if isinstance(projects, bytes):  # one project: its ids sorted
            claim = copy_rows(count, [projects, sorted(encoded)])
        else:
            pairs = sorted(zip(self.projects, encoded, strict=True))
            claim = copy_rows(count, [int8_fields([p for p, _ in pairs]),
                                      [i for _, i in pairs]])
        columns: dict[str, Column] = {
            "project_id": projects, "event_id": encoded, "kind": text_fields(kinds),
            "timestamp": text_fields(timestamps), "person_id": text_fields(persons),
            "anonymous_id": text_fields(anonymous), "name": text_fields(names),
            "key_id": int8_fields(self.keys), "received_at": timestamptz_field(received),
            "body": bodies,
        }
        order = sorted(columns, key=lambda c: not isinstance(columns[c], bytes))
        return claim, copy_rows(count, [columns[c] for c in order]), tuple(order)

    def link_params(self) -> dict[str, Any]:
        links = self.links
        link_projects, link_anonymous, link_persons, link_times = (
            zip(*links, strict=True) if links else ((),) * 4)
        return {
            "link_projects": int8_array(link_projects),
            "link_anonymous": text_array(link_anonymous),
            "link_persons": text_array(link_persons),
            "link_times": text_array(link_times),
        }

    def params(self, received: _dt.datetime) -> dict[str, Any]:
        ids, kinds, timestamps, persons, anonymous, names, bodies = (
            zip(*self.rows, strict=True) if self.rows else ((),) * len(Row._fields))
        # The claim's arrays: the ids sorted (the lock order between processes) as UTF-8
        # bytes, whose order is the "C" collation's; usually the group's one project.
        encoded = list(map(str.encode, ids))
        id_array = encoded_text_array(encoded)
        project_array = int8_array(self.projects)
        if len(set(self.projects)) <= 1:
            claim = sorted(encoded)
            claim_ids = id_array if claim == encoded else encoded_text_array(claim)
            claim_projects = project_array
        else:
            pairs = sorted(zip(self.projects, encoded, strict=True))
            claim_ids = encoded_text_array([i for _, i in pairs])
            claim_projects = int8_array([p for p, _ in pairs])
        return {
            "claim_projects": claim_projects,
            "claim_ids": claim_ids,
            "received": received,
            "projects": project_array,
            "keys": int8_array(self.keys),
            "ids": id_array,
            "kinds": text_array(kinds),
            "timestamps": text_array(timestamps),
            "persons": text_array(persons),
            "anonymous": text_array(anonymous),
            "names": text_array(names),
            "bodies": bytea_array(bodies),
            **self.link_params(),
        }

    def results(self, stored: list[tuple[int, str]] | None) -> list[InsertResult]:
        """Each batch's (accepted, duplicates); ``stored`` is the (project, id) pairs the
        statement stored, or ``None`` when it stored every kept row."""
        accepted = self.counts
        if stored is not None:
            owner = self.owner
            if owner is None:
                owner = {}
                position = 0
                for index, job in enumerate(self.jobs):
                    for _ in job.rows:
                        owner[self.pairs[position]] = index
                        position += 1
            accepted = [0] * len(self.jobs)
            for pair in stored:
                accepted[owner[pair]] += 1
        return [InsertResult(a, len(job.rows) - a)
                for a, job in zip(accepted, self.jobs, strict=True)]


def redact_url(url: str) -> str:
    """``url`` without its user and password (for messages and reprs)."""
    return _SAFE_URL.sub("//***@", url)


class _Pool:
    """At most ``size`` autocommit connections, created on demand and reused; one that
    raised a connection-level error, or was left inside a transaction by an exception,
    is closed instead of returned.

    Two calls per request go through it (the key lookup, the write), so its common path
    is one plain lock taken twice: ``queue.LifoQueue`` and ``BoundedSemaphore`` build
    on ``threading.Condition`` in Python (with the reused key listings below, a key
    lookup took about 16 µs less of the collector's CPU without them: 99 → 83 µs). A
    caller waits on the condition only when every slot is taken."""

    def __init__(self, url: str, size: int) -> None:
        self._url = url
        self._size = size
        self._idle: list[psycopg.Connection[Any]] = []
        self._out = 0  # connections (or slots being connected) handed out
        self._waiting = 0
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._closed = False

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10,
                               application_name="fanout-collector")
        register_arrays(conn.adapters)
        with self._lock:
            self._all.append(conn)
        return conn

    def _checkout(self) -> psycopg.Connection[Any] | None:
        """A slot, with an idle connection if there is one."""
        with self._lock:
            if self._out >= self._size and not self._closed:
                self._waiting += 1
                try:
                    if not self._freed.wait_for(
                            lambda: self._closed or self._out < self._size, timeout=30):
                        raise StoreError("no database connection free within 30 s")
                finally:
                    self._waiting -= 1
            if self._closed:  # (a caller still waiting for a slot at close() is woken here)
                raise StoreError("the store is closed")
            self._out += 1
            return self._idle.pop() if self._idle else None

    def _checkin(self, conn: psycopg.Connection[Any] | None) -> None:
        """Give the slot back, and ``conn`` with it unless ``None`` (closed, discarded)."""
        with self._lock:
            self._out -= 1
            if conn is not None:
                self._idle.append(conn)
            if self._waiting:
                self._freed.notify()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._checkout()
        kept: psycopg.Connection[Any] | None = None
        try:
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            except BaseException:
                # Not idle: interrupted inside a transaction or an exchange of its own
                # (pgwire's scripts), which the next user cannot continue.
                if (self._closed or conn.closed or conn.broken
                        or conn.pgconn.transaction_status != pq.TransactionStatus.IDLE):
                    self._discard(conn)
                else:
                    kept = conn
                raise
            if self._closed:
                conn.close()
            else:
                kept = conn
        finally:
            self._checkin(kept)

    def _discard(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        """Close every connection; a caller waiting for a slot, and any later one, gets
        :class:`StoreError` at once (not after the 30 s wait for a slot)."""
        with self._lock:
            self._closed = True
            conns, self._all, self._idle = self._all, [], []
            self._freed.notify_all()
        for conn in conns:
            conn.close()


class PostgresStore:
    """Projects, events, identity links, keys and rate buckets in one PostgreSQL database.

    ``pool_size`` bounds the connections this process opens (one per request being
    stored or read at the same moment). ``clock`` gives each batch's arrival time, which
    picks its partition (tests move it across a month's end).
    """

    def __init__(self, url: str, *, pool_size: int = 4,
                 clock: Callable[[], _dt.datetime] | None = None) -> None:
        self.url = url
        self._clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))
        self._pool = _Pool(url, pool_size)
        self._partitions: set[_dt.datetime] = set()
        # The COPY script per (month's partition, with links, column order): composed
        # once (the column orders are the few ways of a group's columns to be constant).
        self._scripts: dict[tuple[str, bool, tuple[str, ...]], bytes] = {}
        self._partition_lock = threading.Lock()
        # One writing statement at a time per process; the batches that arrive meanwhile
        # go in the next one together (one round trip, one commit for all of them).
        self._writes: GroupCommit[_Insert, InsertResult] = GroupCommit(
            threading.Lock(), self._commit)
        # Each request's key lookup, grouped the same way: requests tend to arrive
        # together (the answers of one group commit go out at once), and one query with
        # all their keys is one round trip instead of one each (about 80 µs of the
        # database's CPU and 150 of the collector's per round trip on this machine).
        self._key_reads: GroupCommit[str, KeyInfo | None] = GroupCommit(
            threading.Lock(), self._read_keys)
        # The pooled connections that have prepared each key lookup statement.
        # The listings made from the lookup's rows, by the row's exact values: a key's
        # row is the same request after request, and decoding it into a KeyInfo was about
        # 15% of a lookup's CPU under cProfile. A row that changes (revoked, relabelled)
        # is a new entry.
        self._listings: dict[tuple[bytes | None, ...], KeyInfo] = {}
        self._prepared: dict[bytes, weakref.WeakSet[psycopg.Connection[Any]]] = {
            b"fanout_key": weakref.WeakSet(), b"fanout_keys": weakref.WeakSet()}
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                row = conn.execute(
                    "SELECT 1 FROM pg_tables WHERE schemaname = current_schema()"
                    " AND tablename = 'fanout_schema'"
                ).fetchone()
                if row is not None:
                    version = conn.execute("SELECT max(version) FROM fanout_schema").fetchone()
                    if version and version[0] and version[0] > SCHEMA_VERSION:
                        raise StoreError(
                            f"the database's schema version {version[0]} is newer than this "
                            f"fanout ({SCHEMA_VERSION})"
                        )
                conn.execute(_TABLES)
                if conn.execute("SELECT 1 FROM fanout_schema").fetchone() is None:
                    conn.execute("INSERT INTO fanout_schema VALUES (%s)", (SCHEMA_VERSION,))
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(
                f"cannot use the PostgreSQL database {redact_url(url)}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            ) from None
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresStore {redact_url(self.url)}>"

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``work`` on a pooled connection, retried when PostgreSQL chose it as the victim
        of a deadlock or when the connection broke before anything was committed."""
        for attempt in range(_RETRIES):
            try:
                with self._pool.connection() as conn:
                    return work(conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    # -- events ------------------------------------------------------------------------

    def _ensure_partition(self, received: _dt.datetime) -> None:
        """The partition for ``received``'s month and the next exist (created once per
        process per month; creation is serialised between processes by an advisory lock)."""
        month = _month(received)
        if month in self._partitions:
            return
        with self._partition_lock:
            if month in self._partitions:
                return
            ahead = _next_month(month)
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for start in (month, ahead):
                    conn.execute(sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF events"
                        " FOR VALUES FROM ({}) TO ({})"
                    ).format(sql.Identifier(partition_name(start)), sql.Literal(start),
                             sql.Literal(_next_month(start))))
            self._partitions.add(month)

    def insert(
        self, project_id: int, rows: Sequence[Row], links: Sequence[Link], *, key_id: int = 0
    ) -> InsertResult:
        if not rows and not links:
            return InsertResult(0, 0)
        return self._writes.submit(_Insert(project_id, rows, links, key_id))

    def _commit(self, jobs: Sequence[_Insert]) -> list[InsertResult]:
        """One transaction (one WAL flush) for every batch in ``jobs``; each batch's own
        counts, as if they had been inserted one after the other."""
        received = self._clock()
        self._ensure_partition(received)
        batch = _Batch(jobs)
        partition = partition_name(_month(received))
        links = bool(batch.links)
        chunks: tuple[bytes, bytes] | None = None
        script = b""
        if batch.rows:
            claim, events, columns = batch.copy(received)
            chunks = claim, events
            script = self._scripts.get((partition, links, columns), b"")
            if not script:
                script = self._scripts[partition, links, columns] = _copy_script(
                    partition, links, columns)

        def work(conn: psycopg.Connection[Any]) -> list[InsertResult]:
            try:
                if chunks is None:  # links only
                    conn.execute(_LINKS_ALONE, batch.link_params())
                    return batch.results(None)
                copy_in(conn, script, chunks)
                if links:
                    with rolled_back_on_error(conn):
                        conn.execute(_LINKS_ALONE, batch.link_params())
                        conn.execute("COMMIT")
            except pg_errors.UniqueViolation:  # an id stored before: dedupe row by row
                dedupe = _dedupe_statement(partition, links)
                stored = conn.execute(dedupe, batch.params(received)).fetchall()
                return batch.results(stored)
            return batch.results(None)

        return self._run(work)

    def timeline(
        self, project_id: int, person_id: str, *, limit: int, max_bytes: int,
        after: Cursor | None = None,
    ) -> Page:
        if "\x00" in person_id:  # text cannot hold NUL; validation refuses such ids
            return Page([], None)
        ts, seq = after or _START
        params = {"project": project_id, "person": person_id, "ts": ts, "seq": seq,
                  "limit": limit + 1}

        def work(conn: psycopg.Connection[Any]) -> Page:
            with conn.cursor(binary=True) as cur:
                cur.execute(_TIMELINE, params)
                return cut(((bytes(body), ts, seq) for ts, seq, body in cur), limit, max_bytes)

        return self._run(work)

    def linked_ids(self, project_id: int, person_id: str) -> list[str]:
        if "\x00" in person_id:
            return []

        def work(conn: psycopg.Connection[Any]) -> list[str]:
            rows = conn.execute(
                "SELECT anonymous_id FROM identity_links WHERE project_id = %s"
                " AND person_id = %s ORDER BY linked_at, anonymous_id",
                (project_id, person_id),
            ).fetchall()
            return [a for (a,) in rows]

        return self._run(work)

    def count_events(self, project_id: int | None = None) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "SELECT count(*) FROM events WHERE %(p)s::bigint IS NULL OR project_id = %(p)s",
                {"p": project_id},
            ).fetchone()
            assert row is not None
            return int(row[0])

        return self._run(work)

    def event_ids(self, project_id: int | None = None) -> list[str]:
        def work(conn: psycopg.Connection[Any]) -> list[str]:
            rows = conn.execute(
                "SELECT event_id FROM events WHERE %(p)s::bigint IS NULL OR project_id = %(p)s"
                " ORDER BY seq",
                {"p": project_id},
            ).fetchall()
            return [e for (e,) in rows]

        return self._run(work)

    def healthy(self) -> bool:
        """Commit a one-row write, waiting at most 2 s for locks and the commit."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET LOCAL statement_timeout = 2000")
                conn.execute("SET LOCAL lock_timeout = 2000")
                conn.execute(
                    "INSERT INTO health (id, checked_at) VALUES (1, now())"
                    " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
                )
        except (psycopg.Error, StoreError):
            return False
        return True

    # -- rate limits ---------------------------------------------------------------------

    def limiter(self, rate: float | None, burst: float | None = None) -> Limiter:
        """A rate limiter whose buckets every process on this database shares."""
        return PostgresLimiter(self, rate, burst)

    # -- projects and keys -------------------------------------------------------------

    def create_project(self, name: str) -> Project:
        check_project_name(name)
        created = _now()

        def work(conn: psycopg.Connection[Any]) -> Project:
            row = conn.execute(
                "INSERT INTO projects (name, created_at) VALUES (%s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                (name, created),
            ).fetchone()
            if row is None:
                raise ValueError(f"project {name!r} already exists")
            return Project(int(row[0]), name, created)

        return self._run(work)

    def list_projects(self) -> list[Project]:
        def work(conn: psycopg.Connection[Any]) -> list[Project]:
            rows = conn.execute("SELECT id, name, created_at FROM projects ORDER BY id")
            return [Project(*row) for row in rows]

        return self._run(work)

    def project(self, name: str) -> Project | None:
        def work(conn: psycopg.Connection[Any]) -> Project | None:
            row = conn.execute(
                "SELECT id, name, created_at FROM projects WHERE name = %s", (name,)
            ).fetchone()
            return Project(*row) if row else None

        return self._run(work)

    def create_key(self, project: str, scopes: tuple[str, ...], label: str) -> tuple[KeyInfo, str]:
        found = self.project(project)
        if found is None:
            raise ValueError(f"no project {project!r}; create it with `projects create`")
        key = generate_key()
        created = _now()
        stored_scopes = scopes_text(scopes)

        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "INSERT INTO server_keys (project_id, scopes, label, key_hash, created_at)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (found.id, stored_scopes, label, hash_key(key), created),
            ).fetchone()
            assert row is not None
            return int(row[0])

        key_id = self._run(work)
        info = KeyInfo(key_id, label, created, None, found.id, found.name,
                       parse_scopes(stored_scopes))
        return info, key

    def list_keys(self, project: str | None = None) -> list[KeyInfo]:
        def work(conn: psycopg.Connection[Any]) -> list[KeyInfo]:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} WHERE %(p)s::text IS NULL OR p.name = %(p)s"
                " ORDER BY k.id",
                {"p": project},
            )
            return [_key(row) for row in rows]

        return self._run(work)

    def revoke_key(self, key_id: int) -> bool:
        def work(conn: psycopg.Connection[Any]) -> bool:
            cur = conn.execute(
                "UPDATE server_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (_now(), key_id),
            )
            return cur.rowcount == 1

        return self._run(work)

    def key_for(self, key: str) -> KeyInfo | None:
        return self._key_reads.submit(hash_key(key))

    def key_for_nowait(self, key: str) -> KeyInfo | None | WouldWait:
        """Never: a lookup is a round trip to the server (the app hands the batch to a
        worker thread before decoding it)."""
        return WOULD_WAIT

    def insert_nowait(
        self, project_id: int, rows: Sequence[Row], links: Sequence[Link], *, key_id: int = 0
    ) -> InsertResult | None:
        """Never: a commit is a round trip to the server."""
        return None

    def _read_keys(self, hashes: Sequence[str]) -> list[KeyInfo | None]:
        """The active keys of ``hashes`` (each request's lookup, grouped as writes are: the
        lookups that arrive while one runs share the next), read by one query. Each
        lookup still starts after its request arrived, so a revocation committed before
        that is seen, as with one query per request."""
        distinct = sorted(set(hashes))
        if len(distinct) == 1:
            lookup = (b"fanout_key", _KEY_LOOKUP, [distinct[0].encode()], [TEXT_OID])
        else:
            lookup = (b"fanout_keys", _KEYS_LOOKUP, [text_array(distinct)], [TEXT_ARRAY_OID])
        prepared = self._prepared[lookup[0]]

        def work(conn: psycopg.Connection[Any]) -> list[KeyInfo | None]:
            rows = query_prepared(conn, prepared, *lookup)
            listings = self._listings
            found: dict[str, KeyInfo] = {}
            for row in rows:
                info = listings.get(row)
                if info is None:
                    if len(listings) >= _LISTINGS:
                        listings.clear()
                    info = listings[row] = _key_from_text(row[1:])
                key_hash = row[0]
                assert key_hash is not None
                found[key_hash.decode()] = info
            return [found.get(h) for h in hashes]

        return self._run(work)

    def close(self) -> None:
        self._pool.close()


# The token bucket of ratelimit.RateLimiter, as one upsert on the database's clock. A new
# bucket starts full; ``allowed`` records whether this request could start.
_ACQUIRE: Final = """
INSERT INTO rate_buckets AS b (key_id, tokens, updated, allowed)
VALUES (%(key)s, %(burst)s - %(cost)s, extract(epoch FROM clock_timestamp()), true)
ON CONFLICT (key_id) DO UPDATE SET
    tokens = CASE
        WHEN least(%(burst)s, b.tokens + (excluded.updated - b.updated) * %(rate)s) >= %(need)s
        THEN least(%(burst)s, b.tokens + (excluded.updated - b.updated) * %(rate)s) - %(cost)s
        ELSE least(%(burst)s, b.tokens + (excluded.updated - b.updated) * %(rate)s) END,
    allowed = least(%(burst)s, b.tokens + (excluded.updated - b.updated) * %(rate)s)
              >= %(need)s,
    updated = excluded.updated
RETURNING allowed, tokens
"""
_CHECK: Final = """
SELECT least(%(burst)s, tokens + (extract(epoch FROM clock_timestamp()) - updated) * %(rate)s)
FROM rate_buckets WHERE key_id = %(key)s
"""


class PostgresLimiter:
    """Per-key token buckets counted in events (the rules of
    :class:`~fanout.collector.ratelimit.RateLimiter`), kept in the database so that every
    collector process spends the same buckets. One statement per call."""

    def __init__(self, store: PostgresStore, rate: float | None,
                 burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else (rate or 0.0)
        self._store = store

    def check(self, key_id: int) -> float | None:
        if self.rate is None:
            return None
        rate = self.rate
        params = {"key": key_id, "burst": self.burst, "rate": rate}

        def work(conn: psycopg.Connection[Any]) -> float | None:
            row = conn.execute(_CHECK, params).fetchone()
            tokens = self.burst if row is None else float(row[0])
            return None if tokens >= 1.0 else (1.0 - tokens) / rate

        return self._store._run(work)

    def acquire(self, key_id: int, events: int) -> float | None:
        if self.rate is None:
            return None
        rate = self.rate
        cost = float(max(events, 1))
        need = min(cost, self.burst)
        params = {"key": key_id, "burst": self.burst, "rate": rate, "cost": cost,
                  "need": need}

        def work(conn: psycopg.Connection[Any]) -> float | None:
            row = conn.execute(_ACQUIRE, params).fetchone()
            assert row is not None
            allowed, tokens = row
            return None if allowed else (need - float(tokens)) / rate

        return self._store._run(work)

    def charge(self, key_id: int, events: int) -> None:
        if self.rate is None:
            return
        cost = float(max(events, 1))
        # need = -inf: always allowed, the bucket goes into debt.
        params = {"key": key_id, "burst": self.burst, "rate": self.rate, "cost": cost,
                  "need": -1e300}
        self._store._run(lambda conn: conn.execute(_ACQUIRE, params))
