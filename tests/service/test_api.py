"""The HTTP API against a real `modelcache serve`, with the official openai client where
OpenAI has the endpoint, and real weights (MiniLM, Whisper tiny.en) where they exist."""

from __future__ import annotations

import base64
import io
import re

import httpx2
import numpy as np
import pytest
from PIL import Image

from tests.support import fixtures
from tests.support.service import Service, start_service
from tests.support.whisper_ckpt import wer

openai = pytest.importorskip("openai")  # the dev extra

pytestmark = pytest.mark.slow  # each test starts `modelcache serve`

TEXTS = ["A man is eating food.", "Someone is having a meal.", "The stock market fell sharply today."]


def client(service: Service, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0, timeout=120)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


# --- health and registry ---------------------------------------------------------------------


def test_health_endpoints(server: Service) -> None:
    health = httpx2.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert set(health["models_loaded"]) == {"whisper-tiny.en", fixtures.MINILM, fixtures.SIGLIP, "yunet"}
    assert 0 < health["memory_used_gb"] < 8 and health["uptime_seconds"] >= 0
    assert set(health["load_seconds"]) == set(health["models_loaded"])
    assert httpx2.get(f"{server.url}/health/live").json() == {"status": "alive"}
    assert httpx2.get(f"{server.url}/health/ready").status_code == 200


def test_models_list_and_get(server: Service, models) -> None:
    listed = client(server).models.list()
    ids = [m.id for m in listed.data]
    assert ids == ["whisper-tiny.en", fixtures.MINILM, fixtures.SIGLIP, "yunet"]
    raw = httpx2.get(f"{server.url}/v1/models/{fixtures.MINILM}").json()
    assert raw["task"] == "text-embedding" and raw["engine"] == "transformers"
    assert raw["revision"] == models.commits[fixtures.MINILM] and raw["bytes"] > 90_000_000
    assert raw["load_seconds"] > 0
    whisper = httpx2.get(f"{server.url}/v1/models/whisper-1").json()  # OpenAI's name is an alias
    assert whisper["id"] == "whisper-tiny.en" and whisper["engine"] == "openai-whisper"
    missing = httpx2.get(f"{server.url}/v1/models/acme/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


# --- text embeddings ----------------------------------------------------------------------------


def sentence_transformers_reference(texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(fixtures.minilm_dir()), device="cpu")
    return model.encode(texts, convert_to_numpy=True)


def test_embeddings_match_sentence_transformers(server: Service) -> None:
    result = client(server).embeddings.create(model=fixtures.MINILM, input=TEXTS)  # the client asks for base64
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384)
    assert np.abs(vectors - sentence_transformers_reference(TEXTS)).max() < 1e-5
    assert result.usage.prompt_tokens == result.usage.total_tokens > 10
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.5 > 0.2 > sims[0, 2]  # paraphrase close, unrelated far


def test_embeddings_float_and_single_string(server: Service) -> None:
    body = {"model": fixtures.MINILM, "input": TEXTS[0], "encoding_format": "float"}
    data = httpx2.post(f"{server.url}/v1/embeddings", json=body).json()
    assert data["object"] == "list" and data["model"] == fixtures.MINILM
    vector = np.array(data["data"][0]["embedding"])
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    b64 = httpx2.post(f"{server.url}/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vector, atol=1e-7)


# --- image and text embeddings (SigLIP) ---------------------------------------------------------


def test_image_embeddings_multipart_and_base64(server: Service) -> None:
    rng = np.random.default_rng(0)
    images = [png(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(2)]
    files = [("file", (f"img{i}.png", data, "image/png")) for i, data in enumerate(images)]
    first = httpx2.post(f"{server.url}/v1/images/embeddings", files=files, data={"model": fixtures.SIGLIP}).json()
    vectors = np.array([d["embedding"] for d in first["data"]])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
    payload = {"model": fixtures.SIGLIP, "input": [base64.b64encode(d).decode() for d in images]}
    second = httpx2.post(f"{server.url}/v1/images/embeddings", json=payload).json()
    assert np.allclose(np.array([d["embedding"] for d in second["data"]]), vectors, atol=1e-6)  # deterministic
    text = client(server).embeddings.create(model=fixtures.SIGLIP, input=["a photo of a cat"])
    assert len(text.data[0].embedding) == 32  # the text tower, same space


# --- faces ------------------------------------------------------------------------------------


def test_face_detection_finds_the_bright_square_only(server: Service) -> None:
    image = np.zeros((128, 160, 3), np.uint8)
    image[32:96, 64:128] = 255  # what the YuNet-shaped test graph calls a face
    found = httpx2.post(
        f"{server.url}/v1/faces/detect",
        files={"file": ("f.png", png(image), "image/png")},
        data={"score_threshold": "0.5", "nms_threshold": "0.3", "top_k": "100"},
    ).json()
    assert found["width"] == 160 and found["height"] == 128 and found["data"]
    for face in found["data"]:
        box = face["box"]
        assert box["x"] >= 64 and box["x"] + box["width"] <= 128 and box["y"] >= 32 and box["y"] + box["height"] <= 96
        assert set(face["landmarks"]) == {
            "right_eye",
            "left_eye",
            "nose_tip",
            "right_mouth_corner",
            "left_mouth_corner",
        }
        assert 0.5 <= face["score"] <= 1
    dark = httpx2.post(
        f"{server.url}/v1/faces/detect", json={"input": base64.b64encode(png(np.zeros((64, 64, 3), np.uint8))).decode()}
    ).json()
    assert dark["data"] == []
    from modelcache.testing.tiny_models import yunet_brightness_for_score

    gray = image.copy()
    gray[32:96, 64:128] = int(np.ceil(yunet_brightness_for_score(0.95)))  # scores about 0.95 in the test graph

    def detect(threshold: str) -> list:
        return httpx2.post(
            f"{server.url}/v1/faces/detect",
            files={"file": ("f.png", png(gray), "image/png")},
            data={"score_threshold": threshold},
        ).json()["data"]

    assert detect("0.9") and detect("0.99") == []  # the threshold is honoured


# --- speech to text, both engines -------------------------------------------------------------


@pytest.fixture(params=["openai-whisper", "faster-whisper"])
def asr(request) -> tuple[Service, str]:
    name = "server" if request.param == "openai-whisper" else "fw_server"
    return request.getfixturevalue(name), request.param


def test_transcription_with_the_openai_client(asr, speech) -> None:
    service, engine = asr
    audio, text = speech
    result = client(service).audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio))
    assert wer(text, result.text) <= 0.3, result.text
    info = httpx2.get(f"{service.url}/v1/models/whisper-1").json()
    assert info["engine"] == engine


