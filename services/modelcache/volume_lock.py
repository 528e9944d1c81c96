"""The lock file: written last and atomically, it says "this volume holds the plan".

It records the plan digest, each artifact's resolved commit, and every file with its
path (relative to the volume root), size and sha256. Verification needs nothing else.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from modelcache import __version__
from modelcache.errors import VerificationError
from modelcache.layout import Layout, atomic_write_text

LOCK_VERSION = 1


@dataclass(frozen=True)
class LockedFile:
    path: str  # relative to the volume root: what consumers open
    size: int
    sha256: str
    blob: str | None = None  # for hub files: the blob the snapshot path points to


@dataclass(frozen=True)
class LockedArtifact:
    name: str
    spec: str  # the plan artifact's spec digest: a changed configuration gives another
    kind: str
    source: str
    dest: str
    revision: str | None
    commit: str | None
    files: tuple[LockedFile, ...]
    role: str | None = None  # what the service does with it (asr, text-embedding, ...); None in older locks
    engine: str | None = None  # which runtime consumes it (asr)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Lock:
    plan_digest: str
    artifacts: tuple[LockedArtifact, ...]
    lockfile: str | None = None  # digest of the models.lock it was filled from, if any
    created_at: float = field(default_factory=time.time)
    tool_version: str = __version__
    version: int = LOCK_VERSION

    def get(self, name: str) -> LockedArtifact | None:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        return None

    @property
    def files(self) -> list[LockedFile]:
        return [f for a in self.artifacts for f in a.files]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def write_lock(layout: Layout, lock: Lock) -> None:
    atomic_write_text(layout.lock_file, lock.to_json())


def read_lock(layout: Layout) -> Lock | None:
    """The lock, or None when the volume has none. A damaged lock is a verification error."""
    path = layout.lock_file
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VerificationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_lock(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError(
            f"{path} is damaged ({exc.__class__.__name__}: {exc})",
            remedy="run the downloader again (modelcache fetch); it rewrites the lock",
        ) from None


def parse_lock(data: dict) -> Lock:
    """A lock from its JSON form (the volume's lock.json, or the one inside a bundle)."""
    if data.get("version") != LOCK_VERSION:
        raise ValueError(f"unsupported lock version {data.get('version')!r}")
    artifacts = tuple(
        LockedArtifact(
            name=a["name"],
            spec=a["spec"],
            kind=a["kind"],
            source=a["source"],
            dest=a["dest"],
            revision=a.get("revision"),
            commit=a.get("commit"),
            files=tuple(LockedFile(**f) for f in a["files"]),
            role=a.get("role"),
            engine=a.get("engine"),
        )
        for a in data["artifacts"]
    )
    lockfile = data.get("lockfile")
    return Lock(
        plan_digest=str(data["plan_digest"]),
        artifacts=artifacts,
        lockfile=str(lockfile) if lockfile else None,
        created_at=float(data.get("created_at", 0.0)),
        tool_version=str(data.get("tool_version", "?")),
    )
