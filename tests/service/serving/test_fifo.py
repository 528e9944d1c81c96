"""The FIFO gate used by admission and by every model's queue."""

from __future__ import annotations

import asyncio

from modelcache.service.serving.fifo import FifoGate


def run(coro):
    return asyncio.run(coro)


def test_admits_up_to_the_limit_at_once_and_refuses_without_a_wait() -> None:
    async def main():
        gate = FifoGate(2)
        assert await gate.enter(0) and await gate.enter(0)
        assert not await gate.enter(0)  # full, and no time to wait
        assert gate.inside == 2
        gate.leave()
        assert gate.inside == 1
        assert await gate.enter(0)

    run(main())


def test_a_freed_place_goes_to_the_longest_waiter() -> None:
    async def main():
        gate = FifoGate(3)
        for _ in range(3):
            assert await gate.enter(0)
        order: list[str] = []

        async def waiter(name: str):
            assert await gate.enter(5)
            order.append(name)

        tasks = []
        for name in ("first", "second", "third"):
            tasks.append(asyncio.create_task(waiter(name)))
            await asyncio.sleep(0)  # queue them in this order
        # a newcomer that arrives while others wait does not jump the queue
        assert not await gate.enter(0)
        for _ in range(3):
            gate.leave()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        assert order == ["first", "second", "third"]
        assert gate.inside == 3 and not gate.waiters

    run(main())


def test_waiting_ends_after_the_wait_and_leaves_no_trace() -> None:
    async def main():
        gate = FifoGate(1)
        assert await gate.enter(0)
        assert not await gate.enter(0.05)
        assert not gate.waiters and gate.inside == 1

    run(main())


def test_no_more_waiters_than_the_limit() -> None:
    async def main():
        gate = FifoGate(1)
        assert await gate.enter(0)
        first = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        assert not await gate.enter(5)  # the waiting room (1) is full: refused at once
        gate.leave()
        assert await first

    run(main())


def test_a_cancelled_waiter_that_was_handed_a_place_passes_it_on() -> None:
    async def main():
        gate = FifoGate(2)
        assert await gate.enter(0) and await gate.enter(0)
        first = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        second = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        gate.leave()  # the place goes to `first` ...
        first.cancel()  # ... which is cancelled before it runs again
        (outcome,) = await asyncio.gather(first, return_exceptions=True)
        if outcome is True:  # Python 3.11's wait_for may return the result despite the cancel
            gate.leave()  # then `first` holds the place and gives it back like any holder
        else:
            assert isinstance(outcome, asyncio.CancelledError)
        assert await asyncio.wait_for(second, 1)
        assert gate.inside == 2 and not gate.waiters

    run(main())


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def main():
        gate = FifoGate(1)
        assert await gate.enter(0)
        waiter = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert not gate.waiters
        gate.leave()
        assert gate.inside == 0

    run(main())
