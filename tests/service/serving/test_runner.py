"""serving/runner.py without models: how a Batcher takes its next batch from the queue, how
a batch's answers reach its requests, and a Runner's queue of one model (stand-ins for the
model's entry, lifecycle and process; nothing starts)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from modelcache.service.faults import Busy, InputError, TimedOut, Unavailable
from modelcache.service.models.ops import Op
from modelcache.service.serving.runner import Batcher, Meter, Runner, _Item


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def batcher(max_batch: int = 4, runner: Any = None) -> Batcher:
    return Batcher(runner or SimpleNamespace(model="m"), Op.EMBED, max_batch=max_batch, max_wait=0.0)


def enqueue(b: Batcher, loop: asyncio.AbstractEventLoop, *sizes: int) -> list[_Item]:
    """Queue one request per size, the way ``submit`` does (``queued_inputs`` included)."""
    items = []
    for i, size in enumerate(sizes):
        item = _Item([f"r{i}-{j}" for j in range(size)], loop.create_future())
        b.queue.append(item)
        b.queued_inputs += size
        items.append(item)
    return items


def remaining(b: Batcher) -> int:
    return sum(len(item.payload) for item in b.queue)


# --- Batcher._take --------------------------------------------------------------------------


def test_take_fills_the_batch_up_to_max_batch_inputs_in_arrival_order(loop) -> None:
    b = batcher(max_batch=4)
    items = enqueue(b, loop, 1, 2, 1, 3)
    assert b._take() == items[:3]  # 1 + 2 + 1 = 4: the 3-input request waits for the next batch
    assert list(b.queue) == items[3:]
    assert b.queued_inputs == remaining(b) == 3
    assert b._take() == items[3:]
    assert not b.queue and b.queued_inputs == 0
    assert b._take() == [] and b.queued_inputs == 0  # an empty queue gives an empty batch


def test_take_never_splits_a_request_and_stops_at_the_first_that_does_not_fit(loop) -> None:
    b = batcher(max_batch=4)
    items = enqueue(b, loop, 3, 2, 1)
    # 3 + 2 > 4: the batch closes with the first request, even though the 1-input one would fit
    assert b._take() == items[:1]
    assert [len(i.payload) for i in b.queue] == [2, 1]
    assert b.queued_inputs == remaining(b) == 3
    assert b._take() == items[1:]  # 2 + 1
    assert b.queued_inputs == 0


def test_a_first_request_larger_than_max_batch_is_taken_alone(loop) -> None:
    b = batcher(max_batch=4)
    items = enqueue(b, loop, 6, 1)
    assert b._take() == items[:1]
    assert b.queued_inputs == remaining(b) == 1
    assert b._take() == items[1:]
    assert b.queued_inputs == 0


def test_requests_given_up_while_queued_are_dropped_and_do_not_count(loop) -> None:
    b = batcher(max_batch=4)
    items = enqueue(b, loop, 2, 1, 2, 1, 2)
    items[1].future.cancel()  # its deadline passed while it waited
    items[3].future.set_exception(TimedOut("gone"))  # done in any other way: also given up
    # the cancelled request is dropped without taking room: 2 + 2 fill the batch
    assert b._take() == [items[0], items[2]]
    assert list(b.queue) == items[3:]
    assert b.queued_inputs == remaining(b) == 3
    # the other given-up request is dropped the same way on the next take
    assert b._take() == [items[4]]
    assert not b.queue and b.queued_inputs == 0
    assert isinstance(items[3].future.exception(), TimedOut)


def test_a_queue_of_requests_all_given_up_empties_to_nothing(loop) -> None:
    b = batcher(max_batch=2)
    items = enqueue(b, loop, 1, 5, 1)
    for item in items:
        item.future.cancel()
    assert b._take() == []
    assert not b.queue and b.queued_inputs == 0


def test_a_given_up_request_in_front_of_a_large_one_leaves_the_large_one_alone(loop) -> None:
    b = batcher(max_batch=4)
    items = enqueue(b, loop, 1, 9, 1)
    items[0].future.cancel()
    assert b._take() == [items[1]]  # first live request, larger than max_batch: taken alone
    assert b.queued_inputs == remaining(b) == 1


# --- Batcher._run and submit, with a stand-in runner ------------------------------------------


class FakeRunner:
    """What a Batcher uses of its Runner; ``run`` answers each request with its inputs upper-cased."""

    def __init__(self, *, fail: Exception | None = None, timeout: float = 5.0) -> None:
        self.model = "m"
        self.timeout = timeout
        self.meter = RecordingMeter()
        self.fail = fail
        self.calls: list[tuple[Op, list, int]] = []
        self.admitted = 0
        self.released = 0

    async def admit(self) -> None:
        self.admitted += 1

    def release(self) -> None:
        self.released += 1

    def waiting_for_room(self) -> None:
        return None

    async def run(self, op: Op, requests: list, *, batch: int) -> list:
        self.calls.append((op, requests, batch))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [[x.upper() for x in r] if "bad" not in r else InputError("bad input") for r in requests]


class RecordingMeter(Meter):
    def __init__(self) -> None:
        self.gave_up_reasons: list[str] = []
        self.refusals = 0

    def gave_up(self, model: str, reason: str) -> None:
        self.gave_up_reasons.append(reason)

    def refused(self, model: str) -> None:
        self.refusals += 1


def test_run_answers_each_live_request_with_its_own_result_and_skips_the_given_up(loop) -> None:
    runner = FakeRunner()
    b = batcher(runner=runner)
    items = enqueue(b, loop, 1, 2, 1)
    items[1].future.cancel()
    loop.run_until_complete(b._run(b._take()))
    assert runner.calls == [(Op.EMBED, [["r0-0"], ["r2-0"]], 2)]  # the batch size counts live inputs only
    assert items[0].future.result() == ["R0-0"]
    assert items[2].future.result() == ["R2-0"]


def test_run_hands_a_failure_to_every_request_of_the_batch(loop) -> None:
    runner = FakeRunner(fail=Unavailable("the process died"))
    b = batcher(runner=runner)
    items = enqueue(b, loop, 1, 1)
    loop.run_until_complete(b._run(b._take()))
    for item in items:
        with pytest.raises(Unavailable, match="the process died"):
            item.future.result()


def test_run_of_a_batch_given_up_entirely_does_not_call_the_model(loop) -> None:
    runner = FakeRunner()
    b = batcher(runner=runner)
    items = enqueue(b, loop, 1)
    batch = b._take()
    items[0].future.cancel()  # given up after it was taken, before the call
    loop.run_until_complete(b._run(batch))
    assert runner.calls == []


def test_concurrent_submits_are_batched_and_each_gets_its_answer() -> None:
    runner = FakeRunner()

    async def main():
        b = Batcher(runner, Op.EMBED, max_batch=8, max_wait=0.05)
        b.start()
        try:
            return await asyncio.gather(b.submit(["a"]), b.submit(["b", "c"]), b.submit(["d"])), b
        finally:
            await b.stop()

    answers, b = asyncio.run(main())
    assert answers == [["A"], ["B", "C"], ["D"]]
    assert len(runner.calls) == 1 and runner.calls[0][2] == 4  # one forward for all three
    assert runner.admitted == runner.released == 3  # every request held one slot, and gave it back
    assert b.queued_inputs == 0 and not b.queue


def test_a_request_whose_input_is_refused_fails_alone() -> None:
    runner = FakeRunner()

    async def main():
        b = Batcher(runner, Op.EMBED, max_batch=8, max_wait=0.05)
        b.start()
        try:
            return await asyncio.gather(b.submit(["ok"]), b.submit(["bad"]), return_exceptions=True)
        finally:
            await b.stop()

    good, bad = asyncio.run(main())
    assert good == ["OK"]
    assert isinstance(bad, InputError)
    assert runner.released == 2


def test_a_request_past_its_deadline_times_out_and_is_left_out() -> None:
    runner = FakeRunner(timeout=0.01)

    async def main():
        b = Batcher(runner, Op.EMBED, max_batch=8, max_wait=0.0)
        b._wakeup = asyncio.Event()  # no batching loop: nothing ever answers
        with pytest.raises(TimedOut, match="left out of its batch"):
            await b.submit(["x"])
        return b

    b = asyncio.run(main())
    assert runner.meter.gave_up_reasons == ["deadline"]
    assert runner.released == 1
    assert len(b.queue) == 1 and b.queue[0].future.cancelled()  # still queued, but given up
    assert b._take() == [] and b.queued_inputs == 0


def test_stop_fails_the_requests_still_queued(loop) -> None:
    b = batcher()
    items = enqueue(b, loop, 1, 1)
    items[0].future.cancel()
    loop.run_until_complete(b.stop())
    assert items[0].future.cancelled()
    with pytest.raises(Unavailable, match="shutting down"):
        items[1].future.result()


# --- Runner's queue, without a model --------------------------------------------------------


def make_runner(queue_size: int = 2, *, wait: float = 0.0) -> tuple[Runner, RecordingMeter]:
    meter = RecordingMeter()
    entry = SimpleNamespace(id="minilm", waiting=None, load_seconds=0.0)
    runner = Runner(entry, SimpleNamespace(), queue_size=queue_size, timeout=1.0, meter=meter, wait=wait)
    return runner, meter


def test_runner_admits_up_to_its_queue_size_then_refuses_with_a_retry_after() -> None:
    runner, meter = make_runner(queue_size=2)

    async def main():
        await runner.admit()
        await runner.admit()
        assert runner.depth() == 2
        with pytest.raises(Busy) as info:
            await runner.admit()
        return info.value

    busy = asyncio.run(main())
    assert busy.model == "minilm" and busy.retry_after >= 1
    assert meter.refusals == 1
    runner.release()
    assert runner.depth() == 1


def test_retry_after_grows_with_the_queue_and_the_last_call_time() -> None:
    runner, _ = make_runner(queue_size=10)
    runner._last_seconds = 0.05
    assert runner.retry_after() == 1  # never less than a second
    runner._last_seconds = 2.5
    assert runner.retry_after() == 3  # one request's time, rounded up
    runner.slots.inside = 4
    assert runner.retry_after() == 10  # four ahead


# --- Runner.stream: partial results, then the answer -----------------------------------------


class StreamingWorker:
    """A stand-in model process: sends ``parts`` from another thread (as the worker's reader
    thread does), each after ``pause`` seconds, then the answer; records cancels."""

    def __init__(self, parts: list[str], pause: float = 0.0) -> None:
        self.parts, self.pause, self.cancelled = parts, pause, []

    def submit(self, op, *args, on_progress=None):
        import concurrent.futures
        import threading

        future: concurrent.futures.Future = concurrent.futures.Future()

        def work() -> None:
            for part in self.parts:
                time.sleep(self.pause)
                if self.cancelled:
                    return
                on_progress(part)
            future.set_result(("answer", 0.01, 0))

        threading.Thread(target=work, daemon=True).start()
        return 7, future

    def cancel(self, call_id: int) -> None:
        self.cancelled.append(call_id)


class StandInLifecycle:
    def __init__(self, worker: StreamingWorker) -> None:
        self.worker = worker

    async def ensure_loaded(self, _entry) -> None:
        pass

    def using(self, _entry):
        import contextlib

        @contextlib.asynccontextmanager
        async def held():
            yield self.worker

        return held()

    def observe_peak(self, _entry, _peak) -> None:
        pass


def stream_runner(worker: StreamingWorker, timeout: float = 5.0) -> tuple[Runner, RecordingMeter]:
    meter = RecordingMeter()
    entry = SimpleNamespace(id="whisper", waiting=None, load_seconds=0.0)
    return Runner(entry, StandInLifecycle(worker), queue_size=2, timeout=timeout, meter=meter), meter


def test_stream_gives_every_partial_result_in_order_then_the_answer() -> None:
    worker = StreamingWorker([f"segment {i}" for i in range(50)])
    runner, _ = stream_runner(worker)

    async def main():
        got = [item async for item in runner.stream(Op.TRANSCRIBE, b"audio", {})]
        return got, runner.depth()

    got, depth = asyncio.run(main())
    assert got == [f"segment {i}" for i in range(50)] + ["answer"]
    assert depth == 0 and worker.cancelled == []  # the slot is given back; nothing was stopped


def test_closing_a_stream_early_stops_the_call_in_the_model() -> None:
    worker = StreamingWorker(["a", "b", "c", "d"], pause=0.05)
    runner, meter = stream_runner(worker)

    async def main():
        items = runner.stream(Op.TRANSCRIBE, b"audio", {})
        first = await anext(items)
        await items.aclose()  # the client went away
        return first, runner.depth()

    first, depth = asyncio.run(main())
    assert first == "a" and worker.cancelled == [7] and depth == 0
    assert meter.gave_up_reasons == ["disconnect"]


def test_a_stream_past_its_deadline_times_out_after_what_it_gave() -> None:
    worker = StreamingWorker(["a", "b", "c", "d"], pause=0.2)
    runner, meter = stream_runner(worker, timeout=0.5)

    async def main():
        got = []
        with pytest.raises(TimedOut):
            async for item in runner.stream(Op.TRANSCRIBE, b"audio", {}):
                got.append(item)
        return got

    got = asyncio.run(main())
    assert got == ["a", "b"] and worker.cancelled == [7] and meter.gave_up_reasons == ["deadline"]
