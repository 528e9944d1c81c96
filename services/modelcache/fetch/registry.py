"""A small client of the OCI distribution API: what `push` and `fetch --from` need.

Manifests by tag or digest, blob HEAD, monolithic blob upload (POST then PUT ?digest=,
streamed from the file), manifest PUT, and the address of a blob for the verified,
resumable transfer of :mod:`modelcache.fetch.transfer`.

Authentication: a registry that answers 401 with ``WWW-Authenticate: Bearer realm=...,
service=...,scope=...`` gets a token from the realm (with the user and password of
``auths`` in ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json`` when present);
one that asks for ``Basic`` gets those credentials directly. Credentials and tokens never
appear in a message or a log line.

Plain http only for the hosts in MODELCACHE_INSECURE_REGISTRIES; https otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx2

from modelcache.errors import ConfigError, NetworkError, VerificationError
from modelcache.fetch.http import RETRY_STATUSES
from modelcache.fetch.policy import Policy
from modelcache.settings import OciReference, Settings

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
UPLOAD_CHUNK = 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str = "the Docker config file"  # where they came from, for messages (never the secret)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def __repr__(self) -> str:  # never in a traceback or a log
        return f"Credentials({self.username!r}, <hidden>, from {self.source})"


HELPER_TIMEOUT = 30.0


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The system's CA store, plus MODELCACHE_CA_BUNDLE when set (a private registry's CA)."""
    context = ssl.create_default_context()
    if settings.ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ca_bundle))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"MODELCACHE_CA_BUNDLE: {settings.ca_bundle} cannot be loaded ({exc})",
                remedy="give a PEM file of CA certificates",
            ) from None
    return context


def client(settings: Settings, user_agent: str) -> httpx2.Client:
    """The HTTP client for one registry conversation: TLS checked against tls_context()."""
    return httpx2.Client(follow_redirects=True, headers={"User-Agent": user_agent}, verify=tls_context(settings))


def _docker_config(env: dict[str, str]) -> tuple[Path, dict]:
    folder = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if text.strip() else {}  # empty (compose's /dev/null secret): no config
    except FileNotFoundError:
        return path, {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot be read as Docker's config file ({exc.__class__.__name__}: {str(exc)[:120]})",
            remedy="fix or remove it (`docker login` writes a valid one), or point DOCKER_CONFIG at another folder",
        ) from None
    return path, data if isinstance(data, dict) else {}


