"""ByteBudget: requests that fit go at once, the others wait for a release, in the
amounts reserved, and a cancelled waiter leaves the budget whole."""

from __future__ import annotations

import asyncio

from fanout.collector.budget import ByteBudget


def test_holds_never_exceed_the_total_and_waiters_go_after_a_release():
    async def main() -> list[str]:
        budget = ByteBudget(100)
        order: list[str] = []
        held = 0
        peak = 0
        release_a = asyncio.Event()

        async def request(name: str, size: int, until: asyncio.Event | None) -> None:
            nonlocal held, peak
            async with budget.hold(size):
                held += min(size, 100)
                peak = max(peak, held)
                order.append(f"{name} in")
                if until is not None:
                    await until.wait()
                else:
                    await asyncio.sleep(0)
                held -= min(size, 100)
            order.append(f"{name} out")

        a = asyncio.create_task(request("a", 70, release_a))
        await asyncio.sleep(0)
        b = asyncio.create_task(request("b", 50, None))  # does not fit beside a: waits
        c = asyncio.create_task(request("c", 10, None))  # fits beside a: goes at once
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["a in", "c in", "c out"]
        release_a.set()
        await asyncio.gather(a, b, c)
        d = asyncio.create_task(request("d", 10**9, None))  # above the total: takes it all
        await d
        assert peak <= 100
        return order

    order = asyncio.run(main())
    assert order == ["a in", "c in", "c out", "a out", "b in", "b out", "d in", "d out"]


def test_a_cancelled_waiter_leaves_the_budget_whole():
    async def main() -> None:
        budget = ByteBudget(100)
        entered: list[int] = []
        async with budget.hold(80):
            waiter = asyncio.create_task(budget.hold(50).__aenter__())
            await asyncio.sleep(0)
            assert not waiter.done()
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        # All 100 bytes are back: a full-size hold goes at once, with nobody waiting.
        async with budget.hold(100):
            entered.append(100)
        assert entered == [100]

    asyncio.run(main())
