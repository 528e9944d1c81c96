"""Every setting of modelcache, read from the environment in this one place.

Both the downloader and the service build their :class:`Settings` here, from the same
variables (compose passes the same ``.env`` to both), so both derive the same plan.
Nothing here imports a third-party library.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from modelcache.errors import ConfigError

#: openai-whisper checkpoint names (the keys of its URL table) and faster-whisper's too.
WHISPER_NAMES = (
    "tiny.en",
    "tiny",
    "base.en",
    "base",
    "small.en",
    "small",
    "medium.en",
    "medium",
    "large-v1",
    "large-v2",
    "large-v3",
    "large",
    "large-v3-turbo",
    "turbo",
)
ASR_ENGINES = ("openai-whisper", "faster-whisper")
#: torch: transformers on torch (CPU or GPU); onnx: the repo's ONNX graph (or one the
#: downloader exports) on ONNX Runtime, CPU; onnx-int8: an int8 graph (the repo's, or
#: quantized at fetch) on ONNX Runtime; openvino: the fp32 graph on OpenVINO, CPU
TEXT_ENGINES = ("torch", "onnx", "onnx-int8", "openvino")
FACE_MODELS = ("yunet",)
VERIFY_MODES = ("fast", "deep")
#: http: every file through our own ranged, hashed transfer (Xet-backed files via the Hub's
#: resolve redirect); xet: Xet-backed files through hf_xet first, into a staging area.
TRANSFER_MODES = ("http", "xet")
DEVICES = ("auto", "cpu", "cuda")
#: CTranslate2 compute types faster-whisper accepts
COMPUTE_TYPES = (
    "default",
    "auto",
    "float32",
    "float16",
    "bfloat16",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
)

DEFAULT_TEXT_EMBEDDING = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_VISION = "google/siglip-base-patch16-224"
DEFAULT_WHISPER = "base"

# A Hub repo id: "org/name" (letters, digits, '-', '_', '.'), at most 96 characters,
# no '--' or '..' and not starting or ending with '-' or '.' (the Hub's own rules). Legacy
# one-segment ids ("gpt2", "bert-base-uncased") are still resolved by the Hub: accepted.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^(?:{_REPO_PART}/)?{_REPO_PART}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
# git's ref-name rules that the character class above does not already enforce
_BAD_REF = re.compile(r"\.\.|//|/$|/\.|\.lock$|\.$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NONE = {"", "none", "off", "false", "0", "disabled"}


@dataclass(frozen=True)
class RepoRef:
    """A Hub repo id with an optional requested revision (branch, tag or commit)."""

    repo_id: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def parse_repo(value: str, *, where: str) -> RepoRef:
    """Parse ``org/name`` or ``org/name@revision``; ``where`` names the variable or line."""
    text = value.strip()
    repo_id, sep, revision = text.partition("@")
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or len(repo_id) > 96:
        raise ConfigError(
            f"{where}: {value!r} is not a Hugging Face repo id",
            remedy=f"use the form 'org/name' or 'org/name@revision', e.g. {DEFAULT_TEXT_EMBEDDING!r}",
        )
    if sep and not revision:
        raise ConfigError(
            f"{where}: {value!r} has an '@' but no revision after it",
            remedy="write the branch, tag or 40-character commit after '@', or drop the '@'",
        )
    if sep and (not _REVISION.match(revision) or _BAD_REF.search(revision)):
        raise ConfigError(
            f"{where}: revision {revision!r} in {value!r} is not a valid git revision",
            remedy="write a branch or tag name (letters, digits, '.', '_', '-', '/'; no spaces) "
            "or a 40-character commit after '@'",
        )
    return RepoRef(repo_id, revision if sep else "main")


def parse_sha256(value: str, *, where: str) -> str:
    text = value.strip().lower()
    if not _SHA256.match(text):
        raise ConfigError(
            f"{where}: {value!r} is not a sha256 (64 hexadecimal characters)",
            remedy="copy the full sha256 of the file (`sha256sum FILE` prints it), or leave the setting out",
        )
    return text


# An OCI distribution reference: oci://HOST[:PORT]/REPO(:TAG|@sha256:DIGEST)
_OCI_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?$"
)
_OCI_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_OCI_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_OCI_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
OCI_EXAMPLE = "oci://registry.example.com:5000/models/site:2024-06"


@dataclass(frozen=True)
class OciReference:
    """An artifact in an OCI registry: host (with port), repository, and a tag or a digest."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What the registry's manifest endpoint takes: the digest if given, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"oci://{self.host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


