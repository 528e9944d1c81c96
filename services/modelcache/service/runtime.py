"""Inference off the event loop: a bounded queue per model, timeouts, dynamic batching for
embeddings, and the executor the models run on.

`modelcache serve` runs every model on the process's main thread (MainThreadExecutor) and
the HTTP server in a second thread: torch's OpenMP kernels run 1.5-1.8x slower when called
from a thread other than the process's first one (measured here on a 2-core VM: a MiniLM
forward takes 8 ms on the main thread, 14 ms on a worker thread). Without it (tests that
build the app in-process) each model gets its own worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
import queue
import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelcache.service.metrics import Metrics


class Busy(Exception):
    """The model's queue is full: tell the client to come back (429 + Retry-After)."""

    def __init__(self, model: str, retry_after: int) -> None:
        super().__init__(f"model {model!r} is busy: its queue is full")
        self.model = model
        self.retry_after = retry_after


class TimedOut(Exception):
    pass


class MainThreadExecutor(Executor):
    """Runs submitted calls, in order, on the thread that calls :meth:`run` (the main thread)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._closed.is_set():
            raise RuntimeError("the model executor is shut down")
        future: Future = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def run(self, keep_going: Callable[[], bool]) -> None:
        """Serve jobs until ``keep_going()`` is false (checked at least every 0.2 s)."""
        while keep_going():
            try:
                future, fn, args, kwargs = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the waiting request
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed.set()
        while cancel_futures:
            try:
                future, *_ = self._jobs.get_nowait()
            except queue.Empty:
                break
            future.cancel()


class Runner:
    """Runs one model's calls one at a time on ``executor``; at most ``queue_size`` wait."""

    def __init__(
        self, model: str, *, queue_size: int, timeout: float, metrics: Metrics, executor: Executor | None = None
    ) -> None:
        self.model = model
        self.queue_size = queue_size
        self.timeout = timeout
        self.metrics = metrics
        self.owns_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{model}"[:30])
        self.pending = 0  # submitted and not finished (the thread may outlive a timed-out request)
        self._last_seconds = 1.0

    def _retry_after(self) -> int:
        return max(1, int(self._last_seconds * max(1, self.pending) / 2 + 0.999))

    def _admit(self, weight: int = 1) -> None:
        if self.pending + weight > self.queue_size:
            self.metrics.rejected.labels(self.model).inc()
            raise Busy(self.model, self._retry_after())
        self.pending += weight
        self.metrics.queue_depth.labels(self.model).set(self.pending)

    def _release(self, weight: int = 1) -> None:
        self.pending -= weight
        self.metrics.queue_depth.labels(self.model).set(self.pending)

    def _timed(self, fn: Callable[..., Any], *args: Any, batch: int = 1) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            seconds = time.perf_counter() - started
            self._last_seconds = seconds
            self.metrics.inference.labels(self.model).observe(seconds)
            self.metrics.batch_size.labels(self.model).observe(batch)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._admit()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, self._timed, fn, *args)
        future.add_done_callback(lambda _f: self._release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise TimedOut(f"model {self.model!r} did not answer within {self.timeout:g}s") from None

    def close(self) -> None:
        if self.owns_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future


class Batcher:
    """Collects concurrent embedding requests into one forward pass.

    A batch closes when it holds ``max_batch`` inputs or ``max_wait`` seconds passed since
    its first request; while the model is busy, requests queue up and form the next batch.
    At most ``queue_size`` requests wait; over that, ``Busy``.
    """

    def __init__(self, runner: Runner, fn: Callable[[list[str]], Any], *, max_batch: int, max_wait: float) -> None:
        self.runner = runner
        self.fn = fn
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
                item.future.set_exception(TimedOut("the service is shutting down"))

    async def submit(self, texts: list[str]) -> Any:
        runner = self.runner
        if len(self.queue) >= runner.queue_size:
            runner.metrics.rejected.labels(runner.model).inc()
            raise Busy(runner.model, runner._retry_after())
        future = asyncio.get_running_loop().create_future()
        self.queue.append(_Item(texts, future))
        self.queued_inputs += len(texts)
        runner.metrics.queue_depth.labels(runner.model).set(self.queued_inputs)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), runner.timeout)
        except TimeoutError:
            raise TimedOut(f"model {runner.model!r} did not answer within {runner.timeout:g}s") from None

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.queue:
                deadline = loop.time() + self.max_wait
                while self._count() < self.max_batch and loop.time() < deadline:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                    except TimeoutError:
                        break
                batch = self._take()
                await self._run(batch)

    def _count(self) -> int:
        return self.queued_inputs

    def _take(self) -> list[_Item]:
        batch, size = [], 0
        while self.queue and (not batch or size + len(self.queue[0].texts) <= self.max_batch):
            item = self.queue.popleft()
            batch.append(item)
            size += len(item.texts)
        self.queued_inputs -= size
        self.runner.metrics.queue_depth.labels(self.runner.model).set(self.queued_inputs)
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        texts = [t for item in live for t in item.texts]
        loop = asyncio.get_running_loop()
        runner = self.runner
        try:
            vectors, tokens = await loop.run_in_executor(runner.executor, lambda: runner._timed(self.fn, texts, batch=len(texts)))
        except Exception as exc:  # handed to every waiting request
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in live:
            end = start + len(item.texts)
            if not item.future.done():
                item.future.set_result((vectors[start:end], tokens[start:end]))
            start = end
