"""What a model's process can be asked, and how it does it (child side).

The operation names travel over the worker's pipe; :class:`Op` is shared by the serving
layer's model handle (which sends them) and the worker (which runs them).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from modelcache.service.faults import InputError


class Op(StrEnum):
    EMBED = "embed"  # texts of several requests -> per request (vectors, tokens)
    EMBED_IMAGES = "embed_images"  # images of several requests -> per request vectors (or InputError)
    TRANSCRIBE = "transcribe"  # audio bytes, options -> Transcript
    DETECT = "detect"  # image bytes, options -> (faces, width, height)


def _embed(engine, _stop, requests: list[list[str]]) -> list:
    """One forward for the texts of several requests; each request gets its own slice."""
    texts = [t for r in requests for t in r]
    vectors, tokens = engine.embed(texts)
    out, start = [], 0
    for r in requests:
        out.append((vectors[start : start + len(r)], tokens[start : start + len(r)]))
        start += len(r)
    return out


def _embed_images(engine, _stop, requests: list[list[bytes]]) -> list:
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


def _transcribe(engine, stop, audio: bytes, options: dict):
    from modelcache.service.engines.audio import decode_audio

    return engine.transcribe(decode_audio(audio), should_stop=stop, **options)


def _detect(engine, _stop, image: bytes, options: dict):
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
