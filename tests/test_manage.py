"""`rm` and `prune`: remove on purpose, exactly what was asked, and keep the lock honest."""

from __future__ import annotations

import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_VERIFY
from modelcache.layout import Layout
from modelcache.volume_lock import read_lock
from tests.conftest import Volume
from tests.fetch.test_runner import assert_complete
from tests.support.fixtures import MINILM, MLX_WHISPER, SIGLIP, MirrorModels


def test_rm_removes_one_artifact_and_its_lock_entry(warm: Volume, models: MirrorModels) -> None:
    layout = Layout(warm.root)
    dry = warm.cli("rm", SIGLIP, "--dry-run")
    assert dry.returncode == 0 and "would remove huggingface/hub/models--google--siglip" in dry.stdout
    assert layout.repo_dir(SIGLIP).exists()
    proc = warm.cli("rm", SIGLIP)
    assert proc.returncode == 0, proc.stderr
    assert not layout.repo_dir(SIGLIP).exists() and layout.repo_dir(MINILM).exists()
    lock = read_lock(layout)
    assert lock is not None and lock.get(SIGLIP) is None and lock.get(MINILM) is not None
    # the volume no longer holds the plan: verify says so, fetch brings only that repo back
    assert warm.cli("verify").returncode == EXIT_VERIFY
    models.mirror.reset_log()
    warm.fetch()
    repos = {r.path.split("/resolve/")[0] for r in models.mirror.requests if "/resolve/" in r.path}
    assert repos == {f"/{SIGLIP}"}
    assert_complete(warm)


def test_rm_of_an_unknown_name_lists_the_known_ones(warm: Volume) -> None:
    proc = warm.cli("rm", "acme/nope")
    assert proc.returncode == EXIT_CONFIG
    assert "no artifact named 'acme/nope'" in proc.stderr and MINILM in proc.stderr


@pytest.mark.slow
def test_prune_removes_what_the_plan_no_longer_wants(warm: Volume) -> None:
    layout = Layout(warm.root)
    env = {"MODELCACHE_MLX": "", "MODELCACHE_WHISPER": "none"}
    old_snapshot = layout.snapshot(MINILM, "0" * 40)
    old_snapshot.mkdir(parents=True)
    (old_snapshot / "config.json").write_text("{}")
    stale = layout.partial / ("ef" * 32 + ".part")
    stale.write_bytes(b"stale")
    dry = warm.cli("prune", "--dry-run", **env)
    assert dry.returncode == 0
    assert layout.repo_dir(MLX_WHISPER).exists() and (layout.whisper / "tiny.en.pt").exists()
    proc = warm.cli("prune", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.replace("removed", "would remove") == dry.stdout  # the dry run told the truth
    assert not layout.repo_dir(MLX_WHISPER).exists()
    assert not (layout.whisper / "tiny.en.pt").exists()
    assert not old_snapshot.exists()
    assert stale.exists()  # the new plan is not complete yet: a partial file may be its resumable download
    assert layout.repo_dir(MINILM).exists() and layout.repo_dir(SIGLIP).exists()
    lock = read_lock(layout)
    assert lock is not None and lock.get(MLX_WHISPER) is None and lock.get(MINILM) is not None
    # what is left is exactly the (smaller) plan, intact
    assert warm.cli("verify", "--deep", **env).returncode == 0
    assert warm.cli("fetch", **env).returncode == 0  # completes the smaller plan (a new lock)...
    assert not stale.exists()  # ...and sweeps leftover partial files
    assert warm.cli("doctor", **env).returncode == 0


@pytest.mark.slow
def test_writers_refuse_while_a_downloader_holds_the_volume(warm: Volume) -> None:
    from filelock import FileLock

    layout = Layout(warm.root)
    with FileLock(str(layout.fetch_lock)):
        # a dry run refuses too: during a fetch it would list partial files and unlocked blobs
        for args in (
            ("rm", SIGLIP),
            ("prune",),
            ("doctor", "--fix"),
            ("prune", "--dry-run"),
            ("rm", SIGLIP, "--dry-run"),
        ):
            proc = warm.cli(*args)
            assert proc.returncode == 6, (args, proc.stderr)
            assert "is working on" in proc.stderr and "nothing was changed" in proc.stderr
            assert "remedy:" in proc.stderr
        assert warm.cli("doctor").returncode == 0  # plain reading needs no lock
    assert layout.repo_dir(SIGLIP).exists()
