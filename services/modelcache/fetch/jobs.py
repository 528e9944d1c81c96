"""The unit of work of a fetch: one file to bring in, and the artifact it belongs to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelcache.plan import Artifact
from modelcache.volume_lock import LockedFile

Progress = Callable[[int], None]


@dataclass
class Job:
    """One file to bring in; ``run`` returns its lock entry and the bytes it transferred."""

    label: str
    size: int | None
    partial: Path | None
    run: Callable[[Progress], tuple[LockedFile, int]]


@dataclass
class ArtifactState:
    """What one artifact has gathered so far: its commit and its files' lock entries."""

    artifact: Artifact
    commit: str | None
    entries: list[LockedFile] = field(default_factory=list)
