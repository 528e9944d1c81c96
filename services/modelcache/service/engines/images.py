"""Decode uploaded images (Pillow), with a pixel limit against decompression bombs."""

from __future__ import annotations

import io

import numpy as np

from modelcache.service.faults import InputError

MAX_PIXELS = 40_000_000


def decode_image(data: bytes):
    """A PIL RGB image, or InputError."""
    from PIL import Image

    if not data:
        raise InputError("the image is empty")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InputError(f"the image is larger than {MAX_PIXELS} pixels")
            img.load()
            return img.convert("RGB")
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"the image is larger than {MAX_PIXELS} pixels") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        raise InputError(f"not a decodable image ({exc.__class__.__name__})", unsupported_media=True) from None


def to_bgr(image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
