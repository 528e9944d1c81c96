"""The ONNX text engines at fetch time: which graph files come from the repo, the graph the
downloader exports (or quantizes) when the repo has none, and how the lock records and
verification covers it. Real MiniLM weights, the real huggingface_hub client, the mirror
on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelcache.fetch.export import export_text_graph
from modelcache.hashing import sha256_file
from modelcache.layout import Layout
from modelcache.plan import REPO_GRAPH, REPO_QUANTIZED
from modelcache.volume_lock import read_lock
from tests.conftest import Volume, _cli_env
from tests.support.fixtures import MINILM, MirrorModels, minilm_dir

ONLY_TEXT = {
    "MODELCACHE_WHISPER": "none",
    "MODELCACHE_VISION": "none",
    "MODELCACHE_FACE": "none",
    "MODELCACHE_MLX": "",
}
WITH_GRAPH = "test-org/minilm-with-onnx"
WITH_FP32_GRAPH = "test-org/minilm-fp32-graph"


def _snapshot(commit: str) -> str:
    return f"snapshots/{commit}"


@pytest.fixture(scope="module")
def minilm_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("graph") / "model.onnx"
    export_text_graph(minilm_dir(), out)
    return out


def _minilm_with(models: MirrorModels, repo: str, graphs: dict[str, Path]) -> str:
    files = {p.relative_to(minilm_dir()).as_posix(): p for p in minilm_dir().rglob("*") if p.is_file()}
    return models.mirror.add_repo(repo, {**files, **graphs})


@pytest.fixture
def repo_with_graphs(models: MirrorModels, minilm_graph: Path, tmp_path: Path) -> str:
    """MiniLM as sentence-transformers repos are on the Hub: torch weights, onnx/model.onnx
    and an int8 graph, onnx/model_quint8_avx2.onnx, beside each other."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quint8 = tmp_path / "model_quint8_avx2.onnx"
    quantize_dynamic(minilm_graph, quint8, weight_type=QuantType.QUInt8)
    return _minilm_with(models, WITH_GRAPH, {REPO_GRAPH: minilm_graph, REPO_QUANTIZED: quint8})


def _files(volume: Volume, name: str) -> dict[str, str]:
    lock = read_lock(Layout(volume.root))
    assert lock is not None
    artifact = lock.get(name)
    assert artifact is not None
    return {f.path: f.sha256 for f in artifact.files}


