"""fetch/http.py: redirects followed by hand, each answer held to what the Hub promised."""

from __future__ import annotations

import httpx2
import pytest

from modelcache.errors import ConfigError, NetworkError
from modelcache.fetch.http import Retry, Want, open_bytes

SHA = "a" * 64
HUB = "https://hub.example/org/m/resolve/c0ffee/model.safetensors"
CDN = "https://cdn.example/blob?sig=1"
TIMEOUT = httpx2.Timeout(5)


def client(handler) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(handler))


def redirect_then(body: bytes, *, linked_size: int, cdn_length: int | None = None, status: int = 200):
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.host == "hub.example":
            return httpx2.Response(
                302, headers={"Location": CDN, "X-Linked-Size": str(linked_size), "X-Linked-Etag": f'"{SHA}"'}
            )
        headers = {"Content-Length": str(len(body) if cdn_length is None else cdn_length)}
        return httpx2.Response(status, headers=headers, content=body)

    return handler, seen


def test_auth_goes_to_the_hub_only_and_the_bytes_come_from_the_cdn() -> None:
    handler, seen = redirect_then(b"x" * 10, linked_size=10)
    with (
        client(handler) as c,
        open_bytes(c, HUB, Want("m", 10, SHA), auth={"Authorization": "Bearer t"}, timeout=TIMEOUT) as op,
    ):
        assert op.response.read() == b"x" * 10 and op.url == CDN and op.hops == 1
    assert seen[0].headers.get("authorization") == "Bearer t"
    assert "authorization" not in seen[1].headers


def test_a_content_length_that_disagrees_with_the_promise_is_refused() -> None:
    handler, _ = redirect_then(b"x" * 10, linked_size=10, cdn_length=9)
    with client(handler) as c, pytest.raises(NetworkError) as info:
        with open_bytes(c, HUB, Want("org/m/model.safetensors", 10, SHA), timeout=TIMEOUT):
            pass
    assert "org/m/model.safetensors" in info.value.message and "Content-Length" in info.value.message


def test_a_promise_that_disagrees_with_the_listing_is_refused_before_any_byte() -> None:
    handler, seen = redirect_then(b"x" * 10, linked_size=11)
    with client(handler) as c, pytest.raises(NetworkError) as info:
        with open_bytes(c, HUB, Want("m", 10, SHA), timeout=TIMEOUT):
            pass
    assert "X-Linked-Size" in info.value.message and len(seen) == 1


def test_another_sha256_in_the_promise_is_refused() -> None:
    handler, _ = redirect_then(b"x" * 10, linked_size=10)
    with client(handler) as c, pytest.raises(NetworkError) as info:
        with open_bytes(c, HUB, Want("m", 10, "b" * 64), timeout=TIMEOUT):
            pass
    assert "X-Linked-Etag" in info.value.message


def test_a_short_range_answer_is_retried() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(206, headers={"Content-Length": "3", "Content-Range": "bytes 5-7/10"}, content=b"abc")

    with client(handler) as c, pytest.raises(Retry), open_bytes(c, CDN, Want("m", 10), start=5, timeout=TIMEOUT):
        pass


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [(401, ConfigError, "not authorised"), (404, NetworkError, "does not exist"), (400, NetworkError, "HTTP 400")],
)
def test_final_client_errors_are_typed(status: int, error: type, text: str) -> None:
    with client(lambda r: httpx2.Response(status)) as c, pytest.raises(error) as info:
        with open_bytes(c, CDN, Want("m", 10), timeout=TIMEOUT):
            pass
    assert text in info.value.message and info.value.remedy


@pytest.mark.parametrize("status", [429, 500, 503])
def test_server_trouble_is_retried(status: int) -> None:
    with client(lambda r: httpx2.Response(status, headers={"Retry-After": "2"})) as c, pytest.raises(Retry) as info:
        with open_bytes(c, CDN, Want("m", 10), timeout=TIMEOUT):
            pass
    assert info.value.retry_after == "2"


def test_a_redirect_without_location_is_an_error() -> None:
    with client(lambda r: httpx2.Response(302)) as c, pytest.raises(NetworkError) as info:
        with open_bytes(c, HUB, Want("m", 10), timeout=TIMEOUT):
            pass
    assert "without a Location" in info.value.message
