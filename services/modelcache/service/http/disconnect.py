"""Requests whose client goes away are stopped: the ASGI side of cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from modelcache.service.faults import Cancelled, ClientGone, TimedOut


async def unless_disconnected(receive: Callable[[], Awaitable[Mapping[str, Any]]], work: Awaitable[Any]) -> Any:
    """Await ``work``; if the client disconnects first, cancel it (which cancels the model call).

    ``receive`` is the request's ASGI receive, called only after the body was read: the next
    message it gives is ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Cancelled, TimedOut):
        pass
    raise ClientGone("the client went away; the request was stopped")
