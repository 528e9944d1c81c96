"""Requests to models, in the HTTP process: a bounded queue per model, a deadline per
request, cancellation, and dynamic batching of embeddings. The models themselves run in
their processes (``models/worker.py``); nothing here computes.

A request given up, because its deadline passed or its client went away, is cancelled:
still queued, it is dropped before it reaches the model; already running, the worker
stops it at its next token step (openai-whisper) or segment (faster-whisper); in a batch, it is
left out of the next forward. ``modelcache_cancelled_total`` counts them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from modelcache.service.faults import Busy, InputError, NoRoom, TimedOut, Unavailable, WorkerDied
from modelcache.service.models.entry import ModelEntry
from modelcache.service.models.lifecycle import Lifecycle
from modelcache.service.models.ops import Op
from modelcache.service.serving.fifo import FifoGate


class Meter:
    """What the serving layer reports about each model's requests; the HTTP layer counts it
    in its metrics. The defaults do nothing."""

    def queue_changed(self, model: str, requests: int) -> None:
        """Requests waiting or running for the model now."""

    def refused(self, model: str) -> None:
        """A request found the model's queue full (429)."""

    def gave_up(self, model: str, reason: str) -> None:
        """A request was given up (``deadline`` or ``disconnect``) and stopped in the model."""

    def answered(self, model: str, *, seconds: float, model_seconds: float | None, batch: int) -> None:
        """A call to the model ended: its time from hand-over to answer, its time computing
        inside the model's process (None when it did not finish there), its inputs."""


