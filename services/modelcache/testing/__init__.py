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

from modelcache.testing.stack import DOWNLOADER_IMAGE, SERVICE_IMAGE, ModelCacheStack, StackError
from modelcache.testing.tinyset import TEXT_EMBEDDING as TINY_TEXT_EMBEDDING
from modelcache.testing.tinyset import VISION as TINY_VISION

#: The tiny set's Whisper, as the service names it (also ``whisper-1``).
TINY_WHISPER = "whisper-tiny.en"

__all__ = [
    "DOWNLOADER_IMAGE",
    "SERVICE_IMAGE",
    "TINY_TEXT_EMBEDDING",
    "TINY_VISION",
    "TINY_WHISPER",
    "ModelCacheStack",
    "StackError",
]