def parse_oci_reference(value: str, *, where: str, tag_only: bool = False) -> OciReference:
    """Parse ``oci://HOST[:PORT]/REPO:TAG`` or ``oci://HOST[:PORT]/REPO@sha256:DIGEST``.

    ``tag_only``: a digest is refused (what `push` writes is named by a tag)."""
    text = value.strip()
    form = "oci://HOST[:PORT]/REPO:TAG" + ("" if tag_only else " or oci://HOST[:PORT]/REPO@sha256:DIGEST")
    remedy = f"write it as {form}, e.g. {OCI_EXAMPLE}"
    if not text.startswith("oci://"):
        raise ConfigError(f"{where}: {value!r} is not an oci:// reference", remedy=remedy)
    host, slash, rest = text.removeprefix("oci://").partition("/")
    if not slash or not _OCI_HOST.match(host) or (":" in host and not 0 < int(host.rsplit(":", 1)[1]) < 65536):
        raise ConfigError(f"{where}: {value!r} does not start with a registry host (HOST or HOST:PORT)", remedy=remedy)
    digest = tag = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if tag_only:
            raise ConfigError(f"{where}: {value!r} names a digest; a push needs a tag", remedy=remedy)
        if not _OCI_DIGEST.match(digest):
            raise ConfigError(
                f"{where}: {digest!r} in {value!r} is not a sha256 digest", remedy="write @sha256: and 64 hex digits"
            )
    else:
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, _, tag = rest.rpartition(":")
            if not _OCI_TAG.match(tag):
                raise ConfigError(
                    f"{where}: tag {tag!r} in {value!r} is not a valid tag",
                    remedy="a tag has up to 128 letters, digits, '_', '.', '-' and does not start with '.' or '-'",
                )
        else:
            raise ConfigError(f"{where}: {value!r} names no tag" + ("" if tag_only else " or digest"), remedy=remedy)
    if not _OCI_REPO.match(rest) or len(rest) > 255:
        raise ConfigError(
            f"{where}: {rest!r} in {value!r} is not a valid repository name",
            remedy="lower-case letters, digits and '.', '_', '-' separators, path parts joined by '/'",
        )
    return OciReference(host.lower(), rest, tag, digest)


def _insecure_registries(value: str | None) -> tuple[str, ...]:
    hosts = tuple(v.strip().lower() for v in (value or "").split(",") if v.strip())
    for host in hosts:
        if "/" in host or not _OCI_HOST.match(host):
            raise ConfigError(
                f"MODELCACHE_INSECURE_REGISTRIES: {host!r} is not HOST or HOST:PORT",
                remedy="list registries reached over plain http, separated by commas, e.g. 127.0.0.1:5000,registry.lan:5000",
            )
    return hosts


@dataclass(frozen=True)
class TrustPolicy:
    """Whose model signatures a fetch accepts (OpenSSF model signing), and whether one is required.

    One of: a public key (PEM), a certificate chain (PEM files), or a Sigstore identity with
    its OIDC issuer. None configured: signatures are not checked (and cannot be required).
    """

    require: bool = False
    key: Path | None = None  # MODELCACHE_TRUST_KEY
    certificates: tuple[Path, ...] = ()  # MODELCACHE_TRUST_CERTS
    identity: str | None = None  # MODELCACHE_TRUST_IDENTITY
    issuer: str | None = None  # MODELCACHE_TRUST_ISSUER

    @property
    def configured(self) -> bool:
        return self.key is not None or bool(self.certificates) or self.identity is not None

    def describe(self) -> str:
        if self.key is not None:
            return f"the public key {self.key}"
        if self.certificates:
            return "the certificate chain " + ", ".join(str(c) for c in self.certificates)
        if self.identity is not None:
            return f"the Sigstore identity {self.identity} (issuer {self.issuer})"
        return "no trust policy"


