"""/v1/embeddings with token arrays (ids in the served model's vocabulary, as vLLM and TEI
take them), the one truncation rule for texts and ids, and `dimensions`; real MiniLM."""

from __future__ import annotations

import httpx2
import numpy as np
import pytest

from tests.support import fixtures
from tests.support.openai_schema import validate
from tests.support.service import Service

pytestmark = pytest.mark.slow  # the tests use `modelcache serve`


def embed(service: Service, **body) -> httpx2.Response:
    return httpx2.post(f"{service.url}/v1/embeddings", json={"model": fixtures.MINILM, **body}, timeout=60)


def vectors(response: httpx2.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    validate(response.json(), "CreateEmbeddingResponse")
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(fixtures.minilm_dir()))


def test_token_ids_give_the_vector_of_their_text(server: Service, tokenizer) -> None:
    texts = ["A man is eating food.", "The stock market fell sharply today."]
    ids = [tokenizer(t)["input_ids"] for t in texts]  # with [CLS] and [SEP], as the model's tokenizer makes them
    by_text = vectors(embed(server, input=texts))
    one = embed(server, input=ids[0])
    assert np.abs(vectors(one)[0] - by_text[0]).max() < 1e-5
    assert one.json()["usage"]["prompt_tokens"] == len(ids[0])
    several = embed(server, input=ids)
    assert np.abs(vectors(several) - by_text).max() < 1e-5
    assert [d["index"] for d in several.json()["data"]] == [0, 1]
    assert several.json()["usage"]["prompt_tokens"] == sum(len(i) for i in ids)


def test_bad_token_arrays_are_refused_naming_the_place(server: Service, tokenizer) -> None:
    vocab = len(tokenizer)
    cases = [
        (
            {"input": [101, 7592, vocab, 102]},
            "input[2]",
            f"token id {vocab} is outside this model's vocabulary (0..{vocab - 1})",
        ),
        ({"input": [[101, 102], [101, 7592, 10**9, 102]]}, "input[1][2]", "outside this model's vocabulary"),
        ({"input": [101, -5, 102]}, "input", ""),
        ({"input": []}, "input", ""),
        ({"input": [[101, 102], []]}, "input", ""),
        ({"input": ["a text", [101, 102]]}, "input", "texts only or token arrays only"),
        ({"input": [101, 1.5, 102]}, "input", ""),
    ]
    for body, param, message in cases:
        response = embed(server, **body)
        assert response.status_code == 400, (body, response.text)
        validate(response.json(), "ErrorResponse")
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"].startswith(param), (body, error)
        assert message in error["message"], (body, error)
    # a model that embeds images takes no token arrays: it says so
    siglip = httpx2.post(
        f"{server.url}/v1/embeddings", json={"model": fixtures.SIGLIP, "input": [[1, 2, 3]]}, timeout=60
    )
    assert siglip.status_code == 400 and "text-embedding models only" in siglip.json()["error"]["message"]
    assert embed(server, input="still serving").status_code == 200


def test_long_texts_and_long_token_arrays_are_cut_to_the_model_limit(server: Service, tokenizer) -> None:
    long_text = " ".join(["word"] * 2000)
    text = embed(server, input=long_text)
    ids = embed(server, input=[7592] * 2000)
    limit = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
    assert text.status_code == ids.status_code == 200
    assert text.json()["usage"]["prompt_tokens"] == ids.json()["usage"]["prompt_tokens"] == limit
    # the first 256 ids of a longer array give the vector of those 256 ids
    cut = embed(server, input=[7592] * limit)
    assert np.abs(vectors(ids) - vectors(cut)).max() < 1e-5


def test_dimensions_other_than_the_model_size_are_refused_without_matryoshka(server: Service) -> None:
    assert vectors(embed(server, input="hello", dimensions=384)).shape == (1, 384)
    refused = embed(server, input="hello", dimensions=128)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions"
    assert "384" in refused.json()["error"]["message"]
