"""/v1/embeddings with token arrays (ids in the served model's vocabulary, as vLLM and TEI
take them), the one truncation rule for texts and ids, and `dimensions`; real MiniLM."""

from __future__ import annotations

import base64
import os

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


# --- Matryoshka sizes, on tiny BERTs whose config.json declares them --------------------------

LISTED = "acme/tiny-bert-matryoshka-sizes"  # matryoshka_dimensions: [16, 32]
ANY_SIZE = "acme/tiny-bert-matryoshka-any"  # is_matryoshka: true
TEXTS = ["A man is eating food.", "The stock market fell sharply today."]


def _matryoshka_repo(**declared) -> dict[str, bytes]:
    import json

    from modelcache.testing import tiny_models

    files = tiny_models.tiny_bert_repo(fixtures.minilm_dir())  # 64 dimensions, normalised
    files["config.json"] = json.dumps({**json.loads(files["config.json"]), **declared}).encode()
    return files


@pytest.fixture(scope="module")
def matryoshka(_mirror_models, tmp_path_factory: pytest.TempPathFactory):
    from modelcache.fetch import run_fetch
    from modelcache.progress import PlainReporter
    from modelcache.settings import Settings
    from tests.support.service import start_service

    _mirror_models.mirror.add_repo(LISTED, _matryoshka_repo(matryoshka_dimensions=[32, 16]))
    _mirror_models.mirror.add_repo(ANY_SIZE, _matryoshka_repo(is_matryoshka=True))
    root = tmp_path_factory.mktemp("matryoshka") / "models"
    env = _mirror_models.env(
        root,
        MODELCACHE_TEXT_EMBEDDING=f"{LISTED},{ANY_SIZE}",
        MODELCACHE_WHISPER="none",
        MODELCACHE_MLX="",
        MODELCACHE_VISION="none",
        MODELCACHE_FACE="none",
    )
    run_fetch(Settings.from_env(env), reporter=PlainReporter(open(os.devnull, "w")))
    service = start_service(env, tmp_path_factory.mktemp("logs") / "matryoshka.log")
    yield service
    service.stop()


