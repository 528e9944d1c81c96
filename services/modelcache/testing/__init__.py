"""Test kit for projects that build on modelcache: start the real stack from your tests.

``ModelCacheStack`` runs the downloader, then the read-only model service, from the released
images (or images you name) on a real Docker engine, through testcontainers; the pytest
plugin (:mod:`modelcache.testing.plugin`, loaded by ``pip install modelcache[testing]``)
gives fixtures and command-line options. ``offline=True`` serves a tiny model set (random
weights of real architectures, built in the service image) instead of the Hub, so a CI
needs neither network nor token. Guide: docs/testing.md.

Importing this package imports neither testcontainers nor docker; starting a stack does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelcache.testing.stack import DOWNLOADER_IMAGE, SERVICE_IMAGE, ModelCacheStack, StackError

#: The tiny set's models, as the service names them (the Whisper also answers as ``whisper-1``).
TINY_TEXT_EMBEDDING = "modelcache-tiny/bert-embedder"
TINY_VISION = "modelcache-tiny/siglip"
TINY_WHISPER = "whisper-tiny.en"


def __getattr__(name: str) -> Any:
    # the pytest plugin imports this package in every run: the stack loads on first use only
    if name in ("DOWNLOADER_IMAGE", "SERVICE_IMAGE", "ModelCacheStack", "StackError"):
        from modelcache.testing import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DOWNLOADER_IMAGE",
    "SERVICE_IMAGE",
    "TINY_TEXT_EMBEDDING",
    "TINY_VISION",
    "TINY_WHISPER",
    "ModelCacheStack",
    "StackError",
]
