"""Find (and with --fix, repair) what goes wrong in a model volume. Offline, stdlib only.

What it looks for: Git LFS pointer files posing as weights, temporary leftovers of
interrupted downloads, orphan blobs, broken snapshot symlinks, files whose size differs
from the lock, and files the lock does not know. Repairs only ever delete: a deleted file
is what `modelcache fetch` then brings back, verified.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcache.layout import Layout
from modelcache.volume_lock import Lock

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
POINTER_MAX = 1024


@dataclass(frozen=True)
class Finding:
    kind: str  # lfs-pointer | temporary | orphan-blob | broken-symlink | size-mismatch | unknown-file | no-lock
    path: str  # relative to the volume root
    detail: str
    fixable: bool = True

    def line(self) -> str:
        return f"{self.kind:15} {self.path}: {self.detail}"


def diagnose(layout: Layout, lock: Lock | None, *, damaged_lock: str | None = None) -> list[Finding]:
    """Everything wrong in the volume; ``lock`` as read by the caller (None: absent or damaged)."""
    findings: list[Finding] = []
    if damaged_lock:
        findings.append(Finding("damaged-lock", layout.rel(layout.lock_file), damaged_lock, False))
    elif lock is None:
        findings.append(Finding("no-lock", layout.rel(layout.lock_file), "no lock: run `modelcache fetch`", False))
    findings += _temporaries(layout)
    findings += _pointer_files(layout)
    findings += _broken_links(layout)
    if lock is not None:
        findings += _size_mismatches(layout, lock)
        findings += _unknown_files(layout, lock)
    locked_blobs = {f.blob for f in lock.files if f.blob} if lock is not None else set()
    dropped = {Path(f.path) for f in findings if f.kind == "unknown-file"}
    findings += [f for f in _orphan_blobs(layout, dropped) if f.path not in locked_blobs]
    return findings


def fix(layout: Layout, findings: list[Finding]) -> list[Finding]:
    """Delete what the findings name (only fixable ones); return those repaired."""
    repaired = []
    for finding in findings:
        if not finding.fixable:
            continue
        path = layout.abs(finding.path)
        if finding.kind == "size-mismatch":
            _remove(path.resolve() if path.is_symlink() else path)
        _remove(path)
        repaired.append(finding)
    return repaired


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def to_dicts(findings: list[Finding]) -> list[dict]:
    return [asdict(f) for f in findings]


def _walk_files(root: Path) -> Iterator[Path]:
    """Files and symlinks under root (symlinks not followed)."""
    if not root.is_dir():
        return
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


def _temporaries(layout: Layout) -> list[Finding]:
    found = []
    for path in _walk_files(layout.root):
        name = path.name
        if name.endswith(".incomplete"):
            found.append(Finding("temporary", layout.rel(path), "leftover of an interrupted huggingface_hub download"))
        elif path.parent == layout.partial and name.endswith(".part"):
            size = path.lstat().st_size
            found.append(Finding("temporary", layout.rel(path), f"partial download ({size} bytes), resumable by fetch"))
        elif path.parent == layout.partial and name.endswith(".segments"):
            found.append(Finding("temporary", layout.rel(path), "progress record of a partial download in segments"))
        elif layout.partial in path.parents:
            found.append(Finding("temporary", layout.rel(path), "leftover of an interrupted Xet transfer or import"))
        elif name.endswith((".tmp", ".tmp-link")) and name.startswith("."):
            found.append(Finding("temporary", layout.rel(path), "leftover of an interrupted atomic write"))
    return found


def _pointer_files(layout: Layout) -> list[Finding]:
    found = []
    roots = [layout.hub, layout.whisper, layout.files]
    for root in roots:
        for path in _walk_files(root):
            if path.is_symlink():
                continue
            try:
                if path.stat().st_size > POINTER_MAX:
                    continue
                with open(path, "rb") as fh:
                    head = fh.read(len(LFS_POINTER_PREFIX))
            except OSError:
                continue
            if head == LFS_POINTER_PREFIX:
                found.append(Finding("lfs-pointer", layout.rel(path), "a Git LFS pointer file, not the real content"))
    return found


def _broken_links(layout: Layout) -> list[Finding]:
    found = []
    for path in _walk_files(layout.hub):
        if path.is_symlink() and not path.exists():
            found.append(Finding("broken-symlink", layout.rel(path), f"points to missing {os.readlink(path)}"))
    return found


def _size_mismatches(layout: Layout, lock: Lock) -> list[Finding]:
    found = []
    for entry in lock.files:
        path = layout.abs(entry.path)
        try:
            st = path.stat()
        except OSError:
            continue  # missing: `verify` reports it, `fetch` brings it back
        if not stat.S_ISREG(st.st_mode):
            found.append(Finding("size-mismatch", entry.path, "not a regular file"))
        elif (size := st.st_size) != entry.size:
            found.append(Finding("size-mismatch", entry.path, f"{size} bytes, the lock says {entry.size}"))
    return found


def _unknown_files(layout: Layout, lock: Lock) -> list[Finding]:
    known = {entry.path for entry in lock.files}
    locked_repos = {layout.abs(a.dest) for a in lock.artifacts if a.kind in ("hf", "mlx")}
    found = []
    for root in (layout.whisper, layout.files):
        for path in _walk_files(root):
            if layout.rel(path) not in known:
                found.append(Finding("unknown-file", layout.rel(path), "not in the lock"))
    for repo in locked_repos:
        for path in _walk_files(repo / "snapshots"):
            if layout.rel(path) not in known:
                found.append(Finding("unknown-file", layout.rel(path), "not in the lock"))
    return found


def _orphan_blobs(layout: Layout, dropped: set[Path]) -> list[Finding]:
    """Blobs no snapshot path points to (counting the unknown files about to be removed as gone)."""
    found: list[Finding] = []
    if not layout.hub.is_dir():
        return found
    for repo in layout.hub.iterdir():
        blobs = repo / "blobs"
        if not blobs.is_dir():
            continue
        used = set()
        for path in _walk_files(repo / "snapshots"):
            if path.is_symlink() and Path(layout.rel(path)) not in dropped:
                used.add(os.path.abspath(os.path.join(path.parent, os.readlink(path))))
        for blob in blobs.iterdir():
            if blob.name.endswith(".incomplete") or os.path.abspath(blob) in used:
                continue
            found.append(Finding("orphan-blob", layout.rel(blob), "no snapshot points to it"))
    return found