def _from_helper(name: str, host: str, env: dict[str, str]) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` (Docker's credential-helper protocol) for ``host``."""
    program = f"docker-credential-{name}"
    remedy = f"install {program} on this host's PATH, or remove it from credHelpers/credsStore in config.json"
    try:
        done = subprocess.run(
            [program, "get"],
            input=host,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT,
            env={**os.environ, **env},
        )
    except FileNotFoundError:
        raise ConfigError(
            f"the credential helper {program} named in Docker's config is not installed", remedy=remedy
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"the credential helper {program} did not answer within {HELPER_TIMEOUT:.0f}s", remedy=remedy
        ) from None
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        raise ConfigError(
            f"the credential helper {program} failed for {host} (exit {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[:160]})",
            remedy=remedy,
        )
    try:
        answer = json.loads(done.stdout)
        user, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"the credential helper {program} answered something other than the helper protocol's JSON",
            remedy=remedy,
        ) from None
    return Credentials(user, secret, f"the credential helper {program}")


def docker_credentials(host: str, env: dict[str, str] | None = None) -> Credentials | None:
    """Credentials for ``host`` as Docker finds them: its credential helper (``credHelpers``),
    else the default store (``credsStore``), else the ``auths`` entry of config.json."""
    env = dict(os.environ) if env is None else env
    path, config = _docker_config(env)
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict) and isinstance(helpers.get(host), str):
        return _from_helper(helpers[host], host, env)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, host, env)
        if found is not None:
            return found
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        name = str(key).removeprefix("https://").removeprefix("http://").split("/", 1)[0].lower()
        if name != host or not isinstance(entry, dict):
            continue
        source = f"the auths entry for {host} in {path}"
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]), source)
        try:
            user, _, password = base64.b64decode(str(entry.get("auth") or "")).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            continue
        if user:
            return Credentials(user, password, source)
    return None


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    digest: str  # sha256:... of the raw bytes
    data: dict


class Registry:
    """One repository of one registry, with the token it got on the way."""

    def __init__(
        self,
        client: httpx2.Client,
        ref: OciReference,
        policy: Policy,
        *,
        insecure: tuple[str, ...] = (),
        push: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.client, self.ref, self.policy = client, ref, policy
        self.scheme = "http" if ref.host in insecure else "https"
        self.base = f"{self.scheme}://{ref.host}/v2/{ref.repository}"
        self.scope = f"repository:{ref.repository}:" + ("pull,push" if push else "pull")
        self._env = env
        self._credentials: Credentials | None = None
        self._looked_up = False
        self._authorization: str | None = None
        self._renewing = threading.Lock()
        self.requests = 0

    # --- plumbing --------------------------------------------------------------------------

    @property
    def credentials(self) -> Credentials | None:
        """Docker's credentials for the host, looked up when the registry first asks for them
        (a credential helper is not run for a registry that needs none)."""
        if not self._looked_up:
            self._credentials = docker_credentials(self.ref.host, self._env)
            self._looked_up = True
        return self._credentials

    def auth_headers(self) -> dict[str, str]:
        """For blob GETs through the shared transfer (which keeps them to the registry's host)."""
        return {"Authorization": self._authorization} if self._authorization else {}

    def _timeout(self) -> httpx2.Timeout:
        stall = self.policy.stall_timeout
        return httpx2.Timeout(connect=min(30.0, stall), read=stall, write=max(30.0, stall), pool=30.0)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        what: str,
        authenticated: bool = False,
    ) -> httpx2.Response:
        """One API call, retried on network errors and 5xx/429, authenticated on the first 401."""
        last = "no attempt made"
        for attempt in range(self.policy.retries + 1):
            self.policy.check_cancelled()
            if attempt:
                wait = self.policy.backoff(attempt - 1)
                self.policy.notify(f"{what}: {last}; retry {attempt}/{self.policy.retries} in {wait:.1f}s")
                self.policy.sleep(wait)
            if time.monotonic() >= self.policy.deadline:
                break
            sent = {**(headers or {}), **self.auth_headers()}
            try:
                self.requests += 1
                response = self.client.request(
                    method,
                    url,
                    headers=sent,
                    content=content,
                    params=params,
                    timeout=self._timeout(),
                    follow_redirects=True,
                )
            except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                if self.scheme == "https" and isinstance(exc, httpx2.ConnectError) and "SSL" in str(exc):
                    raise ConfigError(
                        f"{what}: the TLS handshake with {self.ref.host} failed ({str(exc)[:160]})",
                        remedy="if the registry's certificate comes from a private CA, point MODELCACHE_CA_BUNDLE at "
                        "that CA's PEM file (or add it to the system store); check that the certificate names "
                        f"{self.ref.host.rsplit(':', 1)[0]}; a registry on plain http must be listed in "
                        "MODELCACHE_INSECURE_REGISTRIES instead",
                    ) from None
                last = f"{exc.__class__.__name__} talking to {self.ref.host}"
                continue
            if response.status_code == 401 and not authenticated:
                self._authenticate(response)
                return self.request(
                    method, url, headers=headers, content=content, params=params, what=what, authenticated=True
                )
            if response.status_code in RETRY_STATUSES:
                last = f"HTTP {response.status_code}"
                continue
            return response
        raise NetworkError(
            f"{what}: {self.ref.host} did not answer ({last})",
            remedy=self._reach_remedy(),
        )

    def _reach_remedy(self) -> str:
        if self.scheme == "https":
            return (
                f"check that {self.ref.host} is reachable over https; a registry on plain http must be listed in "
                "MODELCACHE_INSECURE_REGISTRIES (HOST:PORT)"
            )
        return f"check that the registry at {self.ref.host} is running and reachable, then run this again"

    def _authenticate(self, response: httpx2.Response) -> None:
        challenge = response.headers.get("www-authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self.credentials is None:
                raise self._needs_login()
            if self._authorization is not None:  # the credentials were sent and refused
                raise self._needs_login(refused=True)
            self._authorization = self.credentials.basic()
            return
        if scheme != "bearer":
            raise ConfigError(
                f"{self.ref.host} asks for an authentication modelcache does not speak ({challenge.split(' ', 1)[0]!r})",
                remedy="use a registry with token or basic authentication",
            )
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm or not realm.startswith(("http://", "https://")):
            raise NetworkError(f"{self.ref.host} sent a token challenge without a usable realm")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", self.scope)) if v}
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            answer = self.client.get(realm, params=query, headers=headers, timeout=self._timeout())
        except httpx2.HTTPError as exc:
            raise NetworkError(
                f"the token service of {self.ref.host} did not answer ({exc.__class__.__name__})",
                remedy=self._reach_remedy(),
            ) from None
        if answer.status_code in (401, 403):
            raise self._needs_login(refused=self.credentials is not None)
        try:
            body = answer.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if answer.status_code != 200 or not token:
            raise NetworkError(
                f"the token service of {self.ref.host} answered HTTP {answer.status_code} without a token"
            )
        self._authorization = f"Bearer {token}"

    def _needs_login(self, *, refused: bool = False) -> ConfigError:
        if refused and self.credentials is not None:
            return ConfigError(
                f"{self.ref.host} refused the credentials of user {self.credentials.username!r} from "
                f"{self.credentials.source}",
                remedy=f"log in again (`docker login {self.ref.host}`), or fix that entry",
            )
        return ConfigError(
            f"{self.ref.host} asks for credentials and there are none for it (no credHelpers entry, credsStore "
            "answer or auths entry in Docker's config.json)",
            remedy=f"run `docker login {self.ref.host}` (it writes ~/.docker/config.json; mount it, or point "
            "DOCKER_CONFIG at its folder)",
        )

    def _denied(self, response: httpx2.Response, what: str) -> ConfigError:
        if response.status_code == 401 and self.credentials is not None:
            return self._needs_login(refused=True)
        tried = (
            f" (as user {self.credentials.username!r} from {self.credentials.source})"
            if self.credentials is not None
            else " (anonymously: no credentials for it in Docker's config.json)"
        )
        return ConfigError(
            f"{what}: HTTP {response.status_code}: not authorised for {self.ref.repository} on {self.ref.host}{tried}",
            remedy=f"log in with an account that may {'push to' if 'push' in self.scope else 'pull from'} "
            f"{self.ref.repository} (`docker login {self.ref.host}`)",
        )

    # --- manifests -------------------------------------------------------------------------

    def get_manifest(self, reference: str | None = None) -> Manifest:
        reference = reference or self.ref.reference
        what = f"{self.ref}"
        response = self.request(
            "GET",
            f"{self.base}/manifests/{reference}",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX};q=0.5, {DOCKER_MANIFEST};q=0.5"},
            what=what,
        )
        if response.status_code == 404:
            raise ConfigError(
                f"{what}: the registry has no such {'digest' if reference.startswith('sha256:') else 'tag'} "
                f"in repository {self.ref.repository}",
                remedy="check the reference (MODELCACHE_FROM / --from), or publish the volume first with "
                f"`modelcache push {self.ref}` on a host that has it",
            )
        if response.status_code in (401, 403):
            raise self._denied(response, what)
        if response.status_code != 200:
            raise NetworkError(f"{what}: HTTP {response.status_code} for its manifest", remedy=self._reach_remedy())
        raw = response.content
        if len(raw) > MAX_MANIFEST_BYTES:
            raise VerificationError(f"{what}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise VerificationError(
                f"{what}: the registry sent a manifest whose digest is {digest}",
                remedy="the registry's storage is damaged: push the volume again, or use another registry",
            )
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise VerificationError(f"{what}: the manifest is not JSON ({exc})") from None
        return Manifest(raw, digest, data)

    def put_manifest(self, tag: str, raw: bytes, media_type: str = OCI_MANIFEST) -> str:
        what = f"oci://{self.ref.host}/{self.ref.repository}:{tag}"
        response = self.request(
            "PUT",
            f"{self.base}/manifests/{tag}",
            headers={"Content-Type": media_type},
            content=raw,
            what=what,
        )
        if response.status_code in (401, 403):
            raise self._denied(response, what)
        if response.status_code not in (200, 201):
            raise NetworkError(
                f"{what}: the registry refused the manifest: HTTP {response.status_code} {_error_text(response)}",
                remedy="the registry may not accept OCI artifacts (artifactType); use a registry that does "
                "(distribution 2.8+, Harbor, Zot, GHCR, ...)",
            )
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    # --- blobs -----------------------------------------------------------------------------

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/blobs/{digest}"

    def renew(self, used: dict[str, str], digest: str) -> bool:
        """After a 401 on a blob in mid-fetch (a short-lived token expired): drop the token that
        was used and get a fresh one through the registry's challenge. False when there was
        no token to renew (anonymous, or basic credentials the registry now refuses)."""
        with self._renewing:
            if used.get("Authorization") != self._authorization:
                return True  # another transfer renewed it meanwhile
            if self._authorization is None or not self._authorization.startswith("Bearer "):
                return False
            self._authorization = None
            self.has_blob(digest)  # answers 401 with the challenge: a new token is fetched
            return self._authorization is not None

    def has_blob(self, digest: str) -> int | None:
        """The size of the blob if the registry has it, else None."""
        response = self.request("HEAD", self.blob_url(digest), what=f"{self.ref}: blob {digest[:19]}")
        if response.status_code == 200:
            length = response.headers.get("content-length", "")
            return int(length) if length.isdigit() else 0
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise self._denied(response, f"{self.ref}: blob {digest[:19]}")
        raise NetworkError(f"{self.ref}: HTTP {response.status_code} for HEAD of blob {digest}")

    def get_small_blob(self, digest: str, size: int, *, what: str) -> bytes:
        """A small blob (config, lock) read whole and checked against its digest and size."""
        response = self.request("GET", self.blob_url(digest), what=what)
        if response.status_code == 404:
            raise VerificationError(
                f"{what}: the registry lacks blob {digest} that the manifest names",
                remedy=f"the artifact is incomplete in the registry: push it again (`modelcache push {self.ref}`)",
            )
        if response.status_code != 200:
            raise NetworkError(f"{what}: HTTP {response.status_code} for blob {digest}")
        data = response.content
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest or len(data) != size:
            raise VerificationError(
                f"{what}: the registry sent {len(data)} bytes with digest {got[:19]}… for blob {digest[:19]}… "
                f"({size} bytes); nothing was kept",
                remedy="the registry's storage is damaged: push the volume again, or use another registry",
            )
        return data

    def mount(self, digest: str, source: str) -> bool:
        """Link a blob the registry holds in repository ``source`` into this one (no bytes sent).

        True when the registry mounted it (201); False when it cannot (another registry
        layout, no pull right on ``source``, or the blob is not there), after cancelling the
        upload session it may have opened instead.
        """
        what = f"{self.ref}: mount of {digest[:19]}… from {source}"
        response = self.request(
            "POST",
            f"{self.base}/blobs/uploads/",
            headers={"Content-Length": "0"},
            params={"mount": digest, "from": source},
            what=what,
        )
        if response.status_code == 201:
            return True
        if response.status_code in (401, 403):
            raise self._denied(response, what)
        location = response.headers.get("location")
        if response.status_code == 202 and location:  # an upload session instead: not needed
            self.request("DELETE", urljoin(f"{self.scheme}://{self.ref.host}/", location), what=what)
        return False

    def upload(self, digest: str, size: int, *, path: Path | None = None, data: bytes | None = None) -> None:
        """POST an upload, then PUT the whole blob (streamed from ``path``), hashing what is sent."""
        what = f"{self.ref}: upload of {digest[:19]}…"
        last = ""
        for attempt in range(self.policy.retries + 1):
            if attempt:
                wait = self.policy.backoff(attempt - 1)
                self.policy.notify(f"{what}: {last}; retry {attempt}/{self.policy.retries} in {wait:.1f}s")
                self.policy.sleep(wait)
            started = self.request("POST", f"{self.base}/blobs/uploads/", headers={"Content-Length": "0"}, what=what)
            if started.status_code in (401, 403):
                raise self._denied(started, what)
            location = started.headers.get("location")
            if started.status_code != 202 or not location:
                raise NetworkError(f"{what}: the registry answered HTTP {started.status_code} to the upload request")
            url = urljoin(f"{self.scheme}://{self.ref.host}/", location)
            url += ("&" if "?" in url else "?") + f"digest={digest}"
            hasher = hashlib.sha256()
            body: bytes | Iterator[bytes] = data if data is not None else _stream(path, hasher)  # type: ignore[arg-type]
            if data is not None:
                hasher.update(data)
            try:
                self.requests += 1
                response = self.client.put(
                    url,
                    content=body,
                    headers={
                        **self.auth_headers(),
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    timeout=self._timeout(),
                )
            except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                last = f"{exc.__class__.__name__} while sending"
                continue
            if "sha256:" + hasher.hexdigest() != digest:
                raise VerificationError(
                    f"{path}: its bytes changed on disk (sha256 {hasher.hexdigest()[:12]}… is not the lock's "
                    f"{digest[7:19]}…); the manifest was not pushed",
                    remedy="run `modelcache fetch --deep` to repair the volume, then push again",
                )
            if response.status_code == 201:
                return
            if response.status_code in RETRY_STATUSES:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code in (401, 403):
                raise self._denied(response, what)
            raise NetworkError(f"{what}: HTTP {response.status_code} {_error_text(response)}")
        raise NetworkError(f"{what}: failed after {self.policy.retries + 1} attempts: {last}")


def _stream(path: Path, hasher: hashlib._Hash) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(UPLOAD_CHUNK):
            hasher.update(block)
            yield block


def _error_text(response: httpx2.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:300]
    except (ValueError, AttributeError):
        return ""
