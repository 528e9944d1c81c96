"""One GET of a file's bytes, following the Hub's redirects by hand.

The Hub answers ``/{repo}/resolve/{commit}/{path}`` of a large file (LFS or Xet-backed)
with a redirect to another host (a CDN or Xet's bridge); that answer carries the size and
sha256 it promises (``X-Linked-Size``, ``X-Linked-Etag``). Following redirects here rather
than inside the HTTP client lets us:

- send the Hub token to the host it was made for and never to the CDN (a different origin);
- check what the Hub promises against the listing before a byte is written;
- refuse redirect loops and non-http(s) targets with an error that names the file;
- check that the final answer's length agrees with the promise.

No state is kept between calls: every attempt and every segment starts at the Hub, so a
signed CDN address that expired is simply asked for again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx2

from modelcache.errors import ConfigError, NetworkError

MAX_REDIRECTS = 10
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class Retry(Exception):
    """A failure that another attempt may not meet (5xx, reset, stall, short body)."""

    def __init__(self, reason: str, transferred: int = 0, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transferred = transferred
        self.retry_after = retry_after


@dataclass(frozen=True)
class Want:
    """What the caller knows of the file, to hold every answer against."""

    label: str  # names the file in every message
    size: int | None
    sha256: str | None = None
    pin: str = "its file listing"  # where size and sha256 come from, for messages


@dataclass(frozen=True)
class Opened:
    response: httpx2.Response
    url: str  # where the bytes finally come from
    hops: int  # redirects followed


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


@contextmanager
def open_bytes(
    client: httpx2.Client,
    url: str,
    want: Want,
    *,
    start: int = 0,
    end: int | None = None,
    auth: dict[str, str] | None = None,
    timeout: httpx2.Timeout,
) -> Iterator[Opened]:
    """GET ``url`` (bytes ``start`` to ``end``, exclusive), following redirects; yield the final answer.

    ``auth`` headers go only to the origin of ``url``. Raises :class:`Retry` for answers
    worth another attempt and a typed error for those that are not.
    """
    home = origin(url)
    current, hops = url, 0
    headers = {"Accept-Encoding": "identity"}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
    while True:
        at_home = origin(current) == home
        sent = {**headers, **(auth or {})} if at_home else headers
        request = client.build_request("GET", current, headers=sent, timeout=timeout)
        try:
            response = client.send(request, stream=True, follow_redirects=False)
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            host = urlsplit(current).netloc
            raise Retry(
                f"{exc.__class__.__name__} talking to {host}" + ("" if at_home else " (where the Hub redirected)")
            ) from None
        try:
            if response.status_code in REDIRECT_STATUSES:
                current = _next_hop(response, current, want, url)
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise NetworkError(
                        f"{want.label}: more than {MAX_REDIRECTS} redirects from {url} (a redirect loop?)",
                        remedy="the Hub or mirror at HF_ENDPOINT is misconfigured; report it to its operator",
                    )
                continue
            _check_status(response, want, current, redirected=not at_home)
            _check_length(response, want, start, end, current)
            yield Opened(response, current, hops)
            return
        finally:
            response.close()


def _next_hop(response: httpx2.Response, current: str, want: Want, first: str) -> str:
    location = response.headers.get("location")
    if not location:
        raise NetworkError(f"{want.label}: HTTP {response.status_code} from {current} without a Location header")
    target = urljoin(current, location)
    if urlsplit(target).scheme not in ("http", "https"):
        raise NetworkError(
            f"{want.label}: {current} redirects to {target!r}, which is not an http(s) address; nothing was fetched",
            remedy="the Hub or mirror at HF_ENDPOINT is misconfigured; report it to its operator",
        )
    _check_promise(response, want, first)
    return target


def _check_promise(response: httpx2.Response, want: Want, first: str) -> None:
    """The Hub's redirect states the size and sha256 it is sending us to: hold them to the listing."""
    linked_size = response.headers.get("x-linked-size")
    if (linked_size is not None and want.size is not None) and (
        not linked_size.strip().isdigit() or int(linked_size) != want.size
    ):
        raise NetworkError(
            f"{want.label}: the Hub's redirect promises {linked_size} bytes (X-Linked-Size) but "
            f"{want.pin} says {want.size}; nothing was fetched",
            remedy=f"{first} redirects to another file than {want.pin} names: check HF_ENDPOINT, try again later "
            "or report it to the operator of that server",
        )
    linked_etag = response.headers.get("x-linked-etag")
    if linked_etag is not None and want.sha256 is not None:
        etag = linked_etag.strip().removeprefix("W/").strip('"').lower()
        if len(etag) == 64 and etag != want.sha256:
            raise NetworkError(
                f"{want.label}: the Hub's redirect names sha256 {etag[:12]}… (X-Linked-Etag) but "
                f"{want.pin} says {want.sha256[:12]}…; nothing was fetched",
                remedy=f"{first} redirects to another file than {want.pin} names: check HF_ENDPOINT, try again later "
                "or report it to the operator of that server",
            )


def _check_status(response: httpx2.Response, want: Want, url: str, *, redirected: bool = False) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    if status in RETRY_STATUSES:
        raise Retry(f"HTTP {status}", retry_after=response.headers.get("retry-after"))
    if status == 416:
        raise Retry("the server refused the range")
    if status in (401, 403) and redirected:  # a signed CDN address that expired: the Hub gives a fresh one
        raise Retry(f"HTTP {status} from {urlsplit(url).netloc}, where the Hub redirected (an expired signed address?)")
    if status in (401, 403):
        gated = response.headers.get("x-error-code") == "GatedRepo"
        raise ConfigError(
            f"{want.label}: HTTP {status}: " + ("the repo is gated" if gated else f"not authorised for {url}"),
            remedy="put a Hugging Face token with access in the secret file (MODELCACHE_HF_TOKEN_FILE; compose: "
            "HF_TOKEN_FILE in .env)" + (" and accept the model's licence on its Hub page" if gated else ""),
        )
    if status == 404:
        raise NetworkError(
            f"{want.label}: HTTP 404 for {url}: the file does not exist there",
            remedy="check the repo id, revision and file name, or the URL (MODELCACHE_WHISPER_URL, the manifest)",
        )
    raise NetworkError(  # other client errors do not get better by asking again
        f"{want.label}: HTTP {status} for {url}",
        remedy="check the URL, the repo and your access rights to it",
    )


def _check_length(response: httpx2.Response, want: Want, start: int, end: int | None, url: str) -> None:
    length = response.headers.get("content-length")
    if length is None or not length.strip().isdigit():
        return
    got = int(length)
    if response.status_code == 200 and want.size is not None and got != want.size:
        raise NetworkError(
            f"{want.label}: {url} sends {got} bytes (Content-Length) but the file has {want.size} "
            "(X-Linked-Size / the Hub's listing); nothing was kept",
            remedy="the server or CDN serves another file than the Hub describes; try again later or "
            "report it to the operator of HF_ENDPOINT",
        )
    if response.status_code == 206 and want.size is not None:
        stop = want.size if end is None else end
        if got != stop - start:
            raise Retry(f"the server answered {got} bytes for a range of {stop - start}")
