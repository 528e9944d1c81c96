"""openai-whisper, loaded by path from the volume (never by name: that path re-hashes the
file on every load and tries to download on a mismatch). The checkpoint is read with
``weights_only=True``; the alignment heads of the named model are set for word timestamps."""

from __future__ import annotations

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

BEST_OF = 5


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
        model = self.model

        def stop_here(_module, _inputs) -> None:  # before every token step of the text decoder
            if should_stop():
                raise Cancelled("transcription stopped")

        hook = model.decoder.register_forward_pre_hook(stop_here)
        try:
            result = model.transcribe(
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
            )
        finally:
            hook.remove()
        return self._result(result, audio, task, language)

    def _result(self, result: dict, audio: np.ndarray, task: str, language: str | None) -> Transcript:
        segments = [
            Segment(
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
            for s in result["segments"]
        ]
        return Transcript(
            text=result["text"].strip(),
            language=result.get("language") or language or "en",
            duration=len(audio) / 16_000,
            segments=segments,
            task=task,
        )