def test_declared_matryoshka_sizes_cut_and_normalise_again(matryoshka: Service) -> None:
    def ask(model: str, **body) -> httpx2.Response:
        return httpx2.post(f"{matryoshka.url}/v1/embeddings", json={"model": model, "input": TEXTS, **body}, timeout=60)

    full = vectors(ask(LISTED))
    assert full.shape == (2, 64)
    for size in (16, 32, 64):
        cut = vectors(ask(LISTED, dimensions=size))
        expected = full[:, :size] / np.linalg.norm(full[:, :size], axis=1, keepdims=True)
        assert cut.shape == (2, size) and np.abs(cut - expected).max() < 1e-5
        assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    as_base64 = ask(LISTED, dimensions=16, encoding_format="base64")
    assert as_base64.status_code == 200, as_base64.text
    # the spec's Embedding schema knows the float list only; with base64, OpenAI's API (and the
    # openai client, which decodes it) has a string in its place: the rest must still fit
    as_floats = [{**d, "embedding": [0.0]} for d in as_base64.json()["data"]]
    validate({**as_base64.json(), "data": as_floats}, "CreateEmbeddingResponse")
    decoded = np.frombuffer(base64.b64decode(as_base64.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.abs(decoded - vectors(ask(LISTED, dimensions=16))[0]).max() < 1e-6
    for size in (8, 20, 65):
        refused = ask(LISTED, dimensions=size)
        assert refused.status_code == 400, refused.text
        validate(refused.json(), "ErrorResponse")
        assert refused.json()["error"]["param"] == "dimensions"
        assert "gives 16, 32, 64 dimensions" in refused.json()["error"]["message"]
    # is_matryoshka: any size up to the model's own
    anything = vectors(ask(ANY_SIZE, dimensions=20))
    assert anything.shape == (2, 20) and np.allclose(np.linalg.norm(anything, axis=1), 1.0, atol=1e-5)
    too_big = ask(ANY_SIZE, dimensions=65)
    assert too_big.status_code == 400 and "at most 64 dimensions" in too_big.json()["error"]["message"]
    validate(too_big.json(), "ErrorResponse")
    # token ids through a second model: its own limit (max_seq_length 128) cuts them
    ids = httpx2.post(
        f"{matryoshka.url}/v1/embeddings", json={"model": LISTED, "input": [[7592] * 300], "dimensions": 16}, timeout=60
    )
    assert vectors(ids).shape == (1, 16) and ids.json()["usage"]["prompt_tokens"] == 128


# --- the model process: one request's bad ids fail that request only ---------------------------


class _FakeEngine:
    """Vectors that say which input they came from; refuses the text "refuse me" as an
    engine refuses what it cannot take."""

    vocab_size = 10

    def __init__(self) -> None:
        self.batches: list[list] = []

    def embed(self, inputs: list) -> tuple[np.ndarray, list[int]]:
        from modelcache.service.faults import InputError

        self.batches.append(inputs)
        if "refuse me" in inputs:
            raise InputError("refused")
        rows = [[float(len(t)), float(t[0] if isinstance(t, list) else 0)] for t in inputs]
        return np.array(rows, dtype=np.float32), [len(t) for t in inputs]


def test_a_batch_fails_only_the_requests_with_bad_inputs() -> None:
    from modelcache.service.faults import InputError
    from modelcache.service.models.ops import Call, _embed

    engine = _FakeEngine()
    requests = [["ab"], [[1, 2, 3]], [[1, 10]], [[]], ["abcd", [4]]]
    out = _embed(engine, Call(), requests)
    assert engine.batches == [["ab", [1, 2, 3], "abcd", [4]]]  # one forward for the good requests
    assert out[0][0].tolist() == [[2.0, 0.0]] and out[0][1] == [2]
    assert out[1][0].tolist() == [[3.0, 1.0]] and out[1][1] == [3]
    assert isinstance(out[2], InputError) and "input[0][1]: token id 10 is outside" in str(out[2])
    assert isinstance(out[3], InputError) and "empty" in str(out[3])
    assert out[4][0].tolist() == [[4.0, 0.0], [1.0, 4.0]] and out[4][1] == [4, 1]
    # what only the engine refuses: the batch is run again request by request
    engine = _FakeEngine()
    out = _embed(engine, Call(), [["fine"], ["refuse me"], [[5]]])
    assert isinstance(out[1], InputError) and out[0][1] == [4] and out[2][0].tolist() == [[1.0, 5.0]]
    # a model without a vocabulary (the vision model's text side) takes texts only
    del _FakeEngine.vocab_size
    try:
        out = _embed(_FakeEngine(), Call(), [[[1, 2]], ["text"]])
    finally:
        _FakeEngine.vocab_size = 10
    assert isinstance(out[0], InputError) and "text-embedding models only" in str(out[0]) and out[1][1] == [4]


# --- OpenAI's schemas for the non-streamed transcription and translation answers ---------------


@pytest.fixture(params=["openai-whisper", "faster-whisper"])
def asr(request) -> Service:
    return request.getfixturevalue("server" if request.param == "openai-whisper" else "fw_server")


def test_transcription_answers_follow_openais_schemas(asr: Service, speech) -> None:
    audio, _text = speech

    def ask(route: str, fmt: str, *granularities: str) -> dict:
        data: dict = {"model": "whisper-1", "response_format": fmt}
        if granularities:
            data["timestamp_granularities[]"] = list(granularities)
        response = httpx2.post(
            f"{asr.url}/v1/audio/{route}", data=data, files={"file": ("speech.wav", audio)}, timeout=120
        )
        assert response.status_code == 200, response.text
        return response.json()

    validate(ask("transcriptions", "json"), "CreateTranscriptionResponseJson")
    for granularities in [(), ("segment",), ("word",), ("word", "segment")]:
        body = ask("transcriptions", "verbose_json", *granularities)
        validate(body, "CreateTranscriptionResponseVerboseJson")
        assert ("words" in body) == ("word" in granularities)
        assert ("segments" in body) == ("segment" in granularities or not granularities)
        assert all(body[k] for k in ("words", "segments") if k in body), body
    validate(ask("translations", "json"), "CreateTranslationResponseJson")
    validate(ask("translations", "verbose_json"), "CreateTranslationResponseVerboseJson")
    refused = httpx2.post(
        f"{asr.url}/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("speech.wav", b"not audio")},
        timeout=60,
    )
    assert refused.status_code == 415, refused.text  # not decodable audio
    validate(refused.json(), "ErrorResponse")
