"""faster-whisper (CTranslate2), loaded from the repo's snapshot directory in the volume."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from modelcache.service.engines.base import (
    BEAM_SIZE,
    FALLBACK_TEMPERATURES,
    SAMPLE_RATE,
    LoadSpec,
    Segment,
    SegmentSink,
    StopCheck,
    Transcript,
    Word,
    joined_text,
    never,
    whisper_task_language,
)
from modelcache.service.engines.chunking import batches
from modelcache.service.faults import Cancelled

SEED = 0
BATCH_SIZE = 8  # chunks decoded together by the batched pipeline (faster-whisper's default)


class FasterWhisper:
    engine = "faster-whisper"

    def __init__(self, spec: LoadSpec) -> None:
        from faster_whisper import WhisperModel

        self.compute_type = spec.compute_type or ("float16" if spec.device == "cuda" else "float32")
        self.model = WhisperModel(
            str(spec.path),
            device=spec.device,
            compute_type=self.compute_type,
            cpu_threads=spec.threads or len(os.sched_getaffinity(0)),
            local_files_only=True,
        )
        self.multilingual = self.model.model.is_multilingual
        self.languages = set(self.model.supported_languages)

    def reseed(self) -> None:
        """Fix the sampler's seed (the temperature fallback samples): the same request, the same text."""
        import ctranslate2

        ctranslate2.set_random_seed(SEED)

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
        task, language = whisper_task_language(self.multilingual, self.languages, task, language)
        options = {
            "task": task,
            "initial_prompt": prompt or None,
            "temperature": list(FALLBACK_TEMPERATURES) if temperature == 0 else temperature,
            "word_timestamps": word_timestamps,
            "beam_size": BEAM_SIZE,
        }
        segments: list[Segment] = []

        def keep(piece) -> None:
            segment = _segment(len(segments), piece)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
            if should_stop():
                raise Cancelled("transcription stopped")

        if chunks is None:
            pieces, info = self.model.transcribe(audio, language=language, vad_filter=False, **options)
            for piece in pieces:  # decoded lazily, one window per step
                keep(piece)
            detected = info.language
        else:
            detected = self._chunked(audio, chunks, language, options, keep, should_stop)
        return Transcript(
            text=joined_text(segments),
            language=detected or language or "en",
            duration=len(audio) / SAMPLE_RATE,
            segments=segments,
            task=task,
        )

    def _chunked(self, audio, chunks, language, options, keep, should_stop) -> str | None:
        """The chunks through faster-whisper's batched pipeline, in growing batches; the
        language found in the first batch holds for the rest."""
        from faster_whisper import BatchedInferencePipeline

        pipeline = BatchedInferencePipeline(self.model)
        for batch in batches(chunks, BATCH_SIZE):
            if should_stop():
                raise Cancelled("transcription stopped")
            clips = [{"start": start, "end": end} for start, end in batch]
            pieces, info = pipeline.transcribe(
                audio,
                language=language,
                clip_timestamps=clips,
                batch_size=len(clips),
                without_timestamps=False,  # segments within a chunk, as unchunked decoding gives
                **options,
            )
            for piece in pieces:
                keep(piece)
            language = language or info.language
        return language


def _segment(index: int, s) -> Segment:
    return Segment(
        id=index,
        start=float(s.start),
        end=float(s.end),
        text=s.text,
        tokens=list(s.tokens),
        temperature=float(s.temperature or 0.0),
        avg_logprob=float(s.avg_logprob),
        compression_ratio=float(s.compression_ratio),
        no_speech_prob=float(s.no_speech_prob),
        words=[Word(w.word, float(w.start), float(w.end)) for w in (s.words or [])],
    )
