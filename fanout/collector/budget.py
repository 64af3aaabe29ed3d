"""A budget of bytes shared by the requests of one event loop.

Each request reserves what its body may take before reading it and gives it back when it
is answered, so the bodies held at once never exceed the budget, however many clients
upload at the same time. A request that does not fit waits without reading its socket;
the kernel's buffers fill and the client's writes block: back-pressure instead of memory.

Every batch passes through here, so the common case, nobody waiting and room to spare,
is two integer updates on the event loop's thread (which owns the count: no lock); only
a request that has to wait takes the condition, and only a release with someone waiting
wakes them.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self._available = total
        self._waiting = 0
        self._changed: asyncio.Condition | None = None  # made on the loop that uses it

    def hold(self, size: int) -> _Hold:
        """``async with budget.hold(size):`` reserves ``size`` bytes (at most the total)."""
        return _Hold(self, max(0, min(size, self.total)))

    async def _wait_for(self, size: int) -> None:
        """Take ``size`` once it is available (the slow path: someone waits, or no room)."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        changed = self._changed
        self._waiting += 1
        try:
            async with changed:
                await changed.wait_for(lambda: self._available >= size)
                self._available -= size
        finally:
            self._waiting -= 1

    async def _wake(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()


class _Hold:
    """The common case inline (no waiter, room to spare: one comparison and one integer
    update each way, no further coroutine); waiting and waking in ``ByteBudget``."""

    __slots__ = ("_budget", "_size")

    def __init__(self, budget: ByteBudget, size: int) -> None:
        self._budget = budget
        self._size = size

    async def __aenter__(self) -> None:
        budget = self._budget
        if not budget._waiting and budget._available >= self._size:
            budget._available -= self._size
            return
        await budget._wait_for(self._size)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        budget = self._budget
        budget._available += self._size
        if budget._waiting:
            await budget._wake()
