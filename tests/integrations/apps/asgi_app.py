"""A Starlette app with fanout's ASGI middleware, run by the tests under real servers.

``GET /track?i=N`` records one event whose id is derived from ``N`` (so a repeated ``N``
is a redelivery the collector must store once) and answers with that event id.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import fanout
from fanout.integrations.asgi import FanoutMiddleware


async def track(request: Request) -> JSONResponse:
    i = int(request.query_params["i"])
    event_id = fanout.track("request.handled", properties={"i": i}, event_id=f"req-{i}")
    return JSONResponse({"event_id": event_id})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = FanoutMiddleware(Starlette(routes=[Route("/track", track), Route("/health", health)]))
