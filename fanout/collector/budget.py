"""A budget of bytes shared by the requests of one event loop.

Each request reserves what its body may take before reading it and gives it back when it
is answered, so the bodies held at once never exceed the budget, however many clients
upload at the same time. A request that does not fit waits without reading its socket;
the kernel's buffers fill and the client's writes block: back-pressure instead of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self._available = total
        self._changed: asyncio.Condition | None = None  # made on the loop that uses it

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = max(0, min(size, self.total))
        if self._changed is None:
            self._changed = asyncio.Condition()
        changed = self._changed
        async with changed:
            await changed.wait_for(lambda: self._available >= size)
            self._available -= size
        try:
            yield
        finally:
            async with changed:
                self._available += size
                changed.notify_all()