def test_transcription_formats(asr, speech) -> None:
    service, _engine = asr
    audio, text = speech
    c = client(service)
    verbose = c.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", audio),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    assert verbose.language in ("en", "english") and 4 < verbose.duration < 8
    assert verbose.segments and verbose.words and len(verbose.words) >= 10
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts) and verbose.words[-1].end <= verbose.duration + 0.5
    srt = c.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio), response_format="srt")
    assert re.match(r"1\n00:00:00,\d{3} --> 00:00:0\d,\d{3}\n", srt)
    vtt = c.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.")
    plain = c.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio), response_format="text")
    assert wer(text, plain) <= 0.3
    translated = c.audio.translations.create(model="whisper-1", file=("speech.wav", audio))
    assert wer(text, translated.text) <= 0.3  # English in, English out


@pytest.mark.parametrize("container", ["flac", "ogg", "mp3", "m4a", "webm"])
def test_compressed_audio_formats(server: Service, speech, container: str, tmp_path) -> None:
    import av

    audio, text = speech
    codec = {"flac": "flac", "ogg": "libopus", "mp3": "libmp3lame", "m4a": "aac", "webm": "libopus"}[container]
    fmt = {"m4a": "mp4"}.get(container, container)
    out = io.BytesIO()
    with av.open(io.BytesIO(audio)) as src, av.open(out, mode="w", format=fmt) as dst:
        rate = 48000 if codec == "libopus" else 16000
        stream = dst.add_stream(codec, rate=rate)
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for frame in src.decode(audio=0):
            for piece in resampler.resample(frame):
                dst.mux(stream.encode(piece))
        for piece in resampler.resample(None):
            dst.mux(stream.encode(piece))
        dst.mux(stream.encode(None))
    result = client(server).audio.transcriptions.create(model="whisper-1", file=(f"speech.{container}", out.getvalue()))
    assert wer(text, result.text) <= 0.3, (container, result.text)


# --- metrics and auth --------------------------------------------------------------------------


def test_metrics(server: Service) -> None:
    httpx2.post(f"{server.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": "hello"})
    text = httpx2.get(f"{server.url}/metrics").text
    for name in (
        "modelcache_requests_total",
        "modelcache_request_seconds_bucket",
        "modelcache_queue_depth",
        "modelcache_batch_size_bucket",
        "modelcache_inference_seconds_bucket",
        "modelcache_model_load_seconds",
    ):
        assert name in text, name
    assert re.search(r'modelcache_requests_total\{method="POST",route="/v1/embeddings",status="200"\} [1-9]', text)


def test_api_key(tmp_path, service_volume) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_text("s3cret\n")
    env = {
        **service_volume,
        "MODELCACHE_API_KEY_FILE": str(key_file),
        "MODELCACHE_WHISPER": "none",
        "MODELCACHE_VISION": "none",
        "MODELCACHE_FACE": "none",
    }
    service = start_service(env, tmp_path / "log")
    try:
        denied = httpx2.post(f"{service.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": "x"})
        assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
        assert httpx2.get(f"{service.url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            client(service, "wrong").embeddings.create(model=fixtures.MINILM, input="x")
        ok = client(service, "s3cret").embeddings.create(model=fixtures.MINILM, input="x")
        assert len(ok.data[0].embedding) == 384
        for path in ("/health", "/health/live", "/health/ready"):  # stays public
            assert httpx2.get(f"{service.url}{path}").status_code == 200
    finally:
        service.stop()
