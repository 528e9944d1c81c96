"""The text engine's Matryoshka sizes and token-id inputs, on a tiny BERT (no HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelcache.service.engines.base import LoadSpec
from modelcache.service.engines.text import TransformersTextEmbedder, read_matryoshka, shorten
from modelcache.service.faults import InputError
from modelcache.testing import tiny_models
from tests.support import fixtures


def test_matryoshka_sizes_come_from_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"matryoshka_dimensions": [256, 64, 128, 64]}))
    assert read_matryoshka(tmp_path) == [64, 128, 256]
    for bad in ({}, {"matryoshka_dimensions": []}, {"matryoshka_dimensions": [0, 5]}, {"matryoshka_dimensions": "64"}):
        (tmp_path / "config.json").write_text(json.dumps(bad))
        assert read_matryoshka(tmp_path) is None
    (tmp_path / "config.json").write_text("{not json")
    assert read_matryoshka(tmp_path) is None


def test_shorten_keeps_the_first_values_and_normalises_again() -> None:
    vectors = np.array([[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    cut = shorten(vectors, 2, normalize=True)
    assert cut.shape == (2, 2) and np.allclose(cut, [[0.6, 0.8], [1.0, 0.0]])
    assert np.allclose(shorten(vectors, 2, normalize=False), [[3.0, 4.0], [1.0, 0.0]])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> TransformersTextEmbedder:
    folder = tmp_path_factory.mktemp("bert")
    path = tiny_models.write_repo(tiny_models.tiny_bert_repo(fixtures.minilm_dir()), folder)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [8]}))
    return TransformersTextEmbedder(LoadSpec("tiny", path, "cpu"))


def test_token_ids_and_texts_mix_in_one_batch(tiny_bert: TransformersTextEmbedder) -> None:
    texts = ["a short text", "another, rather longer text about the weather"]
    ids = [tiny_bert.tokenizer(t)["input_ids"] for t in texts]
    by_text, tokens = tiny_bert.embed(texts)
    mixed, mixed_tokens = tiny_bert.embed([texts[0], ids[1]])
    assert np.abs(mixed - by_text).max() < 1e-5 and mixed_tokens == tokens
    assert tiny_bert.matryoshka_dimensions == [8] and tiny_bert.vocab_size == len(tiny_bert.tokenizer)
    with pytest.raises(InputError, match=r"outside this model.s vocabulary"):
        tiny_bert.embed([[1, tiny_bert.vocab_size]])
    _vectors, used = tiny_bert.embed([[ids[0][1]] * (tiny_bert.max_length + 50)])
    assert used == [tiny_bert.max_length]


def test_the_route_accepts_declared_matryoshka_sizes_only() -> None:
    from types import SimpleNamespace

    from modelcache.service.http.errors import ApiError
    from modelcache.service.http.routes.embeddings import check_dimensions, sized

    entry = SimpleNamespace(info={"dimensions": 4, "matryoshka_dimensions": [2], "normalized": True})
    check_dimensions(None, entry)
    check_dimensions(4, entry)
    check_dimensions(2, entry)
    with pytest.raises(ApiError, match="gives 2, 4 dimensions") as info:
        check_dimensions(3, entry)
    assert info.value.status == 400 and info.value.param == "dimensions"
    vectors = np.array([[3.0, 4.0, 1.0, 1.0]], dtype=np.float32)
    assert np.allclose(sized(vectors, 2, entry), [[0.6, 0.8]])
    assert sized(vectors, None, entry) is vectors
    plain = SimpleNamespace(info={"dimensions": 4})
    with pytest.raises(ApiError, match="must be 4 or left out"):
        check_dimensions(2, plain)
