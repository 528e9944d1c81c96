"""Bad input of every kind, on every endpoint: a clear 4xx in OpenAI's error shape, never a
500, and the service stays ready."""

from __future__ import annotations

import base64
import io
import socket

import httpx2
import numpy as np
import pytest
from PIL import Image

from tests.support import fixtures
from tests.support.service import Service

pytestmark = pytest.mark.slow  # each test starts `modelcache serve`

PNG = io.BytesIO()
Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(PNG, format="PNG")
PNG_BYTES = PNG.getvalue()
B64_PNG = base64.b64encode(PNG_BYTES).decode()

CASES = [
    # (method, path, kwargs, expected status)
    ("post", "/v1/embeddings", {"json": {"model": fixtures.MINILM}}, 400),  # no input
    ("post", "/v1/embeddings", {"json": {"model": fixtures.MINILM, "input": ""}}, 400),
    ("post", "/v1/embeddings", {"json": {"model": fixtures.MINILM, "input": []}}, 400),
    ("post", "/v1/embeddings", {"json": {"model": fixtures.MINILM, "input": ["ok", "  "]}}, 400),
    (
        "post",
        "/v1/embeddings",
        {"json": {"model": fixtures.MINILM, "input": [[1, 2, 10**9]]}},
        400,
    ),  # id past the vocabulary
    (
        "post",
        "/v1/embeddings",
        {"json": {"model": fixtures.MINILM, "input": ["a", [1, 2]]}},
        400,
    ),  # texts and ids mixed
    ("post", "/v1/embeddings", {"json": {"model": fixtures.MINILM, "input": 42}}, 400),
    ("post", "/v1/embeddings", {"json": {"model": fixtures.MINILM, "input": "x", "encoding_format": "hex"}}, 400),
    ("post", "/v1/embeddings", {"json": {"model": fixtures.MINILM, "input": "x", "dimensions": 7}}, 400),
    ("post", "/v1/embeddings", {"json": {"model": "acme/none", "input": "x"}}, 404),
    ("post", "/v1/embeddings", {"json": {"model": "whisper-1", "input": "x"}}, 400),  # wrong task
    ("post", "/v1/embeddings", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ("post", "/v1/embeddings", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400),
    ("post", "/v1/embeddings", {"json": ["a", "list"]}, 400),
    ("post", "/v1/audio/transcriptions", {"data": {"model": "whisper-1"}}, 400),  # no file
    ("post", "/v1/audio/transcriptions", {"files": {"file": ("a.wav", b"")}, "data": {"model": "whisper-1"}}, 400),
    (
        "post",
        "/v1/audio/transcriptions",
        {"files": {"file": ("a.wav", b"RIFF....garbage")}, "data": {"model": "whisper-1"}},
        415,
    ),
    (
        "post",
        "/v1/audio/transcriptions",
        {"files": {"file": ("a.png", PNG_BYTES)}, "data": {"model": "whisper-1"}},
        415,
    ),
    (
        "post",
        "/v1/audio/transcriptions",
        {"files": {"file": ("a.wav", b"x" * 100)}, "data": {"model": fixtures.MINILM}},
        400,
    ),  # wrong task
    (
        "post",
        "/v1/audio/transcriptions",
        {"files": {"file": ("a.wav", b"x")}, "data": {"model": "whisper-1", "response_format": "xml"}},
        400,
    ),
    (
        "post",
        "/v1/audio/transcriptions",
        {"files": {"file": ("a.wav", b"x")}, "data": {"model": "whisper-1", "temperature": "7"}},
        400,
    ),
    (
        "post",
        "/v1/audio/transcriptions",
        {"files": {"file": ("a.wav", b"x")}, "data": {"model": "whisper-1", "language": "english!"}},
        400,
    ),
    (
        "post",
        "/v1/audio/transcriptions",
        {"files": {"file": ("a.wav", b"x")}, "data": {"model": "whisper-1", "timestamp_granularities[]": "word"}},
        400,
    ),  # needs verbose_json
    ("post", "/v1/audio/transcriptions", {"json": {"model": "whisper-1"}}, 400),  # not multipart
    (
        "post",
        "/v1/audio/translations",
        {"files": {"file": ("a.wav", b"\x00" * 2000)}, "data": {"model": "whisper-1"}},
        415,
    ),
    ("post", "/v1/images/embeddings", {"json": {"model": fixtures.SIGLIP}}, 400),
    ("post", "/v1/images/embeddings", {"json": {"model": fixtures.SIGLIP, "input": "not base64!"}}, 400),
    (
        "post",
        "/v1/images/embeddings",
        {"json": {"model": fixtures.SIGLIP, "input": "https://example.com/cat.png"}},
        400,
    ),
    (
        "post",
        "/v1/images/embeddings",
        {"json": {"model": fixtures.SIGLIP, "input": base64.b64encode(b"not an image").decode()}},
        415,
    ),
    ("post", "/v1/images/embeddings", {"json": {"model": fixtures.MINILM, "input": B64_PNG}}, 400),  # wrong task
    (
        "post",
        "/v1/images/embeddings",
        {"json": {"model": fixtures.SIGLIP, "input": B64_PNG, "encoding_format": 3}},
        400,
    ),
    ("post", "/v1/images/embeddings", {"content": b"raw", "headers": {"content-type": "image/png"}}, 415),
    ("post", "/v1/images/embeddings", {"files": {"other": ("a.png", PNG_BYTES)}}, 400),
    ("post", "/v1/faces/detect", {"files": {"file": ("a.png", PNG_BYTES)}, "data": {"score_threshold": "2"}}, 400),
    ("post", "/v1/faces/detect", {"files": {"file": ("a.png", PNG_BYTES)}, "data": {"top_k": "1.5"}}, 400),
    ("post", "/v1/faces/detect", {"files": {"file": ("a.png", PNG_BYTES)}, "data": {"nms_threshold": "nan"}}, 400),
    ("post", "/v1/faces/detect", {"files": {"file": ("a.png", b"GIF89a broken")}}, 415),
    ("post", "/v1/faces/detect", {"json": {"input": [B64_PNG, B64_PNG]}}, 400),  # one image only
    ("post", "/v1/faces/detect", {"json": {"input": B64_PNG, "model": fixtures.SIGLIP}}, 400),  # wrong task
    ("post", "/v1/faces/detect", {"json": {"input": B64_PNG, "model": ["yunet"]}}, 400),  # not a string
    ("post", "/v1/images/embeddings", {"json": {"input": B64_PNG, "model": 7}}, 400),
    (
        "post",
        "/v1/faces/detect",
        {"files": [("file", ("a.png", PNG_BYTES)), ("model", (None, "a")), ("model", (None, "b"))]},
        400,
    ),  # a form field twice: which one was meant?
    ("get", "/v1/nothing-here", {}, 404),
    ("get", "/v1/embeddings", {}, 405),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), CASES)
