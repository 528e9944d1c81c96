"""Lock entries as the downloader writes them, for tests that need a lock without a volume."""

from __future__ import annotations

from modelcache.plan import Artifact
from modelcache.volume_lock import LockedArtifact, LockedFile


def locked_of(
    artifact: Artifact, *, commit: str, sha256: str = "1" * 64, size: int = 10, role: str | None = "same"
) -> LockedArtifact:
    """The lock entry of ``artifact`` at ``commit`` (repos: one weights file in the snapshot;
    files: the file itself); ``role=None`` makes an old lock's entry, which had no roles."""
    if artifact.is_repo:
        files = (LockedFile(f"{artifact.dest}/snapshots/{commit}/model.safetensors", size, sha256, blob=sha256),)
    else:
        files = (LockedFile(artifact.dest, size, artifact.sha256 or sha256),)
    return LockedArtifact(
        name=artifact.name,
        spec=artifact.spec,
        kind=artifact.kind,
        source=artifact.source,
        dest=artifact.dest,
        revision=artifact.revision,
        commit=commit if artifact.is_repo else None,
        files=files,
        role=artifact.role if role == "same" else role,
        engine=artifact.engine,
    )
