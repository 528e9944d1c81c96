"""service/workers.py and the gate's package check, without HTTP."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

from modelcache.layout import Layout
from modelcache.service.engines.base import LoadSpec
from modelcache.service.faults import Cancelled
from modelcache.service.models.ops import Op
from modelcache.service.models.worker import ModelWorker, WorkerSpec, _Control


def test_control_skips_calls_cancelled_while_queued_and_stops_the_running_one() -> None:
    control = _Control()
    control.cancel(2)  # still queued
    assert control.begin(1) and not control.stop_requested()
    control.cancel(1)
    assert control.stop_requested()  # the running call is told to stop
    control.end()
    assert not control.begin(2)  # skipped, never run
    assert control.begin(3) and not control.stop_requested()
    control.end()
    control.cancel(3)  # already done: nothing to remember
    assert control.begin(4)


def whisper_worker(volume: Path) -> ModelWorker:
    """openai-whisper tiny.en from the test volume, in a worker process (started)."""
    path = Layout(volume).whisper / "tiny.en.pt"
    spec = WorkerSpec("w", "asr", "openai-whisper", LoadSpec("w", path, "cpu", "openai-whisper", "tiny.en"), "cpu")
    worker = ModelWorker(spec)
    worker.start()
    return worker


@pytest.mark.slow  # starts a model worker process
def test_a_queued_transcription_given_up_never_runs(_warm_template: Path, speech) -> None:
    sf = pytest.importorskip("soundfile")  # the dev extra
    audio, rate = sf.read(io.BytesIO(speech[0]), dtype="float32")
    long = io.BytesIO()
    sf.write(long, np.tile(audio, 10), rate, format="WAV")
    worker = whisper_worker(_warm_template)
    try:
        assert worker.wait_ready(), worker.failure
        loaded = worker.info["peak_bytes"]
        assert loaded > 10 * 2**20  # its private memory after loading, measured by the process itself
        first_id, first = worker.submit(Op.TRANSCRIBE, long.getvalue(), {})
        second_id, second = worker.submit(Op.TRANSCRIBE, long.getvalue(), {})
        time.sleep(0.5)
        worker.cancel(second_id)  # queued behind the first
        worker.cancel(first_id)  # running: stops at its next window
        with pytest.raises(Cancelled):
            first.result(timeout=60)
        started = time.monotonic()
        with pytest.raises(Cancelled):
            second.result(timeout=60)
        assert time.monotonic() - started < 1.0  # skipped, not transcribed
        _, third = worker.submit(Op.TRANSCRIBE, speech[0], {})
        transcript, seconds, peak = third.result(timeout=60)
        assert "fox" in transcript.text.lower() and seconds > 0  # the worker is fine
        assert peak > loaded  # decoding needs buffers beyond the weights: the call's peak says so
    finally:
        worker.stop()


@pytest.mark.slow  # starts a model worker process
def test_a_worker_that_cannot_load_says_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    worker = ModelWorker(
        WorkerSpec("w", "asr", "openai-whisper", LoadSpec("w", broken, "cpu", "openai-whisper", "tiny.en"), "cpu")
    )
    worker.start()
    assert not worker.wait_ready(timeout=120)
    assert worker.failure and "Error" in worker.failure
    worker.stop()


def test_the_gate_names_a_missing_engine_package_and_its_install_command(monkeypatch) -> None:
    import importlib.util

    from modelcache.plan import build_plan
    from modelcache.service import startup
    from modelcache.settings import Settings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "whisper" else real(name, *a))
    lines = startup.missing_packages(list(build_plan(Settings.from_env({})).artifacts))
    assert len(lines) == 1
    assert (
        "whisper/base needs whisper (openai-whisper)" in lines[0] and "pip install --no-deps openai-whisper" in lines[0]
    )


@pytest.mark.slow  # starts a model worker process
def test_a_streamed_transcription_sends_each_segment_before_its_answer(_warm_template: Path, speech) -> None:
    """openai-whisper offers no per-segment callback: the engine reads the finished segments
    between windows. Cut at silences, the phrases come back one by one, and they are the
    answer's segments, in order."""
    sf = pytest.importorskip("soundfile")
    audio, rate = sf.read(io.BytesIO(speech[0]), dtype="float32")
    pause = np.zeros(rate * 2, np.float32)
    three = io.BytesIO()
    sf.write(three, np.concatenate([audio, pause, audio, pause, audio]), rate, format="WAV")
    worker = whisper_worker(_warm_template)
    try:
        assert worker.wait_ready(), worker.failure
        received: list = []
        answered_when: list[int] = []

        def progress(segment) -> None:
            received.append(segment)

        _, future = worker.submit(
            Op.TRANSCRIBE, three.getvalue(), {"stream": True, "chunking": {}}, on_progress=progress
        )
        future.add_done_callback(lambda _f: answered_when.append(len(received)))
        transcript, _seconds, _peak = future.result(timeout=120)
        assert received == transcript.segments and answered_when == [len(received)]
        assert len(received) >= 3 and transcript.text.lower().count("fox") == 3
        starts = [s.start for s in received]
        assert starts == sorted(starts) and received[-1].end > 2 * len(audio) / rate  # times of the recording
    finally:
        worker.stop()
