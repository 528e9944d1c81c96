"""What every engine offers, whatever library runs it. No HTTP, no downloads."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from modelcache.service.faults import InputError

SAMPLE_RATE = 16_000
# Decoding defaults of openai-whisper's command-line tool, used by both ASR engines: beam
# search of 5, and temperature fallback when a decode looks like a failure.
BEAM_SIZE = 5
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


#: polled by long-running engines between units of work (a Whisper window, a segment)
StopCheck = Callable[[], bool]
#: given each segment of a transcript as soon as it is decoded (streaming)
SegmentSink = Callable[["Segment"], None]


def never() -> bool:
    return False


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[Segment]
    task: str = "transcribe"  # what was done: an English-only model never translates

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


def joined_text(segments: list[Segment]) -> str:
    """A transcript's text: its segments' texts joined, without the outer spaces (what the
    streamed deltas add up to)."""
    return "".join(s.text for s in segments).strip()


class Deltas:
    """Text deltas from segments as they come: the deltas add up to :func:`joined_text` of
    the segments so far (a space that may end the text is held back until more follows)."""

    def __init__(self) -> None:
        self.raw = ""
        self.sent = ""

    def add(self, text: str) -> str:
        self.raw += text
        visible = self.raw.strip()
        delta = visible[len(self.sent) :] if visible.startswith(self.sent) else ""
        self.sent += delta
        return delta

    def rest(self, final: str) -> str:
        """What is left to send for the final text (empty when the deltas already made it)."""
        delta = final[len(self.sent) :] if final.startswith(self.sent) else ""
        self.sent += delta
        return delta


@dataclass(frozen=True)
class Face:
    x: float
    y: float
    width: float
    height: float
    landmarks: list[tuple[float, float]]  # right eye, left eye, nose tip, right mouth corner, left mouth corner
    score: float


class SpeechToText(Protocol):
    engine: str

    def reseed(self) -> None:
        """Reset the random sampler, so that the same request gets the same answer."""
        ...

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        task: str = "transcribe",
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        word_timestamps: bool = False,
        chunks: Iterable[tuple[float, float]] | None = None,
        should_stop: StopCheck = never,
        on_segment: SegmentSink | None = None,
    ) -> Transcript:
        """``chunks``: the (start, end) seconds to decode, at most a window each, in order and
        possibly found while decoding goes on (None: all of it as one block); ``on_segment`` gets each segment as soon as it is decoded."""
        ...


def whisper_task_language(
    multilingual: bool, languages: set[str], task: str, language: str | None
) -> tuple[str, str | None]:
    """The task and language a Whisper model will really run: an English-only model only transcribes English."""
    if not multilingual:
        return "transcribe", "en"
    if language is not None and language not in languages:
        raise InputError(f"language {language!r} is not one Whisper knows")
    return task, language


class TextEmbedder(Protocol):
    dimensions: int

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """L2-normalised (if the model says so) float32 [n, d], and tokens used per text."""
        ...


class ImageEmbedder(TextEmbedder, Protocol):
    def embed_images(self, images: list) -> np.ndarray: ...


class FaceDetector(Protocol):
    def detect(
        self, image_bgr: np.ndarray, *, score_threshold: float, nms_threshold: float, top_k: int
    ) -> list[Face]: ...


@dataclass(frozen=True)
class LoadSpec:
    """Where a model is, from the lock: a snapshot directory or a file in the volume."""

    name: str
    path: Path
    device: str
    engine: str | None = None
    variant: str | None = None  # e.g. the Whisper model name (for its alignment heads)
    threads: int = 0  # CPU threads for the model's kernels (0: the library's default)
    compute_type: str | None = None  # faster-whisper: CTranslate2's compute type (None: by device)
    graph: Path | None = None  # the ONNX text engines: the graph file the lock names
