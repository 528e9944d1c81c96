"""faster-whisper (CTranslate2), loaded from the repo's snapshot directory in the volume."""

from __future__ import annotations

import os

import numpy as np

from modelcache.service.engines.base import (
    BEAM_SIZE,
    FALLBACK_TEMPERATURES,
    LoadSpec,
    Segment,
    StopCheck,
    Transcript,
    Word,
    never,
    whisper_task_language,
)
from modelcache.service.faults import Cancelled


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

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        task: str = "transcribe",
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        word_timestamps: bool = False,
        should_stop: StopCheck = never,
    ) -> Transcript:
        task, language = whisper_task_language(self.multilingual, self.languages, task, language)
        pieces, info = self.model.transcribe(
            audio,
            task=task,
            language=language,
            initial_prompt=prompt or None,
            temperature=list(FALLBACK_TEMPERATURES) if temperature == 0 else temperature,
            word_timestamps=word_timestamps,
            beam_size=BEAM_SIZE,
            vad_filter=False,
        )
        segments = [
            Segment(
                id=i,
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
            for i, s in enumerate(_until_stopped(pieces, should_stop))
        ]
        return Transcript(
            text="".join(s.text for s in segments).strip(),
            language=info.language or language or "en",
            duration=float(info.duration),
            segments=segments,
            task=task,
        )


def _until_stopped(pieces, should_stop: StopCheck):
    """faster-whisper decodes lazily, one segment per step: stop between two of them."""
    for piece in pieces:
        yield piece
        if should_stop():
            raise Cancelled("transcription stopped")
