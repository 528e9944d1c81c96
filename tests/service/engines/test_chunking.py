"""Cutting long audio at silences, and text deltas (pure logic, plus Silero VAD on real speech)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from modelcache.service.engines.base import Deltas
from modelcache.service.engines.chunking import VadOptions, batches, chunks_of, plan_chunks, speech_regions


def test_deltas_add_up_to_the_text_so_far() -> None:
    deltas = Deltas()
    sent = [deltas.add(t) for t in (" Hello", " world. ", "", "Next one", " ")]
    assert sent == ["Hello", " world.", "", " Next one", ""]
    assert "".join(sent) + deltas.rest("Hello world. Next one") == "Hello world. Next one"
    late = Deltas()
    assert late.add(" ") == "" and late.rest("Hi") == "Hi"  # nothing streamed: the text comes whole


def test_regions_join_into_chunks_of_at_most_a_window() -> None:
    regions = [(0.0, 3.0), (4.0, 6.0), (8.0, 9.5), (11.0, 20.0), (21.0, 35.0), (36.0, 40.0), (70.0, 71.0)]
    chunks = plan_chunks(regions, window=30.0, first=10.0)
    assert chunks == [(0.0, 9.5), (11.0, 40.0), (70.0, 71.0)]
    assert all(e - s <= 30.0 for s, e in chunks)
    assert plan_chunks([]) == [] and plan_chunks([(5.0, 5.0)]) == []
    # a region longer than the first chunk's limit is a chunk of its own
    assert plan_chunks([(0.0, 12.0), (12.5, 14.0)], first=10.0) == [(0.0, 12.0), (12.5, 14.0)]
    # overlapping regions (padding) never make overlapping chunks
    assert plan_chunks([(0.0, 9.0), (8.5, 25.0)], first=10.0) == [(0.0, 9.0), (9.0, 25.0)]


def test_batches_grow_to_the_batch_size() -> None:
    assert [len(b) for b in batches(range(20), 8)] == [1, 2, 4, 8, 5]
    assert list(batches("abc", 8)) == [["a"], ["b", "c"]]
    assert list(batches([], 8)) == []
    assert [i for b in batches(range(50), 4) for i in b] == list(range(50))

    taken: list[int] = []

    def found():  # chunks found while decoding goes on: no more is taken than the batch needs
        for i in range(10):
            taken.append(i)
            yield i

    first = next(batches(found(), 8))
    assert first == [0] and taken == [0]


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng makes the test speech")
def test_silero_finds_the_phrases_between_silences(tmp_path) -> None:
    import soundfile as sf

    from tests.support.whisper_ckpt import speak

    phrase, rate = sf.read(speak("Please call me tomorrow morning.", tmp_path / "p.wav"), dtype="float32")
    silence = np.zeros(3 * rate, np.float32)
    audio = np.concatenate([silence, phrase, silence, phrase, silence])
    regions = speech_regions(audio, VadOptions(prefix_padding_ms=100))
    assert len(regions) == 2
    length = len(phrase) / rate
    for (start, end), expected in zip(regions, (3.0, 6.0 + length), strict=True):
        assert abs(start - expected) < 0.4 and abs((end - start) - length) < 0.8
    assert speech_regions(np.zeros(5 * rate, np.float32), VadOptions()) == []
    # found a window at a time, the chunks are those of the whole recording
    long = np.concatenate([audio] * 8)
    chunks = list(chunks_of(long, VadOptions(prefix_padding_ms=100)))
    assert chunks == sorted(chunks) and all(e - s <= 30.0 for s, e in chunks)
    assert chunks[0][1] <= 5.5 and sum(e - s for s, e in chunks) > 0.9 * 16 * length
    assert list(chunks_of(np.zeros(40 * rate, np.float32), VadOptions())) == []
