"""What a model's process can be asked, and how it does it (child side).

The operation names travel over the worker's pipe; :class:`Op` is shared by the serving
layer's model handle (which sends them) and the worker (which runs them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelcache.service.engines.base import StopCheck, never
from modelcache.service.engines.text import first_unknown, unknown_id
from modelcache.service.faults import InputError


class Op(StrEnum):
    EMBED = "embed"  # texts of several requests -> per request (vectors, tokens)
    EMBED_IMAGES = "embed_images"  # images of several requests -> per request vectors (or InputError)
    TRANSCRIBE = "transcribe"  # audio bytes, options -> Transcript (with options["stream"]: each Segment first)
    DETECT = "detect"  # image bytes, options -> (faces, width, height)


def _ignore(_item: Any) -> None:
    pass


@dataclass(frozen=True)
class Call:
    """What an operation gets besides its arguments: whether to stop (polled between units
    of work), and a way to send partial results ahead of the answer (a decoded segment)."""

    should_stop: StopCheck = never
    emit: Callable[[Any], None] = _ignore


def _embed(engine, _call: Call, requests: list[list[str | list[int]]]) -> list:
    """One forward for the inputs (texts or token ids) of several requests; each request gets
    its own slice, or its own InputError (token ids the model cannot take: none, empty, outside
    its vocabulary), and the others still get their vectors."""
    vocab = getattr(engine, "vocab_size", None)

    def refusal(inputs: list[str | list[int]]) -> InputError | None:
        for i, ids in enumerate(inputs):
            if isinstance(ids, str):
                continue
            if vocab is None:
                return InputError("token arrays are taken by text-embedding models only: send the text")
            if not ids:
                return InputError(f"input[{i}]: an empty token array")
            bad = first_unknown(ids, vocab)
            if bad is not None:
                return InputError(unknown_id(f"input[{i}][{bad}]", ids[bad], vocab))
        return None

    def together(batch: list[list[str | list[int]]]) -> list:
        vectors, tokens = engine.embed([t for r in batch for t in r])
        out, start = [], 0
        for r in batch:
            out.append((vectors[start : start + len(r)], tokens[start : start + len(r)]))
            start += len(r)
        return out

    checked = [refusal(r) or r for r in requests]
    good = [r for r in checked if not isinstance(r, InputError)]
    try:
        answers = together(good) if good else []
    except InputError:  # the engine refused some request's inputs: each request on its own
        answers = []
        for r in good:
            try:
                answers += together([r])
            except InputError as exc:
                answers.append(exc)
    given = iter(answers)
    return [r if isinstance(r, InputError) else next(given) for r in checked]


def _embed_images(engine, _call: Call, requests: list[list[bytes]]) -> list:
    """Decode each request's images on its own (a bad image fails its request only), then one forward."""
    from modelcache.service.engines.images import decode_image

    decoded: list = []
    for images in requests:
        try:
            decoded.append([decode_image(data) for data in images])
        except InputError as exc:
            decoded.append(exc)
    good = [img for d in decoded if not isinstance(d, InputError) for img in d]
    vectors = engine.embed_images(good) if good else None
    out, start = [], 0
    for d in decoded:
        if isinstance(d, InputError):
            out.append(d)
        else:
            assert vectors is not None  # every request holds an image (read_images refuses none), so good does too
            out.append(vectors[start : start + len(d)])
            start += len(d)
    return out


def _transcribe(engine, call: Call, audio: bytes, options: dict):
    """Decode and transcribe; with ``stream`` every segment is emitted as soon as it is decoded."""
    from modelcache.service.engines.audio import decode_audio

    options = dict(options)
    on_segment = call.emit if options.pop("stream", False) else None
    vad = options.pop("chunking", None)
    samples = decode_audio(audio)
    chunks = None
    if vad is not None:  # cut at silences: Silero VAD, then chunks of at most one window
        from modelcache.service.engines.chunking import VadOptions, chunks_of

        chunks = chunks_of(samples, VadOptions(**vad))  # none: no speech, nothing to decode
    engine.reseed()  # the same request decodes the same way (temperature fallback samples)
    return engine.transcribe(samples, chunks=chunks, should_stop=call.should_stop, on_segment=on_segment, **options)


def _detect(engine, _call: Call, image: bytes, options: dict):
    """The faces, and the image's width and height."""
    from modelcache.service.engines.images import decode_image, to_bgr

    pixels = to_bgr(decode_image(image))
    return engine.detect(pixels, **options), int(pixels.shape[1]), int(pixels.shape[0])


OPS: dict[Op, Callable[..., Any]] = {
    Op.EMBED: _embed,
    Op.EMBED_IMAGES: _embed_images,
    Op.TRANSCRIBE: _transcribe,
    Op.DETECT: _detect,
}
