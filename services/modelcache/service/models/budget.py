"""The memory budget's decisions (``MODELCACHE_MEMORY_BUDGET``), as pure functions.

The lifecycle asks one question before it loads a model: given the models in memory now,
what must happen first? :func:`make_room` answers with one of

- :class:`Fits`: load it now;
- :class:`Evict`: unload this idle, unpinned model first (least recently used first),
  then ask again;
- :class:`Wait`: the models in the way are busy (answering, or with requests queued) or
  loading; room appears when they are done, so waiting helps;
- :class:`Refuse`: waiting does not help (the pinned models leave no room, or the model
  is larger than the budget once loaded); the operator has to change a setting.

What a model counts for is what it really needs to serve: the largest of its private
memory after loading, its peak while answering (measured in its process after each call,
see ``worker.PeakMeter``) and its private memory now. A model whose peak alone is more
than the budget is still served, alone: it counts for the whole budget, so every other
unpinned model is unloaded before it loads, and it is unloaded when another one needs
room. Only a model whose size *after loading* is more than the budget is refused (at
start, or on demand after a reload brought it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelcache.progress import human_bytes

BUDGET = "MODELCACHE_MEMORY_BUDGET"


@dataclass(frozen=True)
class Resident:
    """A model in memory (loaded, or loading), as the budget sees it."""

    id: str
    size: int  # what it counts for: the largest of its load size, its peak and its memory now
    pinned: bool = False
    busy: int = 0  # requests running on it or queued for it
    state: str = "loaded"  # or loading, unloading: it holds memory, and will be idle soon
    last_used: float = 0.0


@dataclass(frozen=True)
class Fits:
    pass


@dataclass(frozen=True)
class Evict:
    victim: str


@dataclass(frozen=True)
class Wait:
    reason: str
    blockers: tuple[str, ...]


@dataclass(frozen=True)
class Refuse:
    reason: str
    remedy: str


Decision = Fits | Evict | Wait | Refuse


def mib(size: int) -> str:
    """A size as an operator writes it in MODELCACHE_MEMORY_BUDGET (MiB, rounded up)."""
    return f"{-(-size // 2**20)}m"


def make_room(model: str, *, load: int, peak: int, budget: int, residents: Sequence[Resident]) -> Decision:
    """What must happen before ``model`` (``load`` bytes after loading, ``peak`` at most
    while answering; 0 where not measured yet) can be loaded beside ``residents``."""
    if load > budget:
        return Refuse(
            f"model {model!r} takes {human_bytes(load)} loaded (measured), more than {BUDGET} "
            f"({human_bytes(budget)}) on its own",
            f"raise {BUDGET} to at least {mib(max(load, peak))}, or configure a smaller model",
        )
    need = max(load, peak)
    want = min(need, budget)  # larger than the budget at its peak: it runs alone
    alone = f" (its peak, {human_bytes(need)}, is more than the budget: it runs alone)" if need > budget else ""
    used = sum(r.size for r in residents)
    if used + want <= budget:
        return Fits()
    pinned = [r for r in residents if r.pinned]
    held = sum(r.size for r in pinned)
    if held + want > budget:
        names = ", ".join(f"{r.id} ({human_bytes(r.size)})" for r in pinned)
        return Refuse(
            f"model {model!r} needs {human_bytes(want)}{alone} and the pinned models {names} hold "
            f"{human_bytes(held)} of {BUDGET} ({human_bytes(budget)})",
            f"raise {BUDGET} to at least {mib(held + need)}, or pin fewer models (MODELCACHE_PIN)",
        )
    idle = sorted(
        (r for r in residents if not r.pinned and not r.busy and r.state == "loaded"), key=lambda r: r.last_used
    )
    if used - sum(r.size for r in idle) + want <= budget:
        return Evict(idle[0].id)
    blockers = [r for r in residents if not r.pinned and (r.busy or r.state != "loaded")]
    doing = ", ".join(f"{r.id} ({_requests(r.busy) if r.busy else r.state}, {human_bytes(r.size)})" for r in blockers)
    return Wait(
        f"model {model!r} needs {human_bytes(want)}{alone} of {BUDGET} ({human_bytes(budget)}) and models in "
        f"use hold it: {doing}",
        tuple(r.id for r in blockers),
    )


def _requests(n: int) -> str:
    return f"busy with {n} request{'s' if n != 1 else ''}"


def oversized(model: str, peak: int, budget: int, everything: int) -> str | None:
    """The warning for a model whose peak alone is more than the budget (None otherwise);
    ``everything`` is what all served models need together."""
    if peak <= budget:
        return None
    return (
        f"{model} needs {human_bytes(peak)} at its peak while answering, more than {BUDGET} "
        f"({human_bytes(budget)}): it is served alone, every other unpinned model is unloaded first; set "
        f"{BUDGET}={mib(everything)} to keep every model loaded ({mib(peak)} is the least that holds it)"
    )
