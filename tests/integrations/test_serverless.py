"""``flush_after`` in a handler process that ends with ``os._exit`` (no exit hook runs).

``FANOUT_FLUSH_INTERVAL=30`` keeps every event queued until something flushes it, so what
the collector stores is exactly what ``flush_after`` delivered before the process died.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import textwrap
from collections.abc import AsyncGenerator, AsyncIterator, Generator

import pytest

from fanout.integrations.serverless import flush_after
from fanout.testing import InMemoryProvider

from .conftest import PYTHON, app_env, stored
from .loop_probe import TICKS, GatedProvider, loop_probe

EVENTS = 20

HANDLERS = {
    "decorator": """
        @flush_after
        def handler(event, context):
            work(event)
            return {"ok": True}

        handler({"id": "h"}, None)
    """,
    "decorator-with-timeout": """
        @flush_after(timeout=10)
        def handler(event, context):
            work(event)

        handler({"id": "h"}, None)
    """,
    "decorator-raising": """
        @flush_after
        def handler(event, context):
            work(event)
            raise RuntimeError("the handler failed after tracking")

        try:
            handler({"id": "h"}, None)
        except RuntimeError:
            pass
    """,
    "async-decorator": """
        @flush_after
        async def handler(event, context):
            await asyncio.sleep(0)
            work(event)

        asyncio.run(handler({"id": "h"}, None))
    """,
    "context-manager": """
        with flush_after():
            work({"id": "h"})
    """,
    "async-context-manager": """
        async def main():
            async with flush_after(timeout=10):
                work({"id": "h"})

        asyncio.run(main())
    """,
    "no-flush (control: what os._exit costs)": """
        work({"id": "h"})
    """,
}

PRELUDE = f"""
import asyncio, os
import fanout
from fanout.integrations.serverless import flush_after

def work(event):
    for i in range({EVENTS}):
        fanout.track("handler.ran", person_id="user-1", event_id=f"{{event['id']}}-{{i}}")
"""


@pytest.mark.parametrize("variant", list(HANDLERS))
def test_handler_ending_in_os_exit(collector, variant):
    script = PRELUDE + textwrap.dedent(HANDLERS[variant]) + "\nos._exit(0)\n"
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30")
    done = subprocess.run(
        [PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    expected = 0 if variant.startswith("no-flush") else EVENTS
    ids = sorted(e["event_id"] for e in stored(collector))
    assert ids == sorted(f"h-{i}" for i in range(expected)), done.stderr


# Streaming handlers: a generator function's body runs while its generator is iterated, so
# flush_after flushes when the generator ends (exhausted, raising, closed early). Each
# chunk is tracked before it is yielded: the events stored are the chunks the handler got to.

STREAMED = 5  # chunks taken before an early close / before the handler raises

STREAMING = {
    "generator": (
        """
        @flush_after
        def handler(event, context):
            for i in range(EVENTS):
                yield chunk(event, i)

        body = list(handler({"id": "h"}, None))
        assert body == [f"chunk-{i}" for i in range(EVENTS)], body
        """,
        [f"h-{i}" for i in range(EVENTS)],
    ),
    "generator-closed-early": (
        """
        @flush_after
        def handler(event, context):
            try:
                for i in range(EVENTS):
                    yield chunk(event, i)
            finally:  # the handler's own cleanup runs before the flush
                fanout.track("handler.closed", person_id="user-1", event_id="h-closed")

        stream = handler({"id": "h"}, None)
        body = [next(stream) for _ in range(STREAMED)]
        stream.close()
        """,
        [f"h-{i}" for i in range(STREAMED)] + ["h-closed"],
    ),
    "generator-raising": (
        """
        @flush_after
        def handler(event, context):
            for i in range(EVENTS):
                if i == STREAMED:
                    raise RuntimeError("the stream failed")
                yield chunk(event, i)

        try:
            for _ in handler({"id": "h"}, None):
                pass
        except RuntimeError as exc:
            assert str(exc) == "the stream failed", exc
        else:
            raise AssertionError("the handler's error did not propagate")
        """,
        [f"h-{i}" for i in range(STREAMED)],
    ),
    "generator-dropped (CPython closes it when its last reference goes)": (
        """
        @flush_after
        def handler(event, context):
            for i in range(EVENTS):
                yield chunk(event, i)

        stream = handler({"id": "h"}, None)
        body = [next(stream) for _ in range(STREAMED)]
        del stream
        """,
        [f"h-{i}" for i in range(STREAMED)],
    ),
    "async-generator": (
        """
        @flush_after
        async def handler(event, context):
            for i in range(EVENTS):
                await asyncio.sleep(0)
                yield chunk(event, i)

        async def main():
            body = [c async for c in handler({"id": "h"}, None)]
            assert body == [f"chunk-{i}" for i in range(EVENTS)], body

        asyncio.run(main())
        """,
        [f"h-{i}" for i in range(EVENTS)],
    ),
    "async-generator-closed-early": (
        """
        @flush_after(timeout=10)
        async def handler(event, context):
            try:
                for i in range(EVENTS):
                    await asyncio.sleep(0)
                    yield chunk(event, i)
            finally:
                fanout.track("handler.closed", person_id="user-1", event_id="h-closed")

        async def main():
            stream = handler({"id": "h"}, None)
            body = [await anext(stream) for _ in range(STREAMED)]
            await stream.aclose()

        asyncio.run(main())
        """,
        [f"h-{i}" for i in range(STREAMED)] + ["h-closed"],
    ),
    "async-generator-raising": (
        """
        @flush_after
        async def handler(event, context):
            for i in range(EVENTS):
                if i == STREAMED:
                    raise RuntimeError("the stream failed")
                await asyncio.sleep(0)
                yield chunk(event, i)

        async def main():
            try:
                async for _ in handler({"id": "h"}, None):
                    pass
            except RuntimeError as exc:
                assert str(exc) == "the stream failed", exc
            else:
                raise AssertionError("the handler's error did not propagate")

        asyncio.run(main())
        """,
        [f"h-{i}" for i in range(STREAMED)],
    ),
    # A coroutine handler behind another decorator: a plain function to ``inspect``, so
    # the kind is told by what the call returns (the streaming ones likewise, below).
    "coroutine-behind-another-decorator": (
        """
        @flush_after
        @logged
        async def handler(event, context):
            for i in range(EVENTS):
                await asyncio.sleep(0)
                chunk(event, i)
            return "ok"

        assert asyncio.run(handler({"id": "h"}, None)) == "ok"
        """,
        [f"h-{i}" for i in range(EVENTS)],
    ),
}

# Each generator handler again behind another decorator (Powertools'
# inject_lambda_context, say), which ``inspect`` takes for a plain function.
STREAMING.update({
    f"{name}-behind-another-decorator": (
        re.sub(r"( *)@flush_after\n", r"\1@flush_after\n\1@logged\n", body), ids
    )
    for name, (body, ids) in list(STREAMING.items())
    if name in ("generator", "async-generator")
})

STREAMING_PRELUDE = (
    PRELUDE
    + f"""
