"""Content hashes: sha256 for every file, plus git's blob oid for small Hub files."""

from __future__ import annotations

import hashlib
from pathlib import Path

READ_CHUNK = 4 * 1024 * 1024


class Hasher:
    """sha256 of a stream, and optionally its git blob oid (sha1 of "blob <size>\\0" + bytes)."""

    def __init__(self, git_size: int | None = None) -> None:
        self._sha256 = hashlib.sha256()
        self._git = None
        if git_size is not None:
            self._git = hashlib.sha1(usedforsecurity=False)
            self._git.update(b"blob %d\0" % git_size)

    def update(self, data: bytes) -> None:
        self._sha256.update(data)
        if self._git is not None:
            self._git.update(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def git_oid(self) -> str | None:
        return self._git.hexdigest() if self._git is not None else None


def hash_file(path: Path, *, git_size: int | None = None, hasher: Hasher | None = None) -> Hasher:
    """Hash a whole file (into ``hasher`` if given). hashlib drops the GIL on big reads."""
    hasher = hasher or Hasher(git_size)
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(READ_CHUNK):
            hasher.update(block)
    return hasher


def sha256_file(path: Path) -> str:
    return hash_file(path).sha256
