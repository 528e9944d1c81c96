"""The service with MODELCACHE_TEXT_ENGINE=onnx, onnx-int8 and openvino, on volumes the real
downloader filled (the graph exported at fetch): OpenAI embeddings equal to
sentence-transformers' within cosine 0.999 (fp32), a model process without torch, and the
gate refusing a volume whose graph is gone."""

from __future__ import annotations

from pathlib import Path

import httpx2
import numpy as np
import pytest

from modelcache.errors import EXIT_VERIFY
from modelcache.fetch.runner import run_fetch
from modelcache.progress import PlainReporter
from modelcache.settings import Settings
from tests.support.fixtures import MINILM, MirrorModels, minilm_dir
from tests.support.service import run_serve, start_service

pytestmark = pytest.mark.slow  # each test fetches and starts `modelcache serve`

ONLY_TEXT = {"MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none", "MODELCACHE_MLX": ""}
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Offline model serving", "a"]


def _volume(tmp_path: Path, models: MirrorModels, engine: str) -> dict[str, str]:
    env = models.env(tmp_path / "models", **ONLY_TEXT, MODELCACHE_TEXT_ENGINE=engine, MODELCACHE_THREADS="1")
    run_fetch(Settings.from_env(env), reporter=PlainReporter())
    return env


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu").encode(TEXTS, normalize_embeddings=True)


@pytest.mark.parametrize(
    ("engine", "minimum", "runtime"),
    [("onnx", 0.999, "onnxruntime"), ("onnx-int8", 0.95, "onnxruntime"), ("openvino", 0.999, "libopenvino")],
)
def test_embeddings_from_the_onnx_engines(
    tmp_path: Path, models: MirrorModels, reference: np.ndarray, engine: str, minimum: float, runtime: str
) -> None:
    env = _volume(tmp_path, models, engine)
    service = start_service(env, tmp_path / "serve.log")
    try:
        answer = httpx2.post(f"{service.url}/v1/embeddings", json={"model": MINILM, "input": TEXTS}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        cosines = (got * reference).sum(axis=1) / np.linalg.norm(got, axis=1)
        assert got.shape == (3, 384) and cosines.min() >= minimum, cosines
        assert body["usage"]["prompt_tokens"] == 13 + 5 + 3
        info = httpx2.get(f"{service.url}/v1/models/{MINILM}").json()
        assert info["engine"] == engine
        pid = httpx2.get(f"{service.url}/health").json()["models"][MINILM]["pid"]
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert runtime in maps and "libtorch" not in maps  # the model process never loads torch
    finally:
        service.stop()


def test_the_gate_refuses_a_volume_whose_exported_graph_is_gone(tmp_path: Path, models: MirrorModels) -> None:
    env = _volume(tmp_path, models, "onnx")
    graph = next((tmp_path / "models" / "exports").rglob("model.onnx"))
    graph.unlink()
    proc = run_serve(env)
    assert proc.returncode == EXIT_VERIFY, proc.stderr
    assert str(graph.relative_to(tmp_path / "models")) in proc.stderr and "missing" in proc.stderr
    assert "listening on" not in proc.stderr
