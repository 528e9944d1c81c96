"""The ONNX Runtime text engine against the torch engine on real MiniLM weights (no HTTP):
equal output within cosine 0.999 (fp32) for texts, token ids, long inputs and mixed
batches; the int8 graph's accuracy floor; threads from the CPU budget; what it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelcache.fetch.export import export_text_graph, quantize_graph
from modelcache.service.engines.base import LoadSpec
from modelcache.service.engines.text import TransformersTextEmbedder
from modelcache.service.engines.text_onnx import GraphTextEmbedder, OnnxTextEmbedder, OpenVinoTextEmbedder
from modelcache.service.faults import InputError, UnsupportedModel
from tests.support.fixtures import minilm_dir

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Embeddings map text to vectors; similar texts get similar vectors.",
    "Ünïcödé, emoji 🙂 and numbers 1234567890 mixed in one line",
    "word " * 400,  # past the model's 256-token limit: cut the same way by both
    "",
]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("graphs")
    fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"
    export_text_graph(minilm_dir(), fp32)
    quantize_graph(fp32, int8, minilm_dir())
    return fp32, int8


@pytest.fixture(scope="module")
def torch_engine() -> TransformersTextEmbedder:
    return TransformersTextEmbedder(LoadSpec("minilm", minilm_dir(), "cpu", threads=1))


def _onnx(graph: Path, threads: int = 1, engine: type[GraphTextEmbedder] = OnnxTextEmbedder) -> GraphTextEmbedder:
    return engine(LoadSpec("minilm", minilm_dir(), "cpu", "onnx", threads=threads, graph=graph))


RUNTIMES = pytest.mark.parametrize("runtime", [OnnxTextEmbedder, OpenVinoTextEmbedder], ids=["onnxruntime", "openvino"])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@RUNTIMES
def test_fp32_graph_gives_the_torch_engines_vectors(graphs: tuple[Path, Path], torch_engine, runtime) -> None:
    engine = _onnx(graphs[0], engine=runtime)
    assert (engine.dimensions, engine.max_length, engine.vocab_size) == (
        torch_engine.dimensions,
        torch_engine.max_length,
        torch_engine.vocab_size,
    )
    assert engine.normalized and engine.matryoshka_dimensions is None
    expected, expected_tokens = torch_engine.embed(TEXTS)
    got, tokens = engine.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(TEXTS), 384)
    assert tokens == expected_tokens and tokens[4] == 256
    assert _cosines(got, expected).min() >= 0.999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # one at a time gives what the batch gives (padding changes nothing)
    for i, text in enumerate(TEXTS):
        alone, _ = engine.embed([text])
        assert _cosines(alone, got[i : i + 1])[0] >= 0.9999


@RUNTIMES
def test_token_ids_and_texts_mix_in_one_batch(graphs: tuple[Path, Path], torch_engine, runtime) -> None:
    engine = _onnx(graphs[0], engine=runtime)
    ids = torch_engine.tokenizer(TEXTS[2])["input_ids"]
    by_text, _ = engine.embed([TEXTS[0], TEXTS[2]])
    mixed, tokens = engine.embed([TEXTS[0], ids])
    assert np.abs(mixed - by_text).max() < 1e-5 and tokens[1] == len(ids)
    torch_ids, _ = torch_engine.embed([ids])
    assert _cosines(mixed[1:], torch_ids)[0] >= 0.999
    _vectors, used = engine.embed([[ids[1]] * (engine.max_length + 50)])
    assert used == [engine.max_length]
    with pytest.raises(InputError, match=r"input\[0\]\[1\]: token id 30522 is outside"):
        engine.embed([[101, engine.vocab_size]])


def test_int8_graph_stays_close_and_is_smaller(graphs: tuple[Path, Path], torch_engine) -> None:
    fp32, int8 = graphs
    assert int8.stat().st_size < 0.35 * fp32.stat().st_size
    expected, _ = torch_engine.embed(TEXTS[:4])
    got, _ = _onnx(int8).embed(TEXTS[:4])
    cosines = _cosines(got, expected)
    assert cosines.min() >= 0.95 and cosines.mean() >= 0.98  # the cost is measured in docs/benchmarks.md


def test_threads_come_from_the_cpu_budget_and_stop_spinning(graphs: tuple[Path, Path]) -> None:
    engine = _onnx(graphs[0], threads=2)
    assert isinstance(engine, OnnxTextEmbedder)
    options = engine.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    # no spinning once a forward is done: the niced speech-to-text process beside it gets the CPU
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    openvino = _onnx(graphs[0], threads=2, engine=OpenVinoTextEmbedder)
    assert isinstance(openvino, OpenVinoTextEmbedder)
    assert openvino.compiled.get_property("INFERENCE_NUM_THREADS") == 2


def test_what_the_engine_refuses(graphs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="names no ONNX graph"):
        OnnxTextEmbedder(LoadSpec("minilm", minilm_dir(), "cpu", "onnx"))
    repo = tmp_path / "repo"
    shutil.copytree(minilm_dir(), repo)
    (repo / "tokenizer.json").unlink()
    with pytest.raises(UnsupportedModel, match=r"has no tokenizer\.json"):
        OnnxTextEmbedder(LoadSpec("minilm", repo, "cpu", "onnx", graph=graphs[0]))
    weighted = tmp_path / "weighted"
    shutil.copytree(minilm_dir(), weighted)
    (weighted / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(UnsupportedModel, match="weighted-mean"):
        OnnxTextEmbedder(LoadSpec("minilm", weighted, "cpu", "onnx", graph=graphs[0]))