def _ca_bundle(value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"MODELCACHE_CA_BUNDLE: cannot read {path} ({exc.strerror or exc.__class__.__name__})",
            remedy="point it at a PEM file with the CA certificate(s) that signed your registry's certificate",
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(
            f"MODELCACHE_CA_BUNDLE: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            remedy="give the CA certificate in PEM form (`openssl x509 -in ca.der -inform der -out ca.pem`)",
        )
    return path


def _trust_policy(get: _Reader) -> TrustPolicy:
    require = get.choice("MODELCACHE_REQUIRE_SIGNATURE", "0", ("0", "1", "false", "true", "no", "yes")) in (
        "1",
        "true",
        "yes",
    )
    key = get.text("MODELCACHE_TRUST_KEY", None)
    certs = tuple(Path(c.strip()) for c in (get.text("MODELCACHE_TRUST_CERTS", "") or "").split(",") if c.strip())
    identity = get.text("MODELCACHE_TRUST_IDENTITY", None)
    issuer = get.text("MODELCACHE_TRUST_ISSUER", None)
    chosen = [
        n
        for n, v in (
            ("MODELCACHE_TRUST_KEY", key),
            ("MODELCACHE_TRUST_CERTS", certs),
            ("MODELCACHE_TRUST_IDENTITY", identity),
        )
        if v
    ]
    remedy = (
        "set exactly one of MODELCACHE_TRUST_KEY (a PEM public key), MODELCACHE_TRUST_CERTS (PEM certificate "
        "files, comma-separated) or MODELCACHE_TRUST_IDENTITY with MODELCACHE_TRUST_ISSUER"
    )
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} are both set: a trust policy has one kind", remedy=remedy)
    if (identity is None) != (issuer is None):
        raise ConfigError("MODELCACHE_TRUST_IDENTITY and MODELCACHE_TRUST_ISSUER go together", remedy=remedy)
    policy = TrustPolicy(require, Path(key) if key else None, certs, identity, issuer)
    if require and not policy.configured:
        raise ConfigError(
            "MODELCACHE_REQUIRE_SIGNATURE=1 but no trust policy says whose signatures count", remedy=remedy
        )
    for name, path in [("MODELCACHE_TRUST_KEY", policy.key)] + [("MODELCACHE_TRUST_CERTS", c) for c in certs]:
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}: {path} is not a readable file", remedy=remedy)
    return policy


