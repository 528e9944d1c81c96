"""Turn detection on a live stream: where speech starts and ends, with a stand-in for
Silero's probability (loudness) for the logic, and the real Silero model on real speech."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from modelcache.service.engines.vad import Turn, TurnDetector, TurnOptions, model_file

RATE = 24_000


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * 220 * t)


def pcm(*parts: np.ndarray) -> bytes:
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


def loudness(window: np.ndarray) -> float:
    return 0.9 if np.sqrt(np.mean(window**2)) > 0.05 else 0.05


def feed_in_pieces(detector: TurnDetector, data: bytes, piece: int) -> list[Turn]:
    turns = []
    for at in range(0, len(data), piece):
        turns += detector.feed(data[at : at + piece])
    return turns


def test_a_phrase_starts_with_its_padding_and_ends_after_the_silence() -> None:
    silence = np.zeros(RATE)
    data = pcm(silence, tone(2.0), silence, silence)
    options = TurnOptions(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    for piece in (1, 960, 4801, len(data)):  # any split of the stream decides the same (odd sizes too)
        turns = feed_in_pieces(TurnDetector(options, loudness), data, piece * 2)
        assert len(turns) == 2, (piece, turns)
        start, stop = turns
        assert stop.end_ms is not None and start.end_ms is None
        assert abs(start.start_ms - 700) <= 40 and stop.start_ms == start.start_ms  # 1 s in, minus 300 ms
        assert abs(stop.end_ms - 3500) <= 40  # where the silence began, plus the 500 ms that ended the phrase


def test_short_pauses_do_not_end_a_phrase() -> None:
    silence = np.zeros(RATE)
    data = pcm(silence, tone(1.0), np.zeros(RATE // 5), tone(1.0), silence)
    turns = TurnDetector(TurnOptions(silence_duration_ms=500), loudness).feed(data)
    assert [t.end_ms is None for t in turns] == [True, False]
    quick = TurnDetector(TurnOptions(silence_duration_ms=100), loudness).feed(data)
    assert [t.end_ms is None for t in quick] == [True, False, True, False]  # two phrases at 100 ms


def test_silence_alone_gives_nothing() -> None:
    assert TurnDetector(TurnOptions(), loudness).feed(pcm(np.zeros(RATE * 3))) == []


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng makes the test speech")
def test_silero_finds_a_spoken_phrase(tmp_path) -> None:
    import soundfile as sf

    from tests.support.whisper_ckpt import speak

    assert model_file().is_file()  # from the silero-vad wheel
    phrase, rate = sf.read(speak("Please call me tomorrow morning.", tmp_path / "p.wav"), dtype="float32")
    at24 = np.interp(np.arange(0, len(phrase), rate / RATE), np.arange(len(phrase)), phrase)
    silence = np.zeros(RATE)
    turns = TurnDetector(TurnOptions()).feed(pcm(silence, at24, silence))
    assert len(turns) == 2 and turns[1].end_ms is not None
    length_ms = len(phrase) / rate * 1000
    assert 400 <= turns[0].start_ms <= 1100 and abs(turns[1].end_ms - (1000 + length_ms + 500)) < 600
