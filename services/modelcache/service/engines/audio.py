"""Decode uploaded audio to 16 kHz mono float32 with PyAV (no ffmpeg program needed).

wav, mp3, flac, ogg/opus, m4a/aac, webm: whatever the libav bundled with PyAV reads.
"""

from __future__ import annotations

import io

import numpy as np

from modelcache.service.engines.base import SAMPLE_RATE
from modelcache.service.faults import InputError

MAX_SECONDS = 4 * 3600


def decode_audio(data: bytes, *, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    import av

    if not data:
        raise InputError("the audio file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InputError(f"not a decodable audio file ({exc.__class__.__name__})", unsupported_media=True) from None
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with container:
            streams = container.streams.audio
            if not streams:
                raise InputError("the file has no audio stream", unsupported_media=True)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(streams[0]):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += chunk.size
                    if total > max_seconds * SAMPLE_RATE:
                        raise InputError(f"the audio is longer than {max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        if not chunks:
            raise InputError(f"not a decodable audio file ({exc.__class__.__name__})", unsupported_media=True) from None
        # a damaged tail: keep what decoded
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if audio.size < SAMPLE_RATE // 100:
        raise InputError("the audio has no samples")
    return audio
