"""The few exchanges with PostgreSQL that the PostgreSQL store drives through libpq itself
(psycopg's public ``pq`` wrapper), for the two calls made per request.

- :func:`copy_in`: a simple-query script with several ``COPY ... FROM STDIN`` statements
  (``BEGIN; COPY ...; COPY ...; COMMIT``), their data sent as the server asks for it:
  three round trips, where psycopg's ``Cursor.copy()`` takes one ``COPY`` per query, each
  a round trip of its own plus one for ``BEGIN`` and one for ``COMMIT``.
- :func:`query_prepared`: one prepared statement with binary parameters and text
  results. ``Connection.execute`` of the store's key lookup cost about 120 µs of the
  collector's CPU per call on this machine, the same exchange through ``pq`` about 40.

The connection stays psycopg's (it is pooled and used through ``execute`` for the rest).
The ``COPY`` script's waits are ``poll`` calls, which let the other threads run (psycopg
holds the GIL in ``get_result``); the prepared query is one ``exec_prepared``, during
which psycopg releases the GIL.
Errors are raised as psycopg raises them: the class of the result's SQLSTATE.
"""

from __future__ import annotations

import select
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

__all__ = ["copy_in", "query_prepared", "rolled_back_on_error"]

Row = tuple[bytes | None, ...]
# SQLSTATE invalid_sql_statement_name: no prepared statement of that name.
_NO_STATEMENT = b"26000"


def _wait(pgconn: pq.abc.PGconn, events: int) -> int:
    poller = select.poll()  # not select(): descriptors above 1024 (the server raises its limit)
    poller.register(pgconn.socket, events)
    got = poller.poll()
    return got[0][1] if got else 0


def _flush(pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():  # 1: more to send
        if _wait(pgconn, select.POLLIN | select.POLLOUT) & select.POLLIN:
            pgconn.consume_input()


def _results(pgconn: pq.abc.PGconn) -> Iterator[pq.abc.PGresult]:
    """Each result of the query sent, as soon as it is complete, until the last."""
    while True:
        pgconn.consume_input()
        while pgconn.is_busy():
            _wait(pgconn, select.POLLIN)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        yield result
    if pgconn.status == pq.ConnStatus.BAD:
        raise psycopg.OperationalError(pgconn.get_error_message().strip() or "connection lost")


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """End the transaction a script left open. Sent here, not by ``conn.execute``: psycopg
    answers a ``ROLLBACK`` it runs by deallocating every prepared statement of the
    connection (ours too), while a ``PREPARE`` is not undone by a rollback anyway."""
    pgconn = conn.pgconn
    if pgconn.transaction_status == pq.TransactionStatus.IDLE:
        return
    pgconn.send_query(b"ROLLBACK")
    _flush(pgconn)
    for result in _results(pgconn):
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.OperationalError(result.get_error_message().strip())


def _raise(conn: psycopg.Connection[Any], error: pq.abc.PGresult) -> None:
    """Roll back a transaction left open (so the pooled connection goes back idle) and
    raise ``error`` as psycopg's class for its SQLSTATE."""
    _rollback(conn)
    sqlstate = (error.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    message = error.get_error_message().strip()
    try:
        cls = pg_errors.lookup(sqlstate)
    except KeyError:
        cls = psycopg.DatabaseError
    raise cls(message)


def copy_in(conn: psycopg.Connection[Any], script: bytes, chunks: Sequence[bytes]) -> None:
    """Run the simple-query ``script``, whose ``COPY ... FROM STDIN`` statements take
    ``chunks``, one each, in order; the first error is raised after the transaction the
    script opened was rolled back."""
    pgconn = conn.pgconn
    pgconn.send_query(script)
    _flush(pgconn)
    pending = list(chunks)
    error: pq.abc.PGresult | None = None
    for result in _results(pgconn):
        if result.status == pq.ExecStatus.COPY_IN:
            if error is None and pending:
                data = pending.pop(0)
                while not pgconn.put_copy_data(data):
                    _wait(pgconn, select.POLLOUT)
                while not pgconn.put_copy_end(None):
                    _wait(pgconn, select.POLLOUT)
            else:  # nothing to send (not with a script of ours): fail this COPY
                while not pgconn.put_copy_end(b"no data for this COPY"):
                    _wait(pgconn, select.POLLOUT)
            _flush(pgconn)
        elif result.status == pq.ExecStatus.FATAL_ERROR and error is None:
            error = result
    if error is not None:
        _raise(conn, error)


def query_prepared(conn: psycopg.Connection[Any], prepared: weakref.WeakSet[Any], name: bytes,
                   statement: bytes, params: Sequence[bytes], types: Sequence[int]
                   ) -> list[Row]:
    """The rows (text values, ``None`` for NULL) of ``statement`` (``$1``... placeholders)
    with ``params`` in binary of the type oids ``types``, prepared as ``name`` on ``conn``
    the first time; ``prepared`` holds the caller's connections that have it (a
    connection closed and dropped leaves on its own).

    One blocking ``PQexecPrepared``, not the send-and-poll loop of :func:`copy_in`:
    psycopg releases the GIL for the whole exchange in its ``exec_*`` calls (not in
    ``get_result``), and one C call instead of a loop of them saved about a third of the
    lookup's CPU in the collector here."""
    for attempt in (1, 2):
        if conn not in prepared:
            _prepare(conn, name, statement, types)
            prepared.add(conn)
        pgconn = conn.pgconn
        result = pgconn.exec_prepared(name, params, param_formats=[1] * len(params))
        if result.status == pq.ExecStatus.TUPLES_OK:
            width = result.nfields
            return [tuple(result.get_value(r, c) for c in range(width))
                    for r in range(result.ntuples)]
        if pgconn.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError(
                pgconn.get_error_message().strip() or "connection lost")
        if attempt == 1 and result.error_field(pq.DiagnosticField.SQLSTATE) == _NO_STATEMENT:
            # Something ran DEALLOCATE ALL on the connection (psycopg does after a
            # ROLLBACK or DROP it runs itself): prepare it again.
            prepared.discard(conn)
            continue
        _raise(conn, result)
    raise AssertionError("unreachable")


def _prepare(conn: psycopg.Connection[Any], name: bytes, statement: bytes,
             types: Sequence[int]) -> None:
    pgconn = conn.pgconn
    pgconn.send_prepare(name, statement, param_types=types)
    _flush(pgconn)
    for result in _results(pgconn):
        if result.status == pq.ExecStatus.FATAL_ERROR:
            _raise(conn, result)


@contextmanager
def rolled_back_on_error(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Roll back the transaction a script opened when what follows it fails, so that the
    pooled connection goes back idle."""
    try:
        yield
    except BaseException:
        if not conn.closed:
            _rollback(conn)
        raise
