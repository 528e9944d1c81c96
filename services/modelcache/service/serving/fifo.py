"""A FIFO gate: at most ``limit`` holders at once, up to ``limit`` more waiting in order.

Used twice: by admission, per route group before the body is read, and by each model's
runner, per model, so that a freed place always goes to the request that waited longest.
"""

from __future__ import annotations

import asyncio
from collections import deque


class FifoGate:
    """At most ``limit`` inside; up to ``limit`` more wait in FIFO order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.waiters: deque[asyncio.Future] = deque()

    async def enter(self, wait: float) -> bool:
        if self.inside < self.limit and not self.waiters:
            self.inside += 1
            return True
        if len(self.waiters) >= self.limit or wait <= 0:
            return False
        slot = asyncio.get_running_loop().create_future()
        self.waiters.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), wait)
            return True
        except TimeoutError:
            if slot.done():  # handed a slot at the last moment: take it
                return True
            self._drop(slot)
            return False
        except asyncio.CancelledError:
            if slot.done():
                self.leave()  # a slot we will not use goes on to the next waiter
            else:
                self._drop(slot)
            raise

    def _drop(self, slot: asyncio.Future) -> None:
        slot.cancel()
        try:
            self.waiters.remove(slot)
        except ValueError:
            pass

    def leave(self) -> None:
        while self.waiters:
            slot = self.waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes straight to the longest waiter
                return
        self.inside -= 1
