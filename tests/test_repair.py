"""A damaged volume, one case at a time: `verify` / `doctor` find it; `fetch` repairs only it."""

from __future__ import annotations

import json
import os
from fnmatch import fnmatch
from pathlib import Path

import pytest

from modelcache.errors import EXIT_VERIFY
from modelcache.layout import Layout
from modelcache.volume_lock import read_lock
from tests.conftest import Volume
from tests.fetch.test_runner import assert_complete, final_paths
from tests.support.fixtures import MINILM, MirrorModels

WEIGHTS = "model.safetensors"


def fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every final file's real content: what a repair must leave alone."""
    result = {}
    for path in final_paths(root):
        st = os.stat(path)
        result[str(path.relative_to(root))] = (st.st_ino, st.st_mtime_ns)
    return result


def weights_paths(volume: Volume, models: MirrorModels) -> tuple[Path, Path, str]:
    layout = Layout(volume.root)
    pointer = layout.snapshot(MINILM, models.commits[MINILM]) / WEIGHTS
    blob = pointer.resolve()
    return pointer, blob, layout.rel(pointer)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))


def verify_json(volume: Volume, *args: str) -> tuple[int, dict]:
    proc = volume.cli("verify", "--json", *args)
    return proc.returncode, json.loads(proc.stdout)


def doctor_json(volume: Volume, *args: str) -> tuple[int, dict]:
    proc = volume.cli("doctor", "--json", *args)
    return proc.returncode, json.loads(proc.stdout)


def transferred(models: MirrorModels) -> set[str]:
    return {r.path for r in models.mirror.requests if r.method == "GET" and "/api/" not in r.path}


def assert_repaired_only(
    volume: Volume, models: MirrorModels, before: dict, damaged: str, *, deep: bool = False
) -> None:
    models.mirror.reset_log()
    result = volume.fetch(deep=deep)
    assert not result.warm
    after = fingerprint(volume.root)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed <= {damaged}, changed
    fetched = transferred(models)
    assert all(fnmatch(p, f"*/all-MiniLM-L6-v2/resolve/*/{WEIGHTS}") for p in fetched), fetched
    assert_complete(volume)


def test_bit_flip_is_found_by_deep_verify_and_repaired_by_deep_fetch(warm: Volume, models: MirrorModels) -> None:
    _pointer, blob, rel = weights_paths(warm, models)
    before = fingerprint(warm.root)
    flip_byte(blob, 12345)
    code, fast = verify_json(warm)
    assert code == 0 and fast["ok"]  # same size: the fast check cannot see it
    code, deep = verify_json(warm, "--deep")
    assert code == EXIT_VERIFY
    assert [(p["issue"], p["path"]) for p in deep["problems"]] == [("sha256", rel)]
    assert warm.fetch().warm  # a fast fetch trusts sizes...
    assert_repaired_only(warm, models, before, rel, deep=True)  # ...a deep one repairs it


