"""Which context a middleware's request context encloses (``fanout._context.open_request``).

The data path of the same (events stored by the collector from pipelined requests under a
real uvicorn) is ``test_asgi_servers.py``'s; here, the rule itself, for every case.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import pytest

import fanout
from fanout import _context


def _read_own(values: dict[str, Any]) -> _context.RequestContext:
    return _context.own(**values)


def _next_request() -> _context.RequestContext | None:
    """A request from 192.0.2.2 with no id, opened as the ASGI middleware opens one: the
    context its events get."""
    ctx, tokens = _context.open_request(_read_own, {"ip": "192.0.2.2"}, None)
    try:
        return _context.current()
    finally:
        _context.close_request(ctx, tokens)


def test_a_request_never_encloses_the_context_another_request_left_behind() -> None:
    """An asyncio server can start a request's task from inside another's (uvicorn's
    pipelined requests), copying the other request's context variables: the new request
    encloses what that one enclosed (the contexts entered outside any request), neither
    the other request's own context nor one entered inside it."""
    with fanout.context(properties={"service": "api"}):  # outside any request
        first, tokens = _context.open_request(
            _read_own, {"anonymous_id": "visitor-1", "session_id": "s-1"}, None
        )
        with fanout.context(person_id="user-1"):  # entered inside the first request
            leftover = contextvars.copy_context()  # what the next task's copy holds
        left_plain = contextvars.copy_context()
        assert _context.live_request() is first
        _context.close_request(first, tokens)

    for leaked in (leftover, left_plain):
        got = leaked.run(_next_request)
        assert got is not None
        assert got.person_id is None
        assert got.anonymous_id_generated and got.anonymous_id != "visitor-1"
        assert dict(got.values) == {"ip": "192.0.2.2"}
        assert dict(got.properties) == {"service": "api"}
    assert first.resolve().anonymous_id == "visitor-1"
    # over: no longer taken for an enclosing request where it was left
    assert left_plain.run(_context.live_request) is None


def test_a_middleware_inside_another_for_the_same_request_encloses_its_context() -> None:
    outer, outer_tokens = _context.open_request(_read_own, {"anonymous_id": "visitor-1"}, None)
    with fanout.context(person_id="user-1"):  # an auth middleware between the two
        inner, tokens = _context.open_request(_read_own, {"session_id": "s-1"}, outer)
        got = _context.current()
        _context.close_request(inner, tokens)
    _context.close_request(outer, outer_tokens)
    assert got is not None
    assert (got.person_id, got.anonymous_id, dict(got.values)) == (
        "user-1", "visitor-1", {"session_id": "s-1"}
    )
    assert _context.current() is None


@pytest.mark.parametrize("service", [{"service": "api"}, None])
def test_a_context_left_by_a_middleware_inside_another_is_not_enclosed_either(
    service: dict[str, str] | None,
) -> None:
    """The leftover may be the context of a middleware inside another (Django's inside
    the ASGI one): what it enclosed is the outer one's, of the same ended request. With
    no context outside the request at all, too (what is outside is then nothing)."""
    with fanout.context(properties=service) if service else contextlib.nullcontext():
        outer, outer_tokens = _context.open_request(
            _read_own, {"anonymous_id": "visitor-1", "session_id": "s-1"}, None
        )
        inner, tokens = _context.open_request(_read_own, {"locale": "en-GB"}, outer)
        leftover = contextvars.copy_context()
        _context.close_request(inner, tokens)
        _context.close_request(outer, outer_tokens)

    got = leftover.run(_next_request)
    assert got is not None and got.anonymous_id_generated
    assert (dict(got.values), dict(got.properties)) == ({"ip": "192.0.2.2"}, service or {})
    assert inner.resolve().anonymous_id == "visitor-1"  # the inner one encloses the outer