EVENTS = {EVENTS}
STREAMED = {STREAMED}

def chunk(event, i):
    fanout.track("handler.streamed", person_id="user-1", event_id=f"{{event['id']}}-{{i}}")
    return f"chunk-{{i}}"

def logged(func):  # another decorator, as Powertools' inject_lambda_context
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper
"""
)


@pytest.mark.parametrize("variant", list(STREAMING))
def test_streaming_handler_ending_in_os_exit(collector, variant):
    """The process ends with ``os._exit`` as soon as the consumer is done with the stream:
    every event the handler tracked was delivered by then."""
    body, expected = STREAMING[variant]
    script = STREAMING_PRELUDE + textwrap.dedent(body) + "\nos._exit(0)\n"
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30")
    done = subprocess.run(
        [PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    ids = sorted(e["event_id"] for e in stored(collector))
    assert ids == sorted(expected), done.stderr


@pytest.mark.parametrize("end", ["exhausted", "aclose"])
def test_async_generator_handler_flushes_without_blocking_the_loop(make_client, end):
    provider = GatedProvider()
    client = make_client(providers=[provider], flush_interval=30, max_retries=0)
    client.track("earlier", person_id="u", event_id="earlier")  # queued before the handler
    helper = flush_after(client=client, timeout=20)

    @helper
    async def handler(event: object, context: object) -> AsyncIterator[int]:
        for i in range(EVENTS):
            client.track("stream.chunk", person_id="u", event_id=f"e-{i}")
            yield i
            await asyncio.sleep(0)

    async def main() -> tuple[list[int], list[str | None], int]:
        ticks: list[int] = []
        probe = asyncio.create_task(loop_probe(provider, ticks))
        stream = handler({}, None)
        if end == "exhausted":
            body = [i async for i in stream]
        else:
            body = [await anext(stream) for _ in range(STREAMED)]
            await stream.aclose()
        delivered = [e.event_id for e in provider.delivered]  # when the stream ended
        probe.cancel()
        return body, delivered, len(ticks)

    body, delivered, ticks = asyncio.run(main())
    taken = EVENTS if end == "exhausted" else STREAMED
    assert body == list(range(taken))
    assert sorted(delivered) == sorted(["earlier"] + [f"e-{i}" for i in range(taken)])
    assert ticks >= TICKS
    assert helper.report is not None and helper.report.ok and not helper.report.timed_out


def test_the_wrapper_is_a_generator_that_forwards_send_and_throw(make_client):
    """The wrapper is a generator (or async generator) function like the handler, and passes
    send/throw (asend/athrow) through to the handler's generator and its return value back."""
    memory = InMemoryProvider()
    client = make_client(providers=[memory], flush_interval=30)

    @flush_after(client=client)
    def echo() -> Generator[str, str, str]:
        received = yield "ready"
        while received != "stop":
            try:
                client.track("echo", person_id="u", event_id=received)
                received = yield received.upper()
            except ValueError:
                received = yield "recovered"
        return "done"

    @flush_after(client=client)
    async def aecho() -> AsyncGenerator[str, str]:
        received = yield "ready"
        while received != "stop":
            try:
                client.track("aecho", person_id="u", event_id=received)
                received = yield received.upper()
            except ValueError:
                received = yield "recovered"

    assert inspect.isgeneratorfunction(echo)
    assert inspect.isasyncgenfunction(aecho)

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("a") == "A"
    assert gen.throw(ValueError("x")) == "recovered"
    assert gen.send("b") == "B"
    with pytest.raises(StopIteration) as stopped:
        gen.send("stop")
    assert stopped.value.value == "done"
    assert sorted(e.event_id for e in memory.events) == ["a", "b"]  # flushed when it ended

    async def main() -> None:
        agen = aecho()
        assert await anext(agen) == "ready"
        assert await agen.asend("c") == "C"
        assert await agen.athrow(ValueError("x")) == "recovered"
        assert await agen.asend("d") == "D"
        with pytest.raises(StopAsyncIteration):
            await agen.asend("stop")

    asyncio.run(main())
    assert sorted(e.event_id for e in memory.events) == ["a", "b", "c", "d"]
