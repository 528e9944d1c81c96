"""Voice activity on a live stream (the realtime route's turn detection): Silero VAD run
with ONNX Runtime on one thread, fed as audio arrives, telling where speech starts and
where a silence long enough ends it.

The model file ships inside the ``silero-vad`` wheel; it is found without importing that
package (which imports torch: the HTTP process stays without it). The model runs at
8 kHz: realtime audio (PCM16, 24 kHz) is averaged three samples at a time, which is all the
low-pass filtering a voice/no-voice decision needs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 8_000  # the rate the model runs at here
WINDOW = 256  # samples per decision at 8 kHz (32 ms)
CONTEXT = 32  # samples of the previous window the model sees again
DOWN = 3  # 24 kHz to 8 kHz


def model_file() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


class Silero:
    """One stream's model state: speech probability of each 32 ms window, in order."""

    _session = None

    def __init__(self) -> None:
        if Silero._session is None:  # one session for every stream (its run() is thread-safe)
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            Silero._session = onnxruntime.InferenceSession(
                str(model_file()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros((1, CONTEXT), np.float32)

    def probability(self, window: np.ndarray) -> float:
        x = np.concatenate([self.context, window.reshape(1, WINDOW)], axis=1)
        assert Silero._session is not None
        out, self.state = Silero._session.run(None, {"input": x, "state": self.state, "sr": np.array(RATE, np.int64)})
        self.context = x[:, -CONTEXT:]
        return float(out[0, 0])


@dataclass(frozen=True)
class TurnOptions:
    """OpenAI's ``server_vad`` turn detection."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class Turn:
    """Speech started (``end_ms`` None) or stopped, in ms of the stream since it began. As
    OpenAI's ``speech_started``/``speech_stopped`` count them, the span is the audio a phrase
    is transcribed from: ``start_ms`` includes the prefix padding before the first speech,
    ``end_ms`` the silence (``silence_duration_ms``) that ended it."""

    start_ms: int
    end_ms: int | None = None


class TurnDetector:
    """Feed PCM16 at 24 kHz as it arrives; get a :class:`Turn` when speech starts (its start
    with the prefix padding before it) and again when a silence of ``silence_duration_ms``
    ended it (its end where that silence is over)."""

    def __init__(self, options: TurnOptions, probability=None) -> None:
        self.options = options
        self.probability = probability or Silero().probability
        self._pending = np.zeros(0, np.float32)  # 8 kHz samples not yet a full window
        self._rest = np.zeros(0, np.float32)  # 24 kHz samples not yet a multiple of 3
        self.done_ms = 0.0  # stream time of the windows decided
        self.speech_start: float | None = None
        self.silence_since: float | None = None

    def feed(self, pcm16: bytes) -> list[Turn]:
        samples = np.frombuffer(pcm16, "<i2").astype(np.float32) / 32768.0
        samples = np.concatenate([self._rest, samples])
        usable = len(samples) - len(samples) % DOWN
        self._rest = samples[usable:]
        low = samples[:usable].reshape(-1, DOWN).mean(axis=1)
        audio = np.concatenate([self._pending, low])
        turns = []
        whole = len(audio) - len(audio) % WINDOW
        for at in range(0, whole, WINDOW):
            turn = self._decide(self.probability(audio[at : at + WINDOW]))
            if turn is not None:
                turns.append(turn)
        self._pending = audio[whole:]
        return turns

    def _decide(self, p: float) -> Turn | None:
        o = self.options
        window_ms = WINDOW * 1000 / RATE
        start, self.done_ms = self.done_ms, self.done_ms + window_ms
        if self.speech_start is None:
            if p >= o.threshold:
                self.speech_start, self.silence_since = start, None
                return Turn(int(max(0.0, start - o.prefix_padding_ms)))
            return None
        if p >= o.threshold - 0.15:  # hysteresis: speech goes on until clearly below the threshold
            self.silence_since = None
            return None
        if self.silence_since is None:
            self.silence_since = start
        if self.done_ms - self.silence_since >= o.silence_duration_ms:
            began, quiet = self.speech_start, self.silence_since
            self.speech_start = self.silence_since = None
            return Turn(int(max(0.0, began - o.prefix_padding_ms)), int(quiet + o.silence_duration_ms))
        return None
