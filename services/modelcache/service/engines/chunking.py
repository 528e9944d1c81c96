"""Long audio cut at silences (``chunking_strategy``): Silero VAD finds the speech, the
speech is grouped into chunks of at most one Whisper window, and the chunks are decoded
in batches that grow (1, 2, 4, … up to the engine's batch size) so that the first words
come back after one short chunk and the rest at full batch speed. Stream or not, a
request is decoded the same way, so a streamed answer equals the unstreamed one.

Silero's weights come from the ``silero-vad`` wheel installed in the image (never a hub).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import numpy as np

from modelcache.service.engines.base import SAMPLE_RATE

WINDOW = 30.0  # seconds of audio in one Whisper window
FIRST_CHUNK = 5.0  # the first chunk is kept short: the first words come back sooner (0.6 s of decoding, not 1.4 s)
MIN_GAP = 0.0  # chunks never overlap

T = TypeVar("T")


@dataclass(frozen=True)
class VadOptions:
    """OpenAI's ``server_vad`` chunking fields (``"auto"`` is these defaults)."""

    threshold: float = 0.5  # speech probability above which a 32 ms window is speech
    prefix_padding_ms: int = 300  # audio kept before (and after) each stretch of speech
    silence_duration_ms: int = 500  # a silence at least this long ends a stretch of speech


def speech_regions(audio: np.ndarray, vad: VadOptions) -> list[tuple[float, float]]:
    """Where the speech is, in seconds, by Silero VAD; no stretch longer than a window."""
    import torch
    from silero_vad import get_speech_timestamps

    found = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
        _silero(),
        threshold=vad.threshold,
        sampling_rate=SAMPLE_RATE,
        min_silence_duration_ms=vad.silence_duration_ms,
        speech_pad_ms=vad.prefix_padding_ms,
        max_speech_duration_s=WINDOW - 1.0,
    )
    return [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in found]


_model = None


def _silero():
    """Silero VAD's model from the installed package (loaded once per model process)."""
    global _model
    if _model is None:
        from silero_vad import load_silero_vad

        _model = load_silero_vad(onnx=True)  # ONNX Runtime, one thread: 2.5x faster than its TorchScript here
    return _model


def chunks_of(audio: np.ndarray, vad: VadOptions) -> Iterator[tuple[float, float]]:
    """The chunks of a recording, found as they are needed: the first from the first window
    alone, so that its decoding (and the first words of a stream) need not wait until the
    whole recording was searched for speech."""
    window = int(WINDOW * SAMPLE_RATE)
    first = plan_chunks(speech_regions(audio[:window], vad))[:1]
    if first:
        yield first[0]
    done = first[0][1] if first else min(len(audio), window) / SAMPLE_RATE
    rest = speech_regions(audio[int(done * SAMPLE_RATE) :], vad)
    yield from plan_chunks([(s + done, e + done) for s, e in rest], first=WINDOW)


def plan_chunks(
    regions: list[tuple[float, float]], *, window: float = WINDOW, first: float = FIRST_CHUNK
) -> list[tuple[float, float]]:
    """Consecutive speech regions grouped into chunks: a chunk spans from its first region's
    start to its last region's end and is at most ``window`` seconds long (the first one at
    most ``first``, unless a single region is longer). The silences inside a chunk stay in
    it (Whisper copes with short pauses); those between chunks are skipped."""
    chunks: list[tuple[float, float]] = []
    for start, end in sorted(regions):
        if end <= start:
            continue
        if chunks:
            limit = first if len(chunks) == 1 else window
            cs, ce = chunks[-1]
            if end - cs <= limit:
                chunks[-1] = (cs, max(ce, end))
                continue
            start = max(start, ce + MIN_GAP)
        chunks.append((start, end))
    return chunks


def batches(items: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """The items in batches of 1, 2, 4, … then ``batch_size`` each (taken as they come)."""
    it, size = iter(items), 1
    while batch := list(islice(it, min(size, batch_size))):
        yield batch
        size *= 2
