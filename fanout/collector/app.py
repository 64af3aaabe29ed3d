"""The ASGI app: ``POST /v1/batch``, ``GET /v1/persons/{id}/events``, ``GET /v1/health``.

Request handling order is cheapest refusal first: key (401), scope (403), rate limit
(429, before the body is read), declared size (413), the body read within its deadline
(408) and within the server's memory budget, decoding (400/413), the rate limit again
with the batch's real event count, per-event validation, one committed transaction, then
200. Decoding and validation run in a worker thread, one batch at a time (they hold the
GIL anyway, and one at a time bounds the memory a hostile body can inflate to), while the
event loop keeps answering health checks and other keys. The insert runs outside that
slot, so the next batch is decoded while this one commits. Error bodies never echo the
request's key; refusals are logged at a bounded rate (:mod:`.refusals`).

An ingest key found valid moments ago (:mod:`.keycache`) skips the first hand-off: its
body is read at once, and the key and its rate limit are checked again in the worker
thread before the body is decoded, so a revoked or limited key still stores nothing.

Such a batch skips the second hand-off too where nothing on its way can wait
(:func:`_ingest_now`): the only batch in flight, an uncompressed body of at most
:data:`INLINE_BYTES`, the rate limit kept in memory, the decoding slot free, and a store
that looks the key up and commits at once or declines at once (``key_for_nowait``,
``insert_nowait``: SQLite's own lock taken without blocking, its busy timeout at 0, no
checkpoint and no person-index pass in that commit; PostgreSQL always declines). Then the
key check, decoding, validation and commit run on the event loop's thread, in the same
order and with the same answers, and what was declined continues in a worker thread
from where it stopped (a batch decoded on the loop is inserted there, not decoded again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from . import require_extra

require_extra()

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from .._json import dumps  # noqa: E402
from .budget import ByteBudget  # noqa: E402
from .handoff import WorkerThreads  # noqa: E402
from .ingest import Ingested, ProtocolError, decode_body, validate_batch  # noqa: E402
from .keycache import KeyCache  # noqa: E402
from .keys import INGEST, READ, KeyInfo, bearer_key  # noqa: E402
from .protocol import PROTOCOL_VERSION, Limits  # noqa: E402
from .ratelimit import Limiter, RateLimiter, retry_after_header  # noqa: E402
from .refusals import RefusalLog  # noqa: E402
from .store import WOULD_WAIT, InsertResult, Store  # noqa: E402
from .timeline import (  # noqa: E402
    DEFAULT_LIMIT,
    DEFAULT_PAGE_BYTES,
    MAX_LIMIT,
    MAX_PAGE_BYTES,
    Cursor,
    Page,
    decode_cursor,
    encode_cursor,
)

__all__ = ["AppOptions", "CollectorApp", "create_app"]

logger = logging.getLogger("fanout.collector")

#: Worker threads per app. Store calls (key lookups, inserts, timeline pages, health
#: checks) wait for each other on the store anyway (SQLite's one connection, PostgreSQL's
#: pool of 4), so more threads add no throughput; they did add memory: each thread that
#: decodes a batch gets its own malloc arena, which keeps what it freed (32 threads took the
#: memory test's peak from 260 to 420 MB).
WORKER_THREADS = 8
#: ``asyncio.timeout_at`` (3.11+): one deadline over the whole body read, no task per read.
_timeout_at = getattr(asyncio, "timeout_at", None)


@dataclasses.dataclass(frozen=True)
class AppOptions:
    """What the app enforces beyond the protocol's limits.

    ``body_budget`` is the most request-body bytes held in memory at once, across all
    connections: a request reserves its declared size (or the protocol's maximum when it
    declares none) before its body is read, and waits, not reading, while the budget is
    spent; the kernel's socket buffers then push back on the client. ``body_timeout`` is
    how long reading one body may take once it has started.
    """

    limits: Limits = dataclasses.field(default_factory=Limits)
    body_budget: int = 32 * 1024 * 1024
    body_timeout: float = 60.0


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 key_id: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.key_id = key_id


_UNKNOWN_KEY: Final = "missing, unknown or revoked server key"


def _checked_key(store: Store, limiter: Limiter, key: str, scope: str) -> KeyInfo:
    """``key``'s listing, or the refusal: 401 unknown or revoked, 403 another scope, 429
    over its rate limit. In a worker thread: a store lookup, and the limiter's bucket, may
    each be a round trip to the database. Every request's key is checked here, whether
    before its body (:func:`create_app`'s ``verify``) or, for a key the cache remembers,
    in the hand-off that decodes its batch (:func:`_ingest`)."""
    return _allowed(store.key_for(key), limiter, scope)


def _allowed(info: KeyInfo | None, limiter: Limiter, scope: str) -> KeyInfo:
    """:func:`_checked_key` once the key is looked up."""
    if info is None:
        raise _Refused(401, _UNKNOWN_KEY)
    if not info.allows(scope):
        raise _Refused(403, f"this key cannot {'send events' if scope == INGEST else 'read'}"
                            f" (its scope is {', '.join(info.scopes) or 'none'})",
                       key_id=info.id)
    wait = limiter.check(info.id)
    if wait is not None:
        raise _Refused(429, "rate limit exceeded; retry later",
                       {"Retry-After": retry_after_header(wait)}, info.id)
    return info


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


_BATCH_HEADERS = (b"authorization", b"content-length", b"content-encoding")


def _batch_headers(scope: dict[str, Any]) -> list[str | None]:
    """The batch endpoint's three headers, straight from the ASGI scope (the first of
    each, as Starlette's ``Headers.get`` reads them), without building a Request."""
    found: list[str | None] = [None, None, None]
    for name, value in scope["headers"]:
        if name in _BATCH_HEADERS:
            i = _BATCH_HEADERS.index(name)
            if found[i] is None:
                found[i] = value.decode("latin-1")
    return found


def create_app(
    store: Store,
    *,
    limiter: Limiter | None = None,
    options: AppOptions | None = None,
    refusals: RefusalLog | None = None,
    close_store: bool = True,
) -> CollectorApp:
    """The collector app over ``store``; ``limiter`` counts events per key (default: none)."""
    limiter = limiter or RateLimiter(None)
    options = options or AppOptions()
    refusals = refusals or RefusalLog()
    limits = options.limits
    max_wire = limits.max_batch_bytes
    too_large = f"body above {max_wire} bytes; send smaller batches"
    budget = ByteBudget(options.body_budget)
    decoding = threading.Lock()  # one batch decoded at a time (a Lock: C code, no Condition)
    threads = WorkerThreads(WORKER_THREADS, "fanout-collector")
    # One hand-off to a worker thread: a queue put and one wake-up of the loop (see
    # handoff.py; Starlette's ``run_in_threadpool`` and anyio's ``to_thread`` spent several
    # times as much CPU per call on cancel scopes and context lookups, ``run_in_executor``
    # twice as much on chained futures).
    in_thread = threads.run
    keys_seen = KeyCache()
    # A batch is handled on the loop only where its rate limit is kept in memory (a
    # limiter in a database, PostgreSQL's, is a round trip per check; a store that has
    # one declines key_for_nowait anyway).
    inline_limiter = isinstance(limiter, RateLimiter)
    in_flight = 0  # batch requests reading or handling their body (on the loop: no lock)

    def refuse(request: Request, exc: _Refused, key: KeyInfo | None) -> Response:
        return refused(_client(request), exc, key)

    def refused(client: str | None, exc: _Refused, key: KeyInfo | None) -> Response:
        key_id = exc.key_id if exc.key_id is not None else (key.id if key else None)
        refusals.record(exc.status, exc.message, client=client, key_id=key_id)
        return _error(exc.status, exc.message, exc.headers)

    async def authorize(request: Request, scope: str) -> KeyInfo:
        return await verify(bearer_key(request.headers.get("authorization")), scope)

    async def verify(key: str | None, scope: str) -> KeyInfo:
        if key is None:
            raise _Refused(401, _UNKNOWN_KEY)
        # One worker-thread hand-off for the key and its bucket: both may be a round trip
        # to the database (PostgreSQL keeps the buckets of every process).
        info: KeyInfo = await in_thread(_checked_key, store, limiter, key, scope)
        return info

    late_message = f"body not received within {options.body_timeout:g} s"

    async def receive_body(receive: Callable[[], Any]) -> bytes | bytearray:
        body: bytes | bytearray = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "client disconnected before sending the body")
            chunk: bytes = message.get("body", b"")
            if not body:  # the first chunk, kept as it came: a body in one message is not
                body = chunk  # copied
            elif type(body) is bytes:
                body = bytearray(body) + chunk
            else:
                body += chunk
            if len(body) > max_wire:
                raise _Refused(413, too_large)
            more = message.get("more_body", False)
        return body

    async def read_body(receive_message: Callable[[], Any]) -> bytes | bytearray:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.body_timeout
        if _timeout_at is not None:
            try:
                async with _timeout_at(deadline):
                    return await receive_body(receive_message)
            except TimeoutError:
                raise _Refused(408, late_message) from None

        async def receive() -> Any:  # Python 3.10: a deadline per message
            try:
                return await asyncio.wait_for(receive_message(),
                                              max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise _Refused(408, late_message) from None

        return await receive_body(receive)

    async def batch(scope: dict[str, Any], receive: Callable[[], Any]) -> Response | bytes:
        """The JSON body of the 200, or the refusal as a Response."""
        nonlocal in_flight
        key: KeyInfo | None = None
        authorization, declared, encoding = _batch_headers(scope)
        token = bearer_key(authorization)
        try:
            # A key seen valid moments ago is checked again in the worker thread that
            # decodes the batch, before decoding: one hand-off instead of two (keycache.py).
            key = keys_seen.get(token) if token is not None else None
            recheck = token if key is not None else None
            if key is None:
                key = await verify(token, INGEST)
                assert token is not None  # verified
                keys_seen.put(token, key)
            size = max_wire
            if declared is not None and declared.isdigit():
                size = int(declared)
                if size > max_wire:
                    raise _Refused(413, too_large)
            async with budget.hold(size):
                in_flight += 1
                try:
                    body = await read_body(receive)
                    now = None
                    # Alone (one connection's serial batches): on the loop if nothing
                    # waits; with others in flight, worker threads let one batch's
                    # SQLite work (which releases the GIL) overlap another's.
                    if (in_flight == 1 and recheck is not None and encoding is None
                            and len(body) <= INLINE_BYTES and inline_limiter):
                        now = _ingest_now(store, decoding, limiter, limits, body, recheck)
                    if now is None:
                        ingested, result = await in_thread(
                            _ingest, store, decoding, limiter, limits, key, body, encoding,
                            recheck)
                    else:  # checked and decoded on the loop; committed there if it could
                        checked, ingested, done = now
                        result = done if done is not None else await in_thread(
                            _insert, store, checked, ingested)
                    del body
                finally:
                    in_flight -= 1
        except _Refused as exc:
            if token is not None:
                keys_seen.drop(token)  # refused: its next request is checked before its body
            client = scope.get("client")
            return refused(client[0] if client else None, exc, key)
        if ingested.rejected:
            logger.info("key %d: rejected %d event(s)", key.id, len(ingested.rejected))
        # orjson, not JSONResponse's standard-library encoder: a fifth of the CPU.
        return dumps({
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": [{"index": i, "error": e} for i, e in ingested.rejected],
        })

    async def person_events(request: Request) -> Response:
        key: KeyInfo | None = None
        try:
            key = await authorize(request, READ)
            query = request.query_params
            try:
                limit = min(MAX_LIMIT, max(1, int(query.get("limit", DEFAULT_LIMIT))))
                max_bytes = min(MAX_PAGE_BYTES,
                                max(1, int(query.get("max_bytes", DEFAULT_PAGE_BYTES))))
            except ValueError:
                raise _Refused(400, "limit and max_bytes must be integers") from None
            cursor = query.get("cursor")
            try:
                after = decode_cursor(cursor) if cursor else None
            except ValueError:
                raise _Refused(400, "cursor is not one this server handed out") from None
        except _Refused as exc:
            return refuse(request, exc, key)
        person_id = request.path_params["person_id"]
        page, linked = await in_thread(
            _read, store, limiter, key, person_id, limit, max_bytes, after)
        head = dumps({"person_id": person_id, "anonymous_ids": linked})
        tail = dumps(encode_cursor(page.next_cursor) if page.next_cursor else None)
        # The stored JSON of each event goes out as it is: no decoding, no re-encoding.
        content = b"".join((head[:-1], b',"events":[', b",".join(page.events),
                            b'],"next_cursor":', tail, b"}"))
        return Response(content, media_type="application/json")

    async def health(request: Request) -> Response:
        ok = await in_thread(store.healthy)
        return JSONResponse(
            {"ok": ok, "protocol": PROTOCOL_VERSION}, status_code=200 if ok else 503
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        threads.shutdown()  # requests still in a worker thread finish first
        if close_store:
            store.close()

    routed = Starlette(
        routes=[
            Route("/v1/batch", batch, methods=["POST"]),
            Route("/v1/persons/{person_id:str}/events", person_events, methods=["GET"]),
            Route("/v1/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return CollectorApp(routed, batch)


#: What a batch's 200 starts with; its content-length is added per response.
_JSON_TYPE: Final = (b"content-type", b"application/json")


class CollectorApp:
    """``POST /v1/batch`` straight to its handler; everything else through Starlette.

    The batch endpoint is most of the traffic, and Starlette's layers around a handler
    (error and exception middleware, router, request-response wrapper) cost more CPU per
    request than the handler's own work outside the worker thread. So the handler reads
    its three headers from the ASGI scope and its 200 goes out as the two ASGI messages
    Starlette's ``Response`` would send, without a Request or a Response object (refusals,
    rare, are Responses). The handler catches its own refusals; anything else it raises
    reaches uvicorn, which answers 500 just as Starlette's error middleware would.
    """

    def __init__(
        self, app: Starlette,
        batch: Callable[[dict[str, Any], Callable[[], Any]], Awaitable[Response | bytes]],
    ) -> None:
        self.app = app
        self._batch = batch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["path"] == "/v1/batch"
                and scope["method"] == "POST"):
            answer = await self._batch(scope, receive)
            if isinstance(answer, bytes):
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", b"%d" % len(answer)), _JSON_TYPE]})
                await send({"type": "http.response.body", "body": answer})
            else:
                await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _read(
    store: Store, limiter: Limiter, key: KeyInfo, person_id: str, limit: int, max_bytes: int,
    after: Cursor | None,
) -> tuple[Page, list[str]]:
    """One timeline page, its cost charged to the key, and the linked ids (one hand-off)."""
    page = store.timeline(key.project_id, person_id, limit=limit, max_bytes=max_bytes,
                          after=after)
    limiter.charge(key.id, len(page.events))
    return page, store.linked_ids(key.project_id, person_id)


def _ingest(
    store: Store, decoding: threading.Lock, limiter: Limiter, limits: Limits,
    key: KeyInfo, body: bytes | bytearray, encoding: str | None, recheck: str | None,
) -> tuple[Ingested, InsertResult]:
    """One batch, in one worker thread (one hand-off per request): ``recheck``, a key
    taken from the key cache, looked up again with its rate limit, then the body decoded
    and validated while holding the decoding slot, inserted after releasing it."""
    if recheck is not None:
        key = _checked_key(store, limiter, recheck, INGEST)
    with decoding:
        ingested = _decode(limiter, limits, key, body, encoding)
    return ingested, _insert(store, key, ingested)


#: The largest body :func:`_ingest_now` handles on the event loop's thread: decoding,
#: validating and inserting 64 KiB of events takes about a millisecond there, the longest
#: the loop may be kept from other connections' requests by one batch.
INLINE_BYTES: Final = 64 * 1024


def _ingest_now(
    store: Store, decoding: threading.Lock, limiter: Limiter, limits: Limits,
    body: bytes | bytearray, recheck: str,
) -> tuple[KeyInfo, Ingested, InsertResult | None] | None:
    """:func:`_ingest` on the event loop's thread, saving its two hand-offs, where nothing
    on the way can wait: ``None`` if something would (the decoding slot is taken, the
    store cannot look the key up at once), with nothing done; else the key checked and the
    batch decoded and validated, as :func:`_ingest` does (the same refusals, the same rate
    limit accounting), and the insert's result, or ``None`` where the store would have to
    wait for it: the caller then inserts in a worker thread, the batch as it was decoded
    here. Only for an uncompressed body of at most :data:`INLINE_BYTES`, a key from the
    key cache (``recheck``) and the in-memory rate limiter (see :func:`create_app`)."""
    if not decoding.acquire(blocking=False):
        return None
    try:
        found = store.key_for_nowait(recheck)
        if found is WOULD_WAIT:
            return None
        key = _allowed(found, limiter, INGEST)
        ingested = _decode(limiter, limits, key, body, None)
    finally:
        decoding.release()
    return key, ingested, store.insert_nowait(
        key.project_id, ingested.rows, ingested.links, key_id=key.id)


def _insert(store: Store, key: KeyInfo, ingested: Ingested) -> InsertResult:
    return store.insert(key.project_id, ingested.rows, ingested.links, key_id=key.id)


def _decode(
    limiter: Limiter, limits: Limits, key: KeyInfo, body: bytes | bytearray,
    encoding: str | None,
) -> Ingested:
    try:
        batch = decode_body(body, encoding, limits)
    except ProtocolError as exc:
        raise _Refused(exc.status, exc.message) from None
    wait = limiter.acquire(key.id, len(batch))
    if wait is not None:
        raise _Refused(429, "rate limit exceeded; retry later",
                       {"Retry-After": retry_after_header(wait)})
    try:
        return validate_batch(batch, limits)
    finally:
        del batch
