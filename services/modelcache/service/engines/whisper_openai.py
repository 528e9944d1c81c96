"""openai-whisper, loaded by path from the volume (never by name: that path re-hashes the
file on every load and tries to download on a mismatch). The checkpoint is read with
``weights_only=True``; the alignment heads of the named model are set for word timestamps."""

from __future__ import annotations

import sys
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
from modelcache.service.faults import Cancelled

BEST_OF = 5
HOP = 160  # audio samples per mel frame (100 frames a second)
SEED = 0


class OpenAIWhisper:
    engine = "openai-whisper"

    def __init__(self, spec: LoadSpec) -> None:
        import torch
        import whisper
        from whisper.model import ModelDimensions, Whisper
        from whisper.tokenizer import LANGUAGES

        self.languages = set(LANGUAGES)

        checkpoint = torch.load(spec.path, map_location="cpu", weights_only=True)
        model = Whisper(ModelDimensions(**checkpoint["dims"]))
        model.load_state_dict(checkpoint["model_state_dict"])
        heads = whisper._ALIGNMENT_HEADS.get(spec.variant or "")
        if heads is not None:
            model.set_alignment_heads(heads)
        self.model = model.to(spec.device).eval()
        self.device = spec.device
        self.multilingual = model.is_multilingual

    def reseed(self) -> None:
        """Fix the sampler's seed (the temperature fallback samples): the same request, the same text."""
        import torch

        torch.manual_seed(SEED)

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
        model = self.model
        sent = 0  # segments given to on_segment so far
        if chunks is not None:  # openai-whisper takes every clip at once; one that ends past the last
            # mel frame (a chunk running to the end of the recording) never finishes there: end them before it
            last = (len(audio) // HOP - 1) / 100
            chunks = [(start, min(end, last)) for start, end in chunks if start < last]

        def stop_here(_module, _inputs) -> None:  # before every token step of the text decoder
            if should_stop():
                raise Cancelled("transcription stopped")

        def send_finished(_module, _inputs) -> None:
            """Before each window's encoder pass, the segments of the windows before it are final."""
            nonlocal sent
            done = _segments_so_far()
            for s in done[sent:]:
                on_segment(_segment(s))  # type: ignore[misc]
            sent = max(sent, len(done))

        hooks = [model.decoder.register_forward_pre_hook(stop_here)]
        if on_segment is not None:
            hooks.append(model.encoder.register_forward_pre_hook(send_finished))
        try:
            result = (
                {"segments": [], "language": language}
                if chunks == []
                else model.transcribe(
                    audio,
                    task=task,
                    language=language,
                    initial_prompt=prompt or None,
                    temperature=FALLBACK_TEMPERATURES if temperature == 0 else temperature,
                    word_timestamps=word_timestamps,
                    beam_size=BEAM_SIZE if temperature == 0 else None,
                    best_of=BEST_OF,
                    fp16=self.device == "cuda",
                    verbose=None,
                    clip_timestamps=[t for chunk in chunks for t in chunk] if chunks is not None else "0",
                )
            )
        finally:
            for hook in hooks:
                hook.remove()
        segments = [_segment(s) for s in result["segments"]]
        if on_segment is not None:
            for segment in segments[sent:]:
                on_segment(segment)
        return Transcript(
            text=joined_text(segments),
            language=result.get("language") or language or "en",
            duration=len(audio) / SAMPLE_RATE,
            segments=segments,
            task=task,
        )


def _segment(s: dict) -> Segment:
    return Segment(
        id=int(s["id"]),
        start=float(s["start"]),
        end=float(s["end"]),
        text=s["text"],
        tokens=[int(t) for t in s["tokens"]],
        temperature=float(s["temperature"]),
        avg_logprob=float(s["avg_logprob"]),
        compression_ratio=float(s["compression_ratio"]),
        no_speech_prob=float(s["no_speech_prob"]),
        words=[Word(w["word"], float(w["start"]), float(w["end"])) for w in s.get("words", [])],
    )


def _segments_so_far() -> list[dict]:
    """The segments openai-whisper's ``transcribe`` finished so far: its ``all_segments``,
    read from its frame on the stack (it offers no callback; the version is pinned, and a
    test checks that streamed segments equal the final ones)."""
    from whisper.transcribe import transcribe

    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not transcribe.__code__:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return []
    return list(frame.f_locals.get("all_segments", ()))