def test_a_repo_without_a_graph_gets_one_exported_and_locked(volume: Volume, models: MirrorModels) -> None:
    env = {**ONLY_TEXT, "MODELCACHE_TEXT_ENGINE": "onnx"}
    result = volume.fetch(**env)
    commit = models.commits[MINILM]
    exported = f"exports/models--sentence-transformers--all-MiniLM-L6-v2/{commit}/model.onnx"
    files = _files(volume, MINILM)
    assert exported in files and files[exported] == sha256_file(volume.root / exported)
    assert any(p.endswith("/model.safetensors") for p in files)  # what it was exported from
    assert result.lock.get(MINILM).engine == "onnx"  # type: ignore[union-attr]
    assert not list((volume.root / ".modelcache" / "partial").iterdir())  # the work folder is gone

    # warm: no request, no new export
    mtime = (volume.root / exported).stat().st_mtime_ns
    models.mirror.reset_log()
    assert volume.fetch(**env).warm and models.mirror.requests == []
    assert (volume.root / exported).stat().st_mtime_ns == mtime

    # a damaged graph: verification names it, the service refuses to start, a fetch makes it again
    data = bytearray((volume.root / exported).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (volume.root / exported).write_bytes(bytes(data))
    proc = volume.cli("verify", "--deep", **env)
    assert proc.returncode != 0 and exported in proc.stdout + proc.stderr
    refetched = volume.fetch(deep=True, **env)
    assert not refetched.warm and models.mirror.bytes_served("*model.safetensors") == 0
    assert sha256_file(volume.root / exported) == files[exported]  # the export is reproducible


def test_each_engine_fetches_only_the_weights_it_runs(
    volume: Volume, models: MirrorModels, repo_with_graphs: str
) -> None:
    env = {**ONLY_TEXT, "MODELCACHE_TEXT_EMBEDDING": WITH_GRAPH}
    volume.fetch(**env)
    torch_files = _files(volume, WITH_GRAPH)
    assert any(p.endswith("/model.safetensors") for p in torch_files)
    assert not any(".onnx" in p for p in torch_files)

    volume.fetch(**env, MODELCACHE_TEXT_ENGINE="onnx")
    onnx_files = _files(volume, WITH_GRAPH)
    graphs = [p for p in onnx_files if ".onnx" in p]
    assert len(graphs) == 1 and graphs[0].endswith(f"{_snapshot(repo_with_graphs)}/{REPO_GRAPH}")
    assert not any(p.endswith((".safetensors", ".bin")) for p in onnx_files)
    assert {p.rsplit("/", 1)[1] for p in onnx_files} >= {"tokenizer.json", "config.json", "modules.json"}

    models.mirror.reset_log()
    volume.fetch(**env, MODELCACHE_TEXT_ENGINE="onnx-int8")  # the repo's own int8 graph, nothing made
    int8_files = _files(volume, WITH_GRAPH)
    graphs = [p for p in int8_files if ".onnx" in p]
    assert len(graphs) == 1 and graphs[0].endswith(f"{_snapshot(repo_with_graphs)}/{REPO_QUANTIZED}")
    quint8 = volume.root / next(p for p in int8_files if p.endswith(REPO_QUANTIZED))
    size = quint8.stat().st_size  # the int8 graph alone came (a redirect's small body besides)
    assert size <= models.mirror.bytes_served("*.onnx") < size + 10_000
    assert not (volume.root / "exports").exists()


def test_int8_weights_are_made_at_fetch_when_the_repo_has_no_int8_graph(
    volume: Volume, models: MirrorModels, minilm_graph: Path
) -> None:
    commit = _minilm_with(models, WITH_FP32_GRAPH, {REPO_GRAPH: minilm_graph})
    env = {**ONLY_TEXT, "MODELCACHE_TEXT_EMBEDDING": WITH_FP32_GRAPH, "MODELCACHE_TEXT_ENGINE": "onnx-int8"}
    volume.fetch(**env)
    files = _files(volume, WITH_FP32_GRAPH)
    quantized = f"exports/models--test-org--minilm-fp32-graph/{commit}/model_int8.onnx"
    assert files[quantized] == sha256_file(volume.root / quantized)
    assert not any(p.endswith((".safetensors", ".bin")) for p in files)  # quantized from the repo's graph
    assert (volume.root / quantized).stat().st_size < 0.4 * minilm_graph.stat().st_size
    assert volume.cli("verify", "--deep", **env).returncode == 0


def test_a_downloader_without_torch_refuses_an_export_before_fetching(volume: Volume, models: MirrorModels) -> None:
    code = "import sys; sys.modules['torch'] = None\nfrom modelcache.cli import main\nsys.argv = ['modelcache', 'fetch']\nmain()"
    env = _cli_env({**volume.env, **ONLY_TEXT, "MODELCACHE_TEXT_ENGINE": "onnx"})
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "needs the downloader to export the model to ONNX, and it lacks torch; nothing was fetched" in proc.stderr
    assert "DOWNLOADER_EXTRAS=downloader,export" in proc.stderr
    assert models.mirror.bytes_served("*model.safetensors") == 0
    assert read_lock(Layout(volume.root)) is None


def test_prune_keeps_the_graph_the_lock_holds_and_drops_others(volume: Volume) -> None:
    env = {**ONLY_TEXT, "MODELCACHE_TEXT_ENGINE": "onnx"}
    volume.fetch(**env)
    exports = volume.root / "exports"
    graphs = list(exports.rglob("model.onnx"))
    stale = graphs[0].parent.with_name("0" * 40) / "model.onnx"  # an older commit's export
    stale.parent.mkdir()
    shutil.copyfile(graphs[0], stale)
    proc = volume.cli("prune", **env)
    assert proc.returncode == 0, proc.stderr
    assert graphs[0].exists() and not stale.exists()
    proc = volume.cli("rm", MINILM, **env)
    assert proc.returncode == 0, proc.stderr
    assert not exports.exists() or not list(exports.rglob("*.onnx"))
    assert json.loads((volume.root / ".modelcache" / "lock.json").read_text())["artifacts"] == []