def test_truncation_is_found_and_repaired(warm: Volume, models: MirrorModels) -> None:
    _pointer, blob, rel = weights_paths(warm, models)
    before = fingerprint(warm.root)
    os.truncate(blob, blob.stat().st_size // 3)
    code, report = verify_json(warm)
    assert code == EXIT_VERIFY and [(p["issue"], p["path"]) for p in report["problems"]] == [("size", rel)]
    code, doc = doctor_json(warm)
    assert code == EXIT_VERIFY and [(f["kind"], f["path"]) for f in doc["findings"]] == [("size-mismatch", rel)]
    assert_repaired_only(warm, models, before, rel)


def test_lfs_pointer_file_is_found_and_repaired(warm: Volume, models: MirrorModels) -> None:
    _pointer, blob, rel = weights_paths(warm, models)
    before = fingerprint(warm.root)
    blob.write_bytes(
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db\nsize 90868376\n"
    )
    code, doc = doctor_json(warm)
    kinds = {(f["kind"], f["path"]) for f in doc["findings"]}
    assert ("lfs-pointer", Layout(warm.root).rel(blob)) in kinds and ("size-mismatch", rel) in kinds
    code, report = verify_json(warm)
    assert code == EXIT_VERIFY and report["problems"][0]["path"] == rel
    assert_repaired_only(warm, models, before, rel)


def test_missing_blob_is_found_and_repaired(warm: Volume, models: MirrorModels) -> None:
    _pointer, blob, rel = weights_paths(warm, models)
    before = fingerprint(warm.root)
    blob.unlink()
    code, report = verify_json(warm)
    assert code == EXIT_VERIFY
    assert [(p["issue"], p["path"], p["found"]) for p in report["problems"]] == [("missing", rel, "a broken symlink")]
    code, doc = doctor_json(warm)
    assert [(f["kind"], f["path"]) for f in doc["findings"]] == [("broken-symlink", rel)]
    assert_repaired_only(warm, models, before, rel)


def test_broken_symlink_is_relinked_without_any_download(warm: Volume, models: MirrorModels) -> None:
    pointer, _blob, rel = weights_paths(warm, models)
    before = fingerprint(warm.root)
    pointer.unlink()
    os.symlink("../../blobs/0000000000000000000000000000000000000000", pointer)
    _code, doc = doctor_json(warm)
    # the blob is still in the lock: not an orphan, so `doctor --fix` would not delete it
    assert {(f["kind"], f["path"]) for f in doc["findings"]} == {("broken-symlink", rel)}
    models.mirror.reset_log()
    assert not warm.fetch().warm
    assert transferred(models) == set()  # the blob was still there: relinked, not re-downloaded
    assert fingerprint(warm.root) == before
    assert_complete(warm)


def test_stale_temporary_files_are_found_and_swept(warm: Volume, models: MirrorModels) -> None:
    layout = Layout(warm.root)
    part = layout.partial / ("ab" * 32 + ".part")
    part.write_bytes(b"half a file")
    incomplete = layout.repo_dir(MINILM) / "blobs" / "deadbeef.incomplete"
    incomplete.write_bytes(b"left by huggingface_hub")
    before = fingerprint(warm.root)
    code, doc = doctor_json(warm)
    assert code == EXIT_VERIFY
    assert {(f["kind"], f["path"]) for f in doc["findings"]} == {
        ("temporary", layout.rel(part)),
        ("temporary", layout.rel(incomplete)),
    }
    code, _report = verify_json(warm)
    assert code == 0  # the wanted files are intact
    result = warm.fetch()
    assert result.warm and models.mirror.requests == []
    assert not part.exists() and not incomplete.exists()
    assert fingerprint(warm.root) == before


def test_doctor_fix_repairs_only_what_it_found(warm: Volume, models: MirrorModels) -> None:
    layout = Layout(warm.root)
    _pointer, blob, rel = weights_paths(warm, models)
    os.truncate(blob, 1000)
    stray = layout.whisper / "stray.pt"
    stray.write_bytes(b"x" * 10)
    orphan = layout.repo_dir(MINILM) / "blobs" / ("cd" * 32)
    orphan.write_bytes(b"orphan")
    before = fingerprint(warm.root)
    code, doc = doctor_json(warm, "--fix")
    assert code == 0
    assert {f["kind"] for f in doc["repaired"]} == {"size-mismatch", "unknown-file", "orphan-blob"}
    assert not stray.exists() and not orphan.exists() and not blob.exists()
    untouched = {p: v for p, v in before.items() if p not in (rel, layout.rel(stray))}
    assert {p: v for p, v in fingerprint(warm.root).items() if p in untouched} == untouched
    assert doctor_json(warm) == (0, {"findings": [], "repaired": []})
    code, report = verify_json(warm)  # what was deleted is now simply missing...
    assert code == EXIT_VERIFY and [(p["issue"], p["path"]) for p in report["problems"]] == [("missing", rel)]
    assert_repaired_only(warm, models, before, rel)  # ...and fetch brings it back


def test_a_directory_where_the_checkpoint_belongs_is_replaced(warm: Volume, models: MirrorModels) -> None:
    checkpoint = Layout(warm.root).whisper / "tiny.en.pt"
    checkpoint.unlink()
    (checkpoint / "junk").mkdir(parents=True)
    _code, doc = doctor_json(warm)
    assert ("size-mismatch", "whisper/tiny.en.pt") in {(f["kind"], f["path"]) for f in doc["findings"]}
    warm.fetch()
    assert checkpoint.is_file() and checkpoint.read_bytes() == models.whisper_bytes


def test_config_drift_is_a_verification_failure(warm: Volume) -> None:
    proc = warm.cli("verify", MODELCACHE_VISION="google/siglip-so400m-patch14-384")
    assert proc.returncode == EXIT_VERIFY
    assert "drift" in proc.stdout and "google/siglip-so400m-patch14-384" in proc.stdout


def test_damaged_lock_is_a_verification_failure(warm: Volume) -> None:
    Layout(warm.root).lock_file.write_text("{ not json")
    proc = warm.cli("verify")
    assert proc.returncode == EXIT_VERIFY
    assert "lock.json is damaged" in proc.stderr and "modelcache fetch" in proc.stderr


@pytest.mark.parametrize("workers", ["1", "4"])
def test_deep_verify_hashes_every_byte(warm: Volume, workers: str) -> None:
    code, report = verify_json(warm, "--deep", "--workers", workers)
    assert code == 0 and report["deep"] and report["files"] == len(read_lock(Layout(warm.root)).files)
    assert report["bytes"] == sum(f.size for f in read_lock(Layout(warm.root)).files)
