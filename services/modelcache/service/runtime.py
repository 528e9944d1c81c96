"""Requests to models, in the HTTP process: a bounded queue per model, a deadline per
request, cancellation, and dynamic batching of embeddings. The models themselves run in
their worker processes (``workers.py``); nothing here computes.

A request given up, because its deadline passed or its client went away, is cancelled:
still queued, it is dropped before it reaches the model; already running, the worker
stops it at its next token step (openai-whisper) or segment (faster-whisper); in a batch, it is
left out of the next forward. ``modelcache_cancelled_total`` counts them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from modelcache.service.gate import Gate
from modelcache.service.engines.base import Cancelled, InputError
from modelcache.service.metrics import Metrics
from modelcache.service.workers import WorkerDied


class Busy(Exception):
    """The model's queue is full: tell the client to come back (429 + Retry-After)."""

    def __init__(self, model: str, retry_after: int) -> None:
        super().__init__(f"model {model!r} is busy: its queue is full")
        self.model = model
        self.retry_after = retry_after


class TimedOut(Exception):
    pass


class Unavailable(Exception):
    """The model cannot take the request now (not loaded in time, no room, its process died): 503,
    with Retry-After when waiting helps (``retry_after`` None: it does not)."""

    def __init__(self, message: str, retry_after: int | None = 5, code: str = "model_unavailable") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class Runner:
    """One model's calls: at most ``queue_size`` waiting or running, each within ``timeout``.

    The model's process comes from the lifecycle at each call: it may have to be loaded
    first (the wait counts against the deadline), and while a call runs it is not unloaded.
    """

    def __init__(
        self, entry, lifecycle, *, queue_size: int, timeout: float, metrics: Metrics, wait: float = 0.0
    ) -> None:
        self.entry = entry
        self.lifecycle = lifecycle
        self.model = entry.id
        self.slots = Gate(queue_size)  # every request for this model, batched or not, holds one
        self.wait = wait
        self.timeout = timeout
        self.metrics = metrics
        self._last_seconds = 0.05

    def depth(self) -> int:
        """Requests waiting or running for this model (in its batchers too)."""
        return self.slots.inside

    def update_depth(self) -> None:
        self.metrics.queue_depth.labels(self.model).set(self.depth())

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times the last call's time."""
        return max(1, int(self._last_seconds * max(1, self.depth()) + 0.999))

    async def admit(self) -> None:
        """A slot in this model's queue: at once, or after waiting in arrival order for up to
        MODELCACHE_ADMISSION_WAIT_MS; else Busy (429)."""
        if not await self.slots.enter(self.wait):
            self.metrics.rejected.labels(self.model).inc()
            raise Busy(self.model, self.retry_after())
        self.update_depth()

    def release(self) -> None:
        self.slots.leave()
        self.update_depth()

    async def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` in the model's worker, within the deadline; cancelled with its request."""
        await self.admit()
        try:
            return await self.run(op, *args)
        finally:
            self.release()

    async def run(self, op: str, *args: Any, batch: int = 1) -> Any:
        """Run ``op`` now (the caller did the admission)."""
        from modelcache.service.lifecycle import NoRoom

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            await asyncio.wait_for(self.lifecycle.ensure_loaded(self.entry), self.timeout)
        except TimeoutError:
            if self.entry.waiting:  # its load waits for models in use to be done
                raise Unavailable(f"{self.entry.waiting}; the request waited {self.timeout:g}s",
                                  retry_after=self.lifecycle.room_retry_after(self.entry), code="no_room") from None  # fmt: skip
            raise Unavailable(f"model {self.model!r} is still loading", retry_after=max(1, int(self.entry.load_seconds))) from None
        except NoRoom as exc:
            raise Unavailable(str(exc), retry_after=exc.retry_after, code="no_room") from None
        async with self.lifecycle.using(self.entry) as worker:
            started = time.perf_counter()
            try:
                call_id, future = worker.submit(op, *args)
            except WorkerDied as exc:
                raise Unavailable(str(exc)) from None
            try:
                value, model_seconds, peak = await asyncio.wait_for(asyncio.wrap_future(future), deadline - loop.time())
                self.metrics.model_seconds.labels(self.model).observe(model_seconds)
                self.lifecycle.observe_peak(self.entry, peak)
                return value
            except TimeoutError:
                worker.cancel(call_id)
                self.metrics.cancelled.labels(self.model, "deadline").inc()
                raise TimedOut(f"model {self.model!r} did not answer within {self.timeout:g}s; the request was stopped") from None
            except asyncio.CancelledError:  # the client went away
                worker.cancel(call_id)
                self.metrics.cancelled.labels(self.model, "disconnect").inc()
                raise
            except WorkerDied as exc:
                raise Unavailable(str(exc)) from None
            finally:
                seconds = time.perf_counter() - started
                self._last_seconds = seconds
                self.metrics.inference.labels(self.model).observe(seconds)
                self.metrics.batch_size.labels(self.model).observe(batch)


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

    def __init__(self, runner: Runner, op: str, *, max_batch: int, max_wait: float) -> None:
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
                runner.metrics.cancelled.labels(runner.model, "deadline").inc()
                if runner.entry.waiting:  # its load waited for room all along
                    raise Unavailable(f"{runner.entry.waiting}; the request waited {runner.timeout:g}s",
                                      retry_after=runner.lifecycle.room_retry_after(runner.entry), code="no_room") from None  # fmt: skip
                raise TimedOut(f"model {runner.model!r} did not answer within {runner.timeout:g}s; the request was "
                               "left out of its batch") from None  # fmt: skip
            except asyncio.CancelledError:
                runner.metrics.cancelled.labels(runner.model, "disconnect").inc()
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
        batch, size = [], 0
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
            results = await self.runner.run(self.op, [item.payload for item in live],
                                            batch=sum(len(i.payload) for i in live))  # fmt: skip
        except Exception as exc:  # handed to every waiting request
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, result in zip(live, results):
            if not item.future.done():
                item.future.set_result(result)


async def unless_disconnected(receive: Callable[[], Awaitable[dict]], work: Awaitable[Any]) -> Any:
    """Await ``work``; if the client disconnects first, cancel it (which cancels the model call).

    ``receive`` is the request's ASGI receive, called only after the body was read: the next
    message it gives is ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Cancelled, TimedOut):
        pass
    raise ClientGone("the client went away; the request was stopped")


class ClientGone(Exception):
    """Nobody is waiting for the answer any more."""