def test_bad_input_is_a_clear_client_error(server: Service, method: str, path: str, kwargs: dict, status: int) -> None:
    response = getattr(httpx2, method)(f"{server.url}{path}", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] and set(error) == {"message", "type", "param", "code"}


def test_invalid_json_says_so(server: Service) -> None:
    response = httpx2.post(
        f"{server.url}/v1/embeddings", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["message"] == "the body is not valid JSON"


def test_huge_image_is_refused_without_decoding_it(server: Service) -> None:
    big = io.BytesIO()
    Image.new("L", (9000, 9000)).save(big, format="PNG")  # 81 Mpixel, a few hundred KB compressed
    response = httpx2.post(f"{server.url}/v1/faces/detect", files={"file": ("big.png", big.getvalue())}, timeout=60)
    assert response.status_code == 400 and "pixels" in response.json()["error"]["message"]


def test_oversized_body_is_refused_before_it_is_read(server: Service) -> None:
    """Content-Length over the limit: 413 at once, although no body byte was ever sent."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 999999999999\r\n\r\n"
        )
        chunks = []
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            chunks.append(chunk)
        reply = b"".join(chunks).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "MODELCACHE_MAX_BODY_MB" in reply


def test_oversized_chunked_body_is_cut_off(server: Service) -> None:
    def chunks():
        for _ in range(40):  # 40 MiB without a Content-Length
            yield b"\0" * (1024 * 1024)

    response = httpx2.post(
        f"{server.url}/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_the_service_is_still_ready_after_all_that(server: Service) -> None:
    assert httpx2.get(f"{server.url}/health/ready").status_code == 200
    ok = httpx2.post(f"{server.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": "still fine"})
    assert ok.status_code == 200


def test_validation_errors_name_the_field_as_the_client_wrote_it(server: Service) -> None:
    tokens = httpx2.post(f"{server.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": ["a", [1, 2, 3]]})
    error = tokens.json()["error"]
    assert (
        tokens.status_code == 400
        and error["param"] == "input"
        and "texts only or token arrays only" in error["message"]
    )
    blank = httpx2.post(f"{server.url}/v1/embeddings", json={"model": fixtures.MINILM, "input": ["ok", "  "]})
    assert blank.json()["error"]["param"] == "input[1]"
