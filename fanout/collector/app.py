"""The ASGI app: ``POST /v1/batch``, ``GET /v1/persons/{id}/events``, ``GET /v1/health``.

Request handling order is cheapest refusal first: key (401), declared size (413), body
decoding (400/413), rate limit (429 + ``Retry-After``), per-event validation, one
committed transaction, then 200. Decoding, validation and the insert run in a worker
thread so the event loop keeps answering (health checks, other keys) while a batch is
parsed and committed. Error bodies never echo the request's key.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from . import require_extra

require_extra()

from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from .ingest import ProtocolError, decode_body, validate_batch  # noqa: E402
from .keys import KeyInfo, bearer_key  # noqa: E402
from .protocol import PROTOCOL_VERSION, Limits  # noqa: E402
from .ratelimit import RateLimiter  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["create_app"]

logger = logging.getLogger("fanout.collector")

def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    store: Store,
    *,
    rate_limit: float | None = None,
    burst: float | None = None,
    limits: Limits | None = None,
    close_store: bool = True,
) -> Starlette:
    """The collector app over ``store``; ``rate_limit`` is events per second per key.

    A request body is refused unread (413) when it is larger than the decoded limit even
    before decoding: gzip only ever shrinks JSON batches, so that bound is safe.
    """
    limiter = RateLimiter(rate_limit, burst)
    limits = limits or Limits()
    max_wire = limits.max_batch_bytes
    too_large = f"body above {max_wire} bytes; send smaller batches"

    async def authenticate(request: Request) -> KeyInfo | None:
        key = bearer_key(request.headers.get("authorization"))
        if key is None:
            return None
        return await run_in_threadpool(store.key_for, key)

    async def batch(request: Request) -> Response:
        key = await authenticate(request)
        if key is None:
            return _error(401, "missing, unknown or revoked server key")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_wire:
            return _error(413, too_large)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_wire:
                return _error(413, too_large)
        encoding = request.headers.get("content-encoding")
        try:
            result = await run_in_threadpool(
                _ingest, store, limiter, limits, key, bytes(body), encoding
            )
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        except _Limited as exc:
            return _error(
                429,
                "rate limit exceeded; retry later",
                {"Retry-After": RateLimiter.retry_after_header(exc.wait)},
            )
        return JSONResponse(result)

    async def person_events(request: Request) -> Response:
        if await authenticate(request) is None:
            return _error(401, "missing, unknown or revoked server key")
        person_id = request.path_params["person_id"]
        try:
            limit = min(10_000, max(1, int(request.query_params.get("limit", "1000"))))
        except ValueError:
            return _error(400, "limit must be an integer")
        events = await run_in_threadpool(store.person_events, person_id, limit=limit)
        linked = await run_in_threadpool(store.linked_ids, person_id)
        return JSONResponse({"person_id": person_id, "anonymous_ids": linked, "events": events})

    async def health(request: Request) -> Response:
        ok = await run_in_threadpool(store.healthy)
        return JSONResponse(
            {"ok": ok, "protocol": PROTOCOL_VERSION}, status_code=200 if ok else 503
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_store:
            store.close()

    return Starlette(
        routes=[
            Route("/v1/batch", batch, methods=["POST"]),
            Route("/v1/persons/{person_id:str}/events", person_events, methods=["GET"]),
            Route("/v1/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


class _Limited(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


def _ingest(
    store: Store,
    limiter: RateLimiter,
    limits: Limits,
    key: KeyInfo,
    body: bytes,
    encoding: str | None,
) -> dict[str, Any]:
    batch = decode_body(body, encoding, limits)
    wait = limiter.acquire(key.id, len(batch))
    if wait is not None:
        raise _Limited(wait)
    ingested = validate_batch(batch, limits)
    result = store.insert(ingested.rows, ingested.links, key_id=key.id)
    if ingested.rejected:
        logger.info("key %d: rejected %d event(s)", key.id, len(ingested.rejected))
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": [{"index": i, "error": e} for i, e in ingested.rejected],
    }