@dataclass(frozen=True)
class Settings:
    """The typed, validated configuration. Build it with :meth:`from_env`."""

    models_dir: Path = Path("/models")
    whisper: tuple[str, ...] = (DEFAULT_WHISPER,)  # one or more sizes; the first answers to "whisper-1"
    asr_engine: str = "openai-whisper"
    text_engine: str = "torch"  # MODELCACHE_TEXT_ENGINE: torch | onnx | onnx-int8 | openvino
    whisper_url: str | None = None
    whisper_sha256: str | None = None
    text_embedding: tuple[RepoRef, ...] = (RepoRef(DEFAULT_TEXT_EMBEDDING),)
    vision: tuple[RepoRef, ...] = (RepoRef(DEFAULT_VISION),)
    face: str | None = "yunet"
    mlx: tuple[RepoRef, ...] = ()
    manifest: Path | None = None
    lockfile: Path | None = None  # models.lock: fetch exactly these pins
    hf_endpoint: str = "https://huggingface.co"
    hf_token_file: Path = Path("/run/secrets/hf_token")
    verify: str = "fast"
    workers: int = 4
    retries: int = 5
    stall_timeout: float = 60.0
    fetch_timeout: float = 6 * 3600.0
    lock_timeout: float = 1800.0
    transfer: str = "http"
    segments: int = 4
    segment_min_bytes: int = 256 * 1024 * 1024
    from_ref: OciReference | None = None  # MODELCACHE_FROM: fill the volume from this OCI artifact
    insecure_registries: tuple[str, ...] = ()  # HOST:PORT reached over plain http
    trust: TrustPolicy = TrustPolicy()  # whose model signatures count (MODELCACHE_TRUST_*)
    ca_bundle: Path | None = None  # MODELCACHE_CA_BUNDLE: extra CAs for registries over https
    # the service
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_file: Path | None = None
    admin_key_file: Path | None = None  # MODELCACHE_ADMIN_KEY_FILE: the key of /admin/*; unset or empty: off
    max_body_bytes: int = 25 * 1024 * 1024
    batch_max: int = 32
    batch_wait_ms: float = 0.0
    queue_size: int = 64
    request_timeout: float = 120.0
    realtime_sessions: int = 8  # realtime WebSocket sessions at once
    realtime_buffer_seconds: float = 120.0  # audio a session may hold that was not transcribed yet
    realtime_idle_seconds: float = 60.0  # a session that sends nothing for this long is closed
    admission_wait: float = 1.0  # seconds a request may wait for a queue slot before 429
    threads: int = 0  # CPU threads per model process (0: every CPU the process may use)
    asr_nice: int = 10  # CPU priority offset of speech-to-text processes (long requests yield to short ones)
    asr_compute_type: str | None = None  # faster-whisper; None: float32 on CPU, float16 on GPU
    memory_budget: int | None = None  # bytes the model processes may use together; None: load all, keep all
    pin: tuple[str, ...] = ()  # models that always stay loaded under a budget
    reload: str = "off"  # off | watch (poll the volume's lock and reload when it changes)
    log_format: str = "text"  # text | json (modelcache.logs; read again before the settings, from the first line)
    access_log: bool = True  # a line per answered request (successful /health* and /metrics excepted)
    serve: str = "configured"  # configured (the model settings pick from the lock) | lock (all it holds)
    reload_interval: float = 5.0
    extra_env: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        get = _Reader(env)
        whisper = get.choice_list("MODELCACHE_WHISPER", DEFAULT_WHISPER, WHISPER_NAMES)
        whisper_url = get.text("MODELCACHE_WHISPER_URL", None)
        whisper_sha = get.text("MODELCACHE_WHISPER_SHA256", None)
        if whisper_sha is not None:
            whisper_sha = parse_sha256(whisper_sha, where="MODELCACHE_WHISPER_SHA256")
        if whisper_url is not None and not whisper_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"MODELCACHE_WHISPER_URL: {whisper_url!r} is not an http(s) URL",
                remedy="give the full http:// or https:// address of the checkpoint, or unset it",
            )
        manifest = get.text("MODELCACHE_MANIFEST", None)
        compute = get.choice("MODELCACHE_ASR_COMPUTE_TYPE", "", COMPUTE_TYPES) or None
        if compute and get.choice("MODELCACHE_ASR_ENGINE", "openai-whisper", ASR_ENGINES) != "faster-whisper":
            raise ConfigError(
                f"MODELCACHE_ASR_COMPUTE_TYPE={compute} is a faster-whisper setting, and the engine is openai-whisper",
                remedy="set MODELCACHE_ASR_ENGINE=faster-whisper, or unset MODELCACHE_ASR_COMPUTE_TYPE",
            )
        text_engine = get.choice("MODELCACHE_TEXT_ENGINE", "torch", TEXT_ENGINES)
        if text_engine != "torch" and get.choice("MODELCACHE_DEVICE", "auto", DEVICES) == "cuda":
            raise ConfigError(
                f"MODELCACHE_TEXT_ENGINE={text_engine} runs on the CPU, and MODELCACHE_DEVICE=cuda asks for a GPU",
                remedy="use MODELCACHE_TEXT_ENGINE=torch on a GPU, or MODELCACHE_DEVICE=auto (the other models "
                "still take the GPU when there is one)",
            )
        endpoint = (get.text("HF_ENDPOINT", "https://huggingface.co") or "").rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"HF_ENDPOINT={endpoint!r} is not an http(s) URL", remedy="e.g. https://huggingface.co")
        return cls(
            models_dir=Path(get.text("MODELCACHE_DIR", "/models") or "/models"),
            whisper=whisper,
            asr_engine=get.choice("MODELCACHE_ASR_ENGINE", "openai-whisper", ASR_ENGINES),
            text_engine=text_engine,
            whisper_url=whisper_url,
            whisper_sha256=whisper_sha,
            text_embedding=get.repo_list("MODELCACHE_TEXT_EMBEDDING", DEFAULT_TEXT_EMBEDDING),
            vision=get.repo_list("MODELCACHE_VISION", DEFAULT_VISION),
            face=get.choice("MODELCACHE_FACE", "yunet", FACE_MODELS, allow_none=True),
            mlx=get.repo_list("MODELCACHE_MLX", spaces=True),
            manifest=Path(manifest) if manifest else None,
            lockfile=Path(lockfile) if (lockfile := get.text("MODELCACHE_LOCKFILE", None)) else None,
            hf_endpoint=endpoint,
            hf_token_file=Path(get.text("MODELCACHE_HF_TOKEN_FILE", "/run/secrets/hf_token") or ""),
            verify=get.choice("MODELCACHE_VERIFY", "fast", VERIFY_MODES),
            workers=int(get.number("MODELCACHE_WORKERS", 4, minimum=1, maximum=64, integer=True)),
            retries=int(get.number("MODELCACHE_RETRIES", 5, minimum=0, maximum=100, integer=True)),
            stall_timeout=get.number("MODELCACHE_STALL_TIMEOUT", 60.0, minimum=0.1),
            fetch_timeout=get.number("MODELCACHE_FETCH_TIMEOUT", 6 * 3600.0, minimum=1.0),
            lock_timeout=get.number("MODELCACHE_LOCK_TIMEOUT", 1800.0, minimum=0.0),
            transfer=_transfer_mode(get),
            segments=int(get.number("MODELCACHE_SEGMENTS", 4, minimum=1, maximum=16, integer=True)),
            segment_min_bytes=int(get.number("MODELCACHE_SEGMENT_MIN_MB", 256, minimum=1) * 1024 * 1024),
            from_ref=parse_oci_reference(source, where="MODELCACHE_FROM")
            if (source := get.text("MODELCACHE_FROM", None))
            else None,
            insecure_registries=_insecure_registries(get.text("MODELCACHE_INSECURE_REGISTRIES", None)),
            trust=_trust_policy(get),
            ca_bundle=_ca_bundle(get.text("MODELCACHE_CA_BUNDLE", None)),
            device=get.choice("MODELCACHE_DEVICE", "auto", DEVICES),
            host=get.text("MODELCACHE_HOST", "127.0.0.1") or "127.0.0.1",
            port=int(get.number("MODELCACHE_PORT", 8000, minimum=1, maximum=65535, integer=True)),
            api_key_file=Path(key_file) if (key_file := get.text("MODELCACHE_API_KEY_FILE", None)) else None,
            admin_key_file=Path(admin) if (admin := get.text("MODELCACHE_ADMIN_KEY_FILE", None)) else None,
            max_body_bytes=int(get.number("MODELCACHE_MAX_BODY_MB", 25, minimum=0.001, maximum=4096) * 1024 * 1024),
            batch_max=int(get.number("MODELCACHE_BATCH_MAX", 32, minimum=1, maximum=4096, integer=True)),
            batch_wait_ms=get.number("MODELCACHE_BATCH_WAIT_MS", 0.0, minimum=0.0, maximum=10_000),
            queue_size=int(get.number("MODELCACHE_QUEUE_SIZE", 64, minimum=1, maximum=100_000, integer=True)),
            request_timeout=get.number("MODELCACHE_REQUEST_TIMEOUT", 120.0, minimum=0.1),
            realtime_sessions=int(
                get.number("MODELCACHE_REALTIME_SESSIONS", 8, minimum=0, maximum=10_000, integer=True)
            ),
            realtime_buffer_seconds=get.number("MODELCACHE_REALTIME_BUFFER_SECONDS", 120.0, minimum=1, maximum=3600),
            realtime_idle_seconds=get.number("MODELCACHE_REALTIME_IDLE_SECONDS", 60.0, minimum=0.1, maximum=86_400),
            admission_wait=get.number("MODELCACHE_ADMISSION_WAIT_MS", 1000, minimum=0, maximum=600_000) / 1000,
            threads=int(get.number("MODELCACHE_THREADS", 0, minimum=0, maximum=1024, integer=True)),
            asr_nice=int(get.number("MODELCACHE_ASR_NICE", 10, minimum=0, maximum=19, integer=True)),
            asr_compute_type=compute,
            memory_budget=get.size("MODELCACHE_MEMORY_BUDGET"),
            pin=tuple(v.strip() for v in (get.text("MODELCACHE_PIN", "") or "").split(",") if v.strip()),
            reload=get.choice("MODELCACHE_RELOAD", "off", ("off", "watch")) or "off",
            log_format=get.choice("MODELCACHE_LOG_FORMAT", "text", ("text", "json")) or "text",
            access_log=(get.choice("MODELCACHE_ACCESS_LOG", "on", ("on", "off")) or "on") == "on",
            serve=get.choice("MODELCACHE_SERVE", "configured", ("configured", "lock")) or "configured",
            reload_interval=get.number("MODELCACHE_RELOAD_INTERVAL", 5.0, minimum=0.5, maximum=3600),
            extra_env=env,
        )

    def hf_token(self) -> str | None:
        """The Hub token: the secret file first (never baked into an image), else HF_TOKEN."""
        path = self.hf_token_file
        remedy = (
            "point MODELCACHE_HF_TOKEN_FILE at a readable file holding the token "
            "(compose: HF_TOKEN_FILE in .env; /dev/null for none)"
        )
        if path.is_dir():
            raise ConfigError(f"MODELCACHE_HF_TOKEN_FILE: {path} is a directory, not a token file", remedy=remedy)
        try:
            token = path.read_text(encoding="utf-8").strip() if path.exists() else ""  # /dev/null: no token
        except OSError as exc:
            raise ConfigError(f"MODELCACHE_HF_TOKEN_FILE: cannot read {path}: {exc.strerror}", remedy=remedy) from None
        return token or (self.extra_env.get("HF_TOKEN") or "").strip() or None

    def api_key(self) -> str | None:
        """The bearer key clients must send (from a secret file); None: no auth."""
        if self.api_key_file is None:
            return None
        key = _read_key(
            "MODELCACHE_API_KEY_FILE",
            self.api_key_file,
            "mount the API key secret, or unset MODELCACHE_API_KEY_FILE to disable auth",
        )
        if not key:
            raise ConfigError(
                f"MODELCACHE_API_KEY_FILE: {self.api_key_file} is empty",
                remedy="put the key clients must send in that file, or unset MODELCACHE_API_KEY_FILE to disable auth",
            )
        return key

    def admin_key(self) -> str | None:
        """The bearer key of the model control routes (/admin/*); None: they are off (403).
        An empty file means none, as /dev/null does for the other secrets; it may not be the
        API key, which must never open them."""
        if self.admin_key_file is None:
            return None
        remedy = "mount the admin key secret, or unset MODELCACHE_ADMIN_KEY_FILE to turn model control off"
        key = _read_key("MODELCACHE_ADMIN_KEY_FILE", self.admin_key_file, remedy) or None
        if key is not None and key == self.api_key():
            raise ConfigError(
                f"MODELCACHE_ADMIN_KEY_FILE: {self.admin_key_file} holds the same key as MODELCACHE_API_KEY_FILE",
                remedy="make a key of its own for model control (openssl rand -hex 32): "
                "the API key must not open /admin/*",
            )
        return key


