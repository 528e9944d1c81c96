"""Where everything lives inside the models volume.

<root>/
  huggingface/            HF_HOME: give this to any Hugging Face library
    hub/                  HF_HUB_CACHE, the standard cache layout:
      models--org--name/
        blobs/<sha256 or git oid>
        refs/<branch>                   -> commit
        snapshots/<commit>/<path>       -> ../../blobs/<oid> (relative symlink)
  whisper/<name>.pt       openai-whisper checkpoints (its download_root)
  files/<path>            plain URL artifacts from the manifest
  exports/models--org--name/<commit>/
    model.onnx            a text model's ONNX graph, exported by the downloader when the
                          repo ships none (MODELCACHE_TEXT_ENGINE=onnx|openvino)
    model_int8.onnx       that graph (or the repo's) with int8 weights (onnx-int8, when
                          the repo ships no int8 graph of its own)
  .modelcache/
    lock.json             written last, atomically: the volume is complete
    fetch.lock            cross-process lock held by a running downloader
    partial/              resumable partial downloads (never at a final path):
                          models--org--name.<oid>.part (a Hub file: per repo, as two
                          repos may hold the same file), <sha256>.part (a URL file or
                          a registry blob), *.segments (progress of parallel segments),
                          xet-* (hf_xet staging and chunk cache, MODELCACHE_TRANSFER=xet)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".modelcache"
LOCK_NAME = "lock.json"


def repo_folder_name(repo_id: str) -> str:
    """``org/name`` -> ``models--org--name`` (huggingface_hub's naming)."""
    return "models--" + repo_id.replace("/", "--")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def hf_home(self) -> Path:
        return self.root / "huggingface"

    @property
    def hub(self) -> Path:
        return self.hf_home / "hub"

    @property
    def whisper(self) -> Path:
        return self.root / "whisper"

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    def export_dir(self, repo_id: str, commit: str) -> Path:
        """Where the files the downloader derives from a repo's commit go (ONNX graphs)."""
        return self.exports / repo_folder_name(repo_id) / commit

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def lock_file(self) -> Path:
        return self.state / LOCK_NAME

    @property
    def fetch_lock(self) -> Path:
        return self.state / "fetch.lock"

    @property
    def partial(self) -> Path:
        return self.state / "partial"

    def repo_dir(self, repo_id: str) -> Path:
        return self.hub / repo_folder_name(repo_id)

    def blob(self, repo_id: str, oid: str) -> Path:
        return self.repo_dir(repo_id) / "blobs" / oid

    def hub_partial(self, repo_id: str, oid: str) -> Path:
        """Where a Hub file is downloaded before it is published as ``blob(repo_id, oid)``.
        Named by repo as well: two repos fetched at once may share a file (a tokenizer)."""
        return self.partial / f"{repo_folder_name(repo_id)}.{oid}.part"

    def snapshot(self, repo_id: str, commit: str) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / commit

    def ref(self, repo_id: str, revision: str) -> Path:
        return self.repo_dir(repo_id) / "refs" / revision

    def rel(self, path: Path) -> str:
        """A path relative to the volume root, with forward slashes (as the lock stores it)."""
        return path.relative_to(self.root).as_posix()

    def abs(self, rel: str) -> Path:
        return self.root / rel


def link_snapshot_file(blob: Path, pointer: Path) -> None:
    """Point ``snapshots/<commit>/<path>`` at its blob with a relative symlink, atomically."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(blob, pointer.parent)
    if pointer.is_symlink() and os.readlink(pointer) == target:
        return
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp-link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, pointer)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small file so that readers see either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
