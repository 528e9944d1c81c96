"""A served model as the routes use it: typed verbs over its queue and batchers.

One :class:`ModelHandle` per served model (made by :class:`Handles` when the model is
served, at start or by a reload). The verbs say what goes in and out; which batcher a
call goes through, and the operation names the model's process understands, stay here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import numpy as np

from modelcache.service.engines.base import Face, Segment, Transcript
from modelcache.service.models.entry import ModelEntry
from modelcache.service.models.lifecycle import Lifecycle
from modelcache.service.models.ops import Op
from modelcache.service.serving.runner import Batcher, Meter, Runner
from modelcache.settings import Settings


class ModelHandle:
    def __init__(self, entry: ModelEntry, lifecycle: Lifecycle, settings: Settings, meter: Meter) -> None:
        self.entry = entry
        self.runner = Runner(
            entry,
            lifecycle,
            queue_size=settings.queue_size,
            timeout=settings.request_timeout,
            meter=meter,
            wait=settings.admission_wait,
        )
        wait = settings.batch_wait_ms / 1000
        embeds = entry.task in ("text-embedding", "image-embedding")
        self._texts = Batcher(self.runner, Op.EMBED, max_batch=settings.batch_max, max_wait=wait) if embeds else None
        self._images = (
            Batcher(self.runner, Op.EMBED_IMAGES, max_batch=settings.batch_max, max_wait=wait)
            if entry.task == "image-embedding"
            else None
        )

    @property
    def batchers(self) -> list[Batcher]:
        return [b for b in (self._texts, self._images) if b is not None]

    def start(self) -> None:
        for batcher in self.batchers:
            batcher.start()

    async def stop(self) -> None:
        for batcher in self.batchers:
            await batcher.stop()

    async def embed(self, texts: list[str | list[int]]) -> tuple[np.ndarray, list[int]]:
        """Vectors and tokens per input, a text or token ids (batched with other requests' inputs)."""
        return await self._batcher(self._texts, "text embeddings").submit(texts)

    async def embed_images(self, images: list[bytes]) -> np.ndarray:
        """One vector per image (batched with other requests' images)."""
        return await self._batcher(self._images, "image embeddings").submit(images)

    async def transcribe(self, audio: bytes, options: dict[str, Any]) -> Transcript:
        return await self.runner.call(Op.TRANSCRIBE, audio, options)

    async def transcribe_stream(
        self, audio: bytes, options: dict[str, Any]
    ) -> AsyncGenerator[Segment | Transcript, None]:
        """Each :class:`Segment` as soon as the model decoded it, then the whole :class:`Transcript`
        (the same as :meth:`transcribe` gives). Close the iterator to stop the decoding."""
        async with aclosing(self.runner.stream(Op.TRANSCRIBE, audio, {**options, "stream": True})) as items:
            async for item in items:
                yield item

    async def detect(self, image: bytes, options: dict[str, Any]) -> tuple[list[Face], int, int]:
        """The faces, and the image's width and height."""
        return await self.runner.call(Op.DETECT, image, options)

    def _batcher(self, batcher: Batcher | None, what: str) -> Batcher:
        if batcher is None:  # the routes pick models by task: a bug if reached
            raise TypeError(f"model {self.entry.id!r} ({self.entry.task}) does not give {what}")
        return batcher


class Handles:
    """Every served model's handle, made when the model is served and dropped when a reload
    retires it; also what the lifecycle asks about each model's queue."""

    def __init__(self, lifecycle: Lifecycle, settings: Settings, meter: Meter) -> None:
        self.lifecycle, self.settings, self.meter = lifecycle, settings, meter
        self._by_entry: dict[int, ModelHandle] = {}
        self.running = False  # batchers of handles made later start at once

    def add(self, entry: ModelEntry) -> ModelHandle:
        handle = ModelHandle(entry, self.lifecycle, self.settings, self.meter)
        self._by_entry[id(entry)] = handle
        if self.running:
            handle.start()
        return handle

    def get(self, entry: ModelEntry) -> ModelHandle:
        return self._by_entry[id(entry)]

    def find(self, entry: ModelEntry) -> ModelHandle | None:
        return self._by_entry.get(id(entry))

    async def drop(self, entry: ModelEntry) -> None:
        handle = self._by_entry.pop(id(entry), None)
        if handle is not None:
            await handle.stop()

    def start(self) -> None:
        self.running = True
        for handle in list(self._by_entry.values()):
            handle.start()

    async def stop(self) -> None:
        self.running = False
        for handle in list(self._by_entry.values()):
            await handle.stop()

    def depth(self, entry: ModelEntry) -> int:
        handle = self.find(entry)
        return handle.runner.depth() if handle is not None else 0

    def retry_after(self, entry: ModelEntry) -> int:
        handle = self.find(entry)
        return handle.runner.retry_after() if handle is not None else 1

    def capacity(self, entry: ModelEntry) -> int:
        """How many requests the model's queue holds (waiting or running) before a 429."""
        handle = self.find(entry)
        return handle.runner.slots.limit if handle is not None else 0