class Runner:
    """One model's calls: at most ``queue_size`` waiting or running, each within ``timeout``.

    The model's process comes from the lifecycle at each call: it may have to be loaded
    first (the wait counts against the deadline), and while a call runs it is not unloaded.
    """

    def __init__(
        self,
        entry: ModelEntry,
        lifecycle: Lifecycle,
        *,
        queue_size: int,
        timeout: float,
        meter: Meter | None = None,
        wait: float = 0.0,
    ) -> None:
        self.entry = entry
        self.lifecycle = lifecycle
        self.model = entry.id
        self.slots = FifoGate(queue_size)  # every request for this model, batched or not, holds one
        self.wait = wait
        self.timeout = timeout
        self.meter = meter or Meter()
        self._last_seconds = 0.05

    def depth(self) -> int:
        """Requests waiting or running for this model (in its batchers too)."""
        return self.slots.inside

    def update_depth(self) -> None:
        self.meter.queue_changed(self.model, self.depth())

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times the last call's time."""
        return max(1, int(self._last_seconds * max(1, self.depth()) + 0.999))

    async def admit(self) -> None:
        """A slot in this model's queue: at once, or after waiting in arrival order for up to
        MODELCACHE_ADMISSION_WAIT_MS; else Busy (429)."""
        if not await self.slots.enter(self.wait):
            self.meter.refused(self.model)
            raise Busy(self.model, self.retry_after())
        self.update_depth()

    def release(self) -> None:
        self.slots.leave()
        self.update_depth()

    async def call(self, op: Op, *args: Any) -> Any:
        """Run ``op`` in the model's worker, within the deadline; cancelled with its request."""
        await self.admit()
        try:
            return await self.run(op, *args)
        finally:
            self.release()

    def waiting_for_room(self) -> NoRoom | None:
        """The refusal for a request whose deadline passed while its model's load waited for
        room in the memory budget (None when the load was not waiting)."""
        if not self.entry.waiting:
            return None
        return NoRoom(
            f"{self.entry.waiting}; the request waited {self.timeout:g}s",
            retry_after=self.lifecycle.room_retry_after(self.entry),
        )

    async def run(self, op: Op, *args: Any, batch: int = 1) -> Any:
        """Run ``op`` now (the caller did the admission)."""
        value: Any = None
        async with aclosing(self._run(op, args, batch, stream=False)) as items:
            async for item in items:  # no partial results: the answer alone
                value = item
        return value

    async def stream(self, op: Op, *args: Any) -> AsyncGenerator[Any, None]:
        """Run ``op`` with a slot of the queue, giving its partial results as the model sends
        them, then its answer last. Closing the iterator early (the client went away) or the
        deadline passing (TimedOut) stops the call in the model."""
        await self.admit()
        try:
            async with aclosing(self._run(op, args, 1, stream=True)) as items:
                async for item in items:
                    yield item
        finally:
            self.release()

    async def _run(self, op: Op, args: tuple, batch: int, *, stream: bool) -> AsyncGenerator[Any, None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            await asyncio.wait_for(self.lifecycle.ensure_loaded(self.entry), self.timeout)
        except TimeoutError:
            raise self.waiting_for_room() or Unavailable(
                f"model {self.model!r} is still loading", retry_after=max(1, int(self.entry.load_seconds))
            ) from None
        partial: asyncio.Queue[Any] = asyncio.Queue()

        def queue_it(item: Any) -> None:  # called in the worker's reader thread
            try:
                loop.call_soon_threadsafe(partial.put_nowait, item)
            except RuntimeError:  # the loop is closed (the service is stopping): nobody waits for it
                pass

        on_progress = queue_it if stream else None
        async with self.lifecycle.using(self.entry) as worker:
            started, model_seconds, finished = time.perf_counter(), None, False
            try:
                call_id, future = worker.submit(op, *args, on_progress=on_progress)
            except WorkerDied as exc:
                raise Unavailable(str(exc)) from None
            answer = asyncio.wrap_future(future)
            try:
                while True:
                    # the partial results were queued before the answer's callback: drained first
                    if not partial.empty():
                        yield partial.get_nowait()
                        continue
                    if answer.done():
                        break
                    getter = asyncio.ensure_future(partial.get())
                    try:
                        done, _ = await asyncio.wait(
                            {getter, answer}, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        if not getter.done():
                            getter.cancel()
                    if not done:
                        raise TimeoutError
                    if getter in done:
                        yield getter.result()
                value, model_seconds, peak = answer.result()
                self.lifecycle.observe_peak(self.entry, peak)
                finished = True
                yield value
            except TimeoutError:
                worker.cancel(call_id)
                answer.cancel()  # its late outcome (Cancelled) is nobody's
                self.meter.gave_up(self.model, "deadline")
                raise TimedOut(
                    f"model {self.model!r} did not answer within {self.timeout:g}s; the request was stopped"
                ) from None
            except (asyncio.CancelledError, GeneratorExit):  # the client went away
                if not finished:
                    worker.cancel(call_id)
                    answer.cancel()
                    self.meter.gave_up(self.model, "disconnect")
                raise
            except WorkerDied as exc:
                raise Unavailable(str(exc)) from None
            finally:
                seconds = time.perf_counter() - started
                self._last_seconds = seconds
                self.meter.answered(self.model, seconds=seconds, model_seconds=model_seconds, batch=batch)


@dataclass
class _Item:
    payload: list
    future: asyncio.Future


class Batcher:
    """Collects concurrent requests into one call of ``op`` (texts or images of several
    requests in one forward pass).

    A batch closes when it holds ``max_batch`` inputs or ``max_wait`` seconds passed since
    its first request; while the model is busy, requests queue up and form the next batch.
    At most ``queue_size`` requests wait; over that, ``Busy``.
    """

    def __init__(self, runner: Runner, op: Op, *, max_batch: int, max_wait: float) -> None:
        self.runner = runner
        self.op = op
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: deque[_Item] = deque()
        self.queued_inputs = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.runner.model}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for item in self.queue:
            if not item.future.done():
                item.future.set_exception(Unavailable("the service is shutting down"))

    async def submit(self, payload: list) -> Any:
        runner = self.runner
        await runner.admit()  # one slot of the model's queue per request, batched or not
        try:
            future = asyncio.get_running_loop().create_future()
            self.queue.append(_Item(payload, future))
            self.queued_inputs += len(payload)
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                result = await asyncio.wait_for(future, runner.timeout)
            except TimeoutError:  # the future is cancelled: left out of the next batch
                runner.meter.gave_up(runner.model, "deadline")
                room = runner.waiting_for_room()  # its load waited for room all along
                if room is not None:
                    raise room from None
                raise TimedOut(
                    f"model {runner.model!r} did not answer within {runner.timeout:g}s; the request was "
                    "left out of its batch"
                ) from None
            except asyncio.CancelledError:
                runner.meter.gave_up(runner.model, "disconnect")
                raise
        finally:
            runner.release()
        if isinstance(result, InputError):
            raise result
        return result

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.queue:
                deadline = loop.time() + self.max_wait
                while self.queued_inputs < self.max_batch and loop.time() < deadline:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                    except TimeoutError:
                        break
                await self._run(self._take())

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        while self.queue and (not batch or size + len(self.queue[0].payload) <= self.max_batch):
            item = self.queue.popleft()
            if item.future.done():  # given up while waiting: never reaches the model
                self.queued_inputs -= len(item.payload)
                continue
            batch.append(item)
            size += len(item.payload)
        self.queued_inputs -= size
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        try:
            results = await self.runner.run(
                self.op, [item.payload for item in live], batch=sum(len(i.payload) for i in live)
            )
        except Exception as exc:  # handed to every waiting request
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, result in zip(live, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