def _read_key(variable: str, path: Path, remedy: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}", remedy=remedy) from None


def _transfer_mode(get: _Reader) -> str:
    value = (get.text("MODELCACHE_TRANSFER", "http") or "http").lower()
    if value == "auto":  # the 0.1 name of the default
        return "http"
    if value == "client":
        raise ConfigError(
            "MODELCACHE_TRANSFER=client is gone: it let huggingface_hub publish files before modelcache hashed them",
            remedy="unset MODELCACHE_TRANSFER (every file then takes the verified HTTP path), "
            "or set it to 'xet' to try hf_xet first for Xet-backed files",
        )
    return get.choice("MODELCACHE_TRANSFER", "http", TRANSFER_MODES) or "http"


class _Reader:
    """Reads and validates one variable at a time; every error names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str | None) -> str | None:
        value = self.env.get(name)
        if value is None:
            return default
        value = value.strip()
        return value if value else default

    @overload
    def choice(
        self, name: str, default: str, allowed: tuple[str, ...], *, allow_none: Literal[False] = False
    ) -> str: ...
    @overload
    def choice(self, name: str, default: str, allowed: tuple[str, ...], *, allow_none: bool) -> str | None: ...
    def choice(self, name: str, default: str, allowed: tuple[str, ...], *, allow_none: bool = False) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip():
            return default
        value = value.strip()
        if allow_none and value.lower() in _NONE:
            return None
        if value not in allowed:
            extra = " or 'none'" if allow_none else ""
            raise ConfigError(
                f"{name}={value!r} is not one of: {', '.join(allowed)}{extra}",
                remedy=f"set {name} to one of the listed values (see docs/configuration.md)",
            )
        return value

    def choice_list(self, name: str, default: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        """One value or a comma-separated list of them; 'none' alone: an empty tuple."""
        value = self.env.get(name)
        if value is None or not value.strip():
            value = default
        items = [v.strip() for v in value.split(",") if v.strip()]
        if len(items) == 1 and items[0].lower() in _NONE:
            return ()
        for i, item in enumerate(items):
            if item not in allowed:
                where = name if len(items) == 1 else f"{name} (item {i + 1})"
                raise ConfigError(
                    f"{where}={item!r} is not one of: {', '.join(allowed)} or 'none'",
                    remedy=f"set {name} to one of the listed values, or several separated by commas",
                )
        if len(set(items)) != len(items):
            raise ConfigError(f"{name}: a value is listed twice ({value.strip()!r})", remedy="list each value once")
        return tuple(items)

    def repo_list(self, name: str, default: str = "", *, spaces: bool = False) -> tuple[RepoRef, ...]:
        """One repo or a comma-separated list of them (``spaces``: whitespace separates too);
        'none' (or empty without a default): none."""
        value = self.env.get(name)
        if value is None or not value.strip():
            value = default
        items = [v.strip() for v in re.split(r"[\s,]+" if spaces else r",", value) if v.strip()]
        if len(items) == 1 and items[0].lower() in _NONE:
            return ()
        for i, item in enumerate(items):
            if item.lower() in _NONE:
                raise ConfigError(
                    f"{name} (item {i + 1}): {item!r} means 'no repo' and cannot stand in a list",
                    remedy=f"list repos only, or set {name}={item} on its own",
                )
        where = (lambda i: name) if len(items) == 1 else (lambda i: f"{name} (item {i + 1})")
        refs = tuple(parse_repo(v, where=where(i)) for i, v in enumerate(items))
        seen: set[str] = set()
        for ref in refs:
            if ref.repo_id in seen:
                raise ConfigError(f"{name}: {ref.repo_id!r} is listed twice", remedy="list each repo once")
            seen.add(ref.repo_id)
        return refs

    def size(self, name: str) -> int | None:
        """A byte size such as 4g, 512m, 1.5GiB or 2000000000; unset or 'none': None."""
        value = (self.env.get(name) or "").strip()
        if not value or value.lower() in _NONE:
            return None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", value.lower())
        if not match or float(match.group(1)) <= 0:
            raise ConfigError(
                f"{name}={value!r} is not a size",
                remedy=f"write it like 4g, 1536m or 2.5GiB (binary units), or unset {name}",
            )
        power = " kmgt".index(match.group(2) or " ")
        return int(float(match.group(1)) * 1024**power)

    def number(
        self, name: str, default: float, *, minimum: float, maximum: float | None = None, integer: bool = False
    ) -> float:
        value = self.env.get(name)
        if value is None or not value.strip():
            return default
        what = "a whole number" if integer else "a number"
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        remedy = f"set {name} to {what} {bound} (default {default:g}), or unset it"
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a number", remedy=remedy) from None
        if not math.isfinite(number):
            raise ConfigError(f"{name}={value!r} is not a finite number", remedy=remedy)
        if integer and not number.is_integer():
            raise ConfigError(f"{name}={value!r} must be a whole number", remedy=remedy)
        if number < minimum or (maximum is not None and number > maximum):
            raise ConfigError(f"{name}={value!r} must be {bound}", remedy=remedy)
        return number
