"""One artifact at a time: `show` it, `rm` it; `prune` what the plan no longer wants."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from modelcache.errors import ConfigError
from modelcache.layout import Layout, repo_folder_name
from modelcache.plan import Artifact, Plan
from modelcache.verify import check_file
from modelcache.volume_lock import Lock, LockedArtifact, read_lock, write_lock


@dataclass(frozen=True)
class Removal:
    path: str  # relative to the volume root
    bytes: int


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _delete(layout: Layout, path: Path, dry_run: bool) -> Removal:
    removal = Removal(layout.rel(path), _size(path))
    if not dry_run:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removal


def _find(lock: Lock | None, plan: Plan, name: str) -> tuple[LockedArtifact | None, Artifact | None]:
    """The artifact by name, repo id or URL: its lock entry and its plan entry (either may be None)."""
    held = next((a for a in lock.artifacts if name in (a.name, a.source)), None) if lock else None
    planned = plan.get(name)
    if held is None and planned is None:
        known = sorted({a.name for a in (lock.artifacts if lock else ())} | {a.name for a in plan.artifacts})
        raise ConfigError(f"no artifact named {name!r}", remedy=f"use one of: {', '.join(known) or '(none)'}")
    return held, planned


def show(layout: Layout, plan: Plan, name: str, *, deep: bool = False) -> dict:
    """Everything about one artifact: what is asked for, what the lock holds, what is on disk."""
    lock = read_lock(layout)
    held, planned = _find(lock, plan, name)
    if held is None:
        status = "not fetched: not in the lock"
    elif planned is None:
        status = "in the lock, no longer configured (prune removes it)"
    elif held.spec != planned.spec:
        status = "in the lock with other settings (drift: fetch brings the configured one)"
    else:
        status = "locked"
    files = []
    for f in held.files if held else ():
        problem = check_file(layout, f, deep=deep)
        files.append(
            {"path": f.path, "size": f.size, "sha256": f.sha256, "on_disk": problem.issue if problem else "ok"}
        )
    return {
        "name": (held or planned).name,  # type: ignore[union-attr]
        "role": planned.role if planned else None,
        "kind": (planned or held).kind,  # type: ignore[union-attr]
        "source": (planned or held).source,  # type: ignore[union-attr]
        "revision": planned.revision if planned else held.revision,  # type: ignore[union-attr]
        "commit": held.commit if held else None,
        "dest": (planned or held).dest,  # type: ignore[union-attr]
        "status": status,
        "deep": deep,
        "files": files,
        "bytes": held.size if held else 0,
    }


def remove(layout: Layout, plan: Plan, name: str, *, dry_run: bool = False) -> list[Removal]:
    """Delete one artifact (by name, repo id or URL) and drop it from the lock."""
    lock = read_lock(layout)
    held, planned = _find(lock, plan, name)
    dest = held.dest if held else planned.dest  # type: ignore[union-attr]
    source = held.source if held else planned.source  # type: ignore[union-attr]
    paths = [layout.abs(dest), layout.exports / repo_folder_name(source)]  # its repo, and graphs made from it
    removed = [_delete(layout, p, dry_run) for p in paths if p.exists() or p.is_symlink()]
    if lock and held and not dry_run:
        write_lock(layout, replace(lock, artifacts=tuple(a for a in lock.artifacts if a.name != held.name)))
    return removed


def prune(layout: Layout, plan: Plan, *, dry_run: bool = False) -> list[Removal]:
    """Delete repos, snapshots, blobs, checkpoints and partial files the plan does not want."""
    lock = read_lock(layout)
    wanted_dests = {a.dest for a in plan.artifacts}
    kept: Lock | None = None
    if lock is not None:
        specs = {a.spec for a in plan.artifacts}
        kept = replace(lock, artifacts=tuple(a for a in lock.artifacts if a.spec in specs))
    wanted_files = {f.path for f in kept.files} if kept else set()
    wanted_blobs = {f.blob for f in kept.files if f.blob} if kept else set()
    removals: list[Removal] = []
    if layout.hub.is_dir():
        for repo in sorted(layout.hub.iterdir()):
            if layout.rel(repo) not in wanted_dests:
                if repo.name.startswith("models--"):
                    removals.append(_delete(layout, repo, dry_run))
                continue
            if kept is None:
                continue  # without a lock we cannot tell which snapshot is the wanted one
            for path in sorted((repo / "snapshots").rglob("*")):
                if (path.is_file() or path.is_symlink()) and layout.rel(path) not in wanted_files:
                    removals.append(_delete(layout, path, dry_run))
            for blob in sorted((repo / "blobs").glob("*")):
                if layout.rel(blob) not in wanted_blobs:
                    removals.append(_delete(layout, blob, dry_run))
    for root in (layout.whisper, layout.files):
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if (path.is_file() or path.is_symlink()) and layout.rel(path) not in wanted_dests:
                removals.append(_delete(layout, path, dry_run))
    for path in sorted(layout.exports.rglob("*")) if layout.exports.is_dir() and kept is not None else []:
        if (path.is_file() or path.is_symlink()) and layout.rel(path) not in wanted_files:
            removals.append(_delete(layout, path, dry_run))  # graphs made for another commit or engine
    complete = lock is not None and lock.plan_digest == plan.digest
    if layout.partial.is_dir() and complete:  # otherwise they are resumable downloads of the plan
        for part in sorted(layout.partial.iterdir()):
            removals.append(_delete(layout, part, dry_run))
    if not dry_run:
        _remove_empty_dirs(layout.root)
        if lock is not None and kept is not None and kept.artifacts != lock.artifacts:
            write_lock(layout, kept)
    return removals


def _remove_empty_dirs(root: Path) -> None:
    for dirpath, dirs, files in os.walk(root, topdown=False):
        path = Path(dirpath)
        if path != root and not dirs and not files and path.name not in (".modelcache", "partial"):
            try:
                path.rmdir()
            except OSError:
                pass
