"""``flush_after``: deliver before a serverless handler returns (AWS Lambda, Cloud Functions...).

A serverless runtime freezes the process as soon as the handler returns and may kill it
without any exit hook (or the handler's host ends it with ``os._exit``): whatever is still
queued then is lost. ``flush_after`` flushes every channel, bounded by one deadline, when
the handler returns or raises::

    @flush_after                     # or @flush_after(timeout=2.0)
    def handler(event, context): ...

    @flush_after
    async def handler(event, context): ...

    with flush_after():              # or: async with flush_after():
        ...

A streaming handler (a generator function, sync or ``async``, e.g. Lambda response
streaming or an ASGI body) is flushed when its generator ends: exhausted, raising, or
closed early (``close()`` / ``aclose()``), after the generator's own ``finally`` blocks.
An ``async`` handler or generator is flushed with the awaitable ``aflush``, so the event
loop keeps running. A generator that is dropped without being closed is flushed only
when Python finalizes it (for an async generator: a task asyncio schedules on its loop),
which may be after the runtime froze: iterate it to the end or close it.

A delivery problem never turns into a handler error: it is logged and counted in the
report, like every other fanout failure.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import Any, TypeVar, overload

from .. import _default
from .._client import Client
from .._report import FlushReport

__all__ = ["FlushAfter", "flush_after"]

logger = logging.getLogger("fanout")

F = TypeVar("F", bound=Callable[..., Any])


class FlushAfter:
    """Decorator and (async) context manager; see :func:`flush_after`."""

    def __init__(self, *, timeout: float | None = None, client: Client | None = None) -> None:
        self.timeout = timeout
        self.client = client
        #: The report of the last flush (``None`` before the first).
        self.report: FlushReport | None = None

    def flush(self) -> FlushReport:
        try:
            client = self.client if self.client is not None else _default.get_default_client()
            self.report = client.flush(self.timeout)
        except Exception:  # noqa: BLE001 - never turn analytics into a handler error
            logger.exception("fanout: flush after the handler failed")
            self.report = FlushReport({}, timed_out=True)
        if not self.report.ok:
            logger.warning("fanout: not everything was delivered before returning: %r", self.report)
        return self.report

    async def aflush(self) -> FlushReport:
        try:
            client = self.client if self.client is not None else _default.get_default_client()
            self.report = await client.aflush(self.timeout)
        except Exception:  # noqa: BLE001
            logger.exception("fanout: flush after the handler failed")
            self.report = FlushReport({}, timed_out=True)
        if not self.report.ok:
            logger.warning("fanout: not everything was delivered before returning: %r", self.report)
        return self.report

    def __enter__(self) -> FlushAfter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()

    async def __aenter__(self) -> FlushAfter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aflush()

    def __call__(self, func: F) -> F:
        # A generator function's body runs while its generator is iterated, not when it is
        # called: the wrapper is a generator of the same kind, flushing when it ends. The
        # kind is also told by what a call returns, for a handler another decorator hid
        # behind a plain function (``inspect`` does not see through ``functools.wraps``).
        if inspect.isasyncgenfunction(func):
            # An async generator function's wrapper must be one too (frameworks ask
            # ``inspect``, which sees through a partial): the one below, bound to ``func``.
            agen_wrapper = functools.partial(self._flushing_agen, func)
            return functools.update_wrapper(agen_wrapper, func)  # type: ignore[return-value]

        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                return (yield from self._flushing_gen(func(*args, **kwargs)))

            return gen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                finally:
                    await self.aflush()

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = func(*args, **kwargs)
            except BaseException:
                self.flush()
                raise
            if inspect.isgenerator(result):
                return self._flushing_gen(result)
            if inspect.isasyncgen(result):
                return self._flushing_agen(lambda: result)
            if inspect.iscoroutine(result):
                return self._flushing_coro(result)
            self.flush()
            return result

        return wrapper  # type: ignore[return-value]

    def _flushing_gen(self, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        """``gen``, flushed when it ends, raises or is closed (``send``/``throw``/``close``
        and its return value pass through)."""
        try:
            return (yield from gen)
        finally:
            self.flush()

    async def _flushing_agen(
        self, make: Callable[..., AsyncGenerator[Any, Any]], /, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, Any]:
        """The async generator ``make(*args, **kwargs)`` gives, flushed with ``aflush`` (the
        loop keeps running) when it ends, raises or is closed; ``asend``/``athrow``/``aclose``
        reach it (``yield from`` by hand)."""
        try:
            agen = make(*args, **kwargs)
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                return
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:  # noqa: BLE001 - forwarded, not handled
                    try:
                        item = await agen.athrow(exc)
                    except StopAsyncIteration:
                        return
                else:
                    try:
                        item = await agen.asend(sent)
                    except StopAsyncIteration:
                        return
        finally:
            await self.aflush()

    async def _flushing_coro(self, coro: Any) -> Any:
        """The result of awaiting ``coro``, flushed with ``aflush`` after it."""
        try:
            return await coro
        finally:
            await self.aflush()


@overload
def flush_after(func: F, /) -> F: ...


@overload
def flush_after(*, timeout: float | None = None, client: Client | None = None) -> FlushAfter: ...


def flush_after(
    func: F | None = None, /, *, timeout: float | None = None, client: Client | None = None
) -> F | FlushAfter:
    """Flush the client (default: fanout's default client) when the handler ends.

    ``timeout`` bounds the flush (default ``FANOUT_SHUTDOWN_TIMEOUT``); keep it well under
    the function's own time limit.
    """
    helper = FlushAfter(timeout=timeout, client=client)
    if func is not None:
        return helper(func)
    return helper
