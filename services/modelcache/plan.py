"""The plan: the environment turned into one typed, normalised list of artifacts.

The downloader fetches the plan; the service rebuilds the same plan from the same
environment and checks the lock against it. The plan's digest is what ties a lock to the
configuration that produced it: a different configuration gives a different digest.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlparse

from modelcache.errors import ConfigError
from modelcache.layout import Layout, repo_folder_name
from modelcache.settings import WHISPER_NAMES, RepoRef, Settings, parse_repo, parse_sha256

Kind = Literal["hf", "whisper", "url", "mlx"]
Role = Literal["asr", "text-embedding", "vision", "face", "mlx", "extra"]

PLAN_VERSION = 1

#: openai-whisper's own download table: every checkpoint URL carries its sha256.
WHISPER_BASE_URL = "https://openaipublic.azureedge.net/main/whisper/models"
WHISPER_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "tiny.en": ("d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03", "tiny.en.pt"),
    "tiny": ("65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9", "tiny.pt"),
    "base.en": ("25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead", "base.en.pt"),
    "base": ("ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e", "base.pt"),
    "small.en": ("f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872", "small.en.pt"),
    "small": ("9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794", "small.pt"),
    "medium.en": ("d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f", "medium.en.pt"),
    "medium": ("345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1", "medium.pt"),
    "large-v1": ("e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a", "large-v1.pt"),
    "large-v2": ("81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524", "large-v2.pt"),
    "large-v3": ("e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb", "large-v3.pt"),
    "large": ("e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb", "large-v3.pt"),
    "large-v3-turbo": ("aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a", "large-v3-turbo.pt"),
    "turbo": ("aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a", "large-v3-turbo.pt"),
}

#: faster-whisper's name -> CTranslate2 repo table, and the files its loader reads.
FASTER_WHISPER_REPOS: dict[str, str] = {
    # every checkpoint name up to large-v3 has a Systran repo of its own
    **{n: f"Systran/faster-whisper-{n}" for n in WHISPER_NAMES[: WHISPER_NAMES.index("large-v3") + 1]},
    "large": "Systran/faster-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
FASTER_WHISPER_FILES = ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*")

YUNET_REPO = "opencv/face_detection_yunet"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"

#: Files a transformers/sentence-transformers consumer never reads: other frameworks'
#: weights and exports. Left out of the text-embedding and vision repos.
FOREIGN_WEIGHTS = (
    "onnx/*",
    "openvino/*",
    "coreml/*",
    "*.onnx",
    "*.onnx_data",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.tflite",
    "*.mlmodel",
    "*.gguf",
    "*.ckpt",
    "tf_model*",
    "flax_model*",
    "rust_model*",
)


#: The ONNX text engines and the graph each runs. ``onnx``: the repo's own
#: ``onnx/model.onnx`` when it has one, else a graph the downloader exports from the torch
#: weights to ``exports/<repo folder>/<commit>/model.onnx``. ``onnx-int8``: the repo's own
#: int8 graph (``onnx/model_quint8_avx2.onnx``, as sentence-transformers repos ship it),
#: else ``model_int8.onnx`` there, quantized at fetch from the fp32 graph. What the
#: downloader makes is recorded in the lock like what it fetches. ``openvino`` runs the
#: same fp32 graph as ``onnx``.
ONNX_ENGINES = ("onnx", "onnx-int8", "openvino")
REPO_GRAPH = "onnx/model.onnx"
REPO_QUANTIZED = "onnx/model_quint8_avx2.onnx"
EXPORTED_GRAPH = "model.onnx"
QUANTIZED_GRAPH = "model_int8.onnx"
#: the torch weights an exported graph is made from (and nothing else needs)
TORCH_WEIGHTS = ("*.safetensors", "*pytorch_model*.bin")


def graph_file(engine: str | None, paths: list[str]) -> str | None:
    """Which of an artifact's locked files (paths in the volume) its ONNX engine runs."""

    def found(repo_path: str, made: str) -> str | None:
        return next((p for p in paths if p.endswith("/" + repo_path)), None) or next(
            (p for p in paths if p.startswith("exports/") and p.endswith("/" + made)), None
        )

    if engine == "onnx-int8":
        return found(REPO_QUANTIZED, QUANTIZED_GRAPH)
    if engine in ("onnx", "openvino"):
        return found(REPO_GRAPH, EXPORTED_GRAPH)
    return None


@dataclass(frozen=True)
class Artifact:
    """One thing to put in the volume."""

    name: str  # stable handle for `ls`/`rm` (e.g. "whisper/base", or a repo id)
    role: Role
    kind: Kind
    source: str  # repo id, or URL
    dest: str  # path relative to the volume root (a repo folder, or a file)
    revision: str | None = None  # requested revision (hf/mlx)
    sha256: str | None = None  # expected content hash (whisper/url)
    include: tuple[str, ...] | None = None  # None: the whole repo
    exclude: tuple[str, ...] = ()
    prefer_safetensors: bool = False  # drop *.bin weights when safetensors are present
    engine: str | None = None  # which runtime consumes it (asr; text-embedding when not torch)

    @property
    def is_repo(self) -> bool:
        return self.kind in ("hf", "mlx")

    @property
    def spec(self) -> str:
        """Digest of this artifact's specification; the lock records it."""
        payload = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def describe(self) -> str:
        if self.is_repo:
            return f"{self.source}@{self.revision}"
        return self.source


@dataclass(frozen=True)
class Plan:
    artifacts: tuple[Artifact, ...]

    @property
    def digest(self) -> str:
        payload = json.dumps(
            {"version": PLAN_VERSION, "artifacts": [asdict(a) for a in self.artifacts]},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, name: str) -> Artifact | None:
        for artifact in self.artifacts:
            if artifact.name == name or artifact.source == name:
                return artifact
        return None

    def by_role(self, role: Role) -> list[Artifact]:
        return [a for a in self.artifacts if a.role == role]


def build_plan(settings: Settings) -> Plan:
    """Normalise the settings (and the optional manifest) into a plan."""
    layout = Layout(settings.models_dir)
    items: list[Artifact] = []
    if len(settings.whisper) > 1 and (settings.whisper_url or settings.whisper_sha256):
        raise ConfigError(
            f"MODELCACHE_WHISPER lists {len(settings.whisper)} sizes, but MODELCACHE_WHISPER_URL names one checkpoint",
            remedy="list one size with MODELCACHE_WHISPER_URL, or unset MODELCACHE_WHISPER_URL/_SHA256 for the "
            "official checkpoints of every size",
        )
    for name in settings.whisper:
        items.append(_whisper_artifact(settings, name, layout))
    text_engine = None if settings.text_engine == "torch" else settings.text_engine
    for ref in settings.text_embedding:
        items.append(_model_repo(ref, "text-embedding", layout, engine=text_engine))
    for ref in settings.vision:
        items.append(_model_repo(ref, "vision", layout))
    if settings.face == "yunet":
        items.append(_repo(RepoRef(YUNET_REPO), "face", "hf", layout, include=(YUNET_FILE,)))
    for ref in settings.mlx:
        items.append(_repo(ref, "mlx", "mlx", layout))
    if settings.manifest is not None:
        items.extend(load_manifest(settings.manifest, layout))
    _check_unique(items)
    return Plan(tuple(items))


def _whisper_artifact(settings: Settings, name: str, layout: Layout) -> Artifact:
    if settings.asr_engine == "faster-whisper":
        if settings.whisper_url:
            raise ConfigError(
                "MODELCACHE_WHISPER_URL is only for the openai-whisper engine",
                remedy="unset MODELCACHE_WHISPER_URL, or set MODELCACHE_ASR_ENGINE=openai-whisper",
            )
        ref = RepoRef(FASTER_WHISPER_REPOS[name])
        return _repo(ref, "asr", "hf", layout, include=FASTER_WHISPER_FILES, engine="faster-whisper")
    sha256, filename = WHISPER_CHECKPOINTS[name]
    url = f"{WHISPER_BASE_URL}/{sha256}/{filename}"
    if settings.whisper_url:
        url = settings.whisper_url
        given = PurePosixPath(urlparse(url).path).name
        if given.endswith(".pt") and given != filename:
            raise ConfigError(
                f"MODELCACHE_WHISPER_URL points at {given!r} but MODELCACHE_WHISPER={name!r} expects {filename!r}",
                remedy="make MODELCACHE_WHISPER name the checkpoint the URL serves, or fix the URL",
            )
        sha256 = settings.whisper_sha256 or _sha_in_url(url) or ""
        if not sha256:
            raise ConfigError(
                "MODELCACHE_WHISPER_URL is set but no sha256 is known for it",
                remedy="set MODELCACHE_WHISPER_SHA256 to the checkpoint's sha256",
            )
    elif settings.whisper_sha256:
        raise ConfigError(
            "MODELCACHE_WHISPER_SHA256 is only used together with MODELCACHE_WHISPER_URL",
            remedy="unset MODELCACHE_WHISPER_SHA256 (the official checkpoints' hashes are built in), "
            "or set MODELCACHE_WHISPER_URL too",
        )
    return Artifact(
        name=f"whisper/{name}",
        role="asr",
        kind="whisper",
        source=url,
        dest=layout.rel(layout.whisper / filename),
        sha256=sha256,
        engine="openai-whisper",
    )


def _sha_in_url(url: str) -> str | None:
    for part in urlparse(url).path.split("/"):
        if re.fullmatch(r"[0-9a-f]{64}", part):
            return part
    return None


def _model_repo(ref: RepoRef, role: Role, layout: Layout, *, engine: str | None = None) -> Artifact:
    """A transformers repo; an ONNX engine's graph is added to its files by the fetch
    (``fetch/hub.py`` ``select_files``), which sees what the repo holds."""
    return _repo(ref, role, "hf", layout, exclude=FOREIGN_WEIGHTS, prefer_safetensors=True, engine=engine)


def _repo(
    ref: RepoRef,
    role: Role,
    kind: Kind,
    layout: Layout,
    *,
    include: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    prefer_safetensors: bool = False,
    engine: str | None = None,
) -> Artifact:
    return Artifact(
        name=ref.repo_id,
        role=role,
        kind=kind,
        source=ref.repo_id,
        dest=layout.rel(layout.hub / repo_folder_name(ref.repo_id)),
        revision=ref.revision,
        include=include,
        exclude=exclude,
        prefer_safetensors=prefer_safetensors,
        engine=engine,
    )


def _check_unique(items: list[Artifact]) -> None:
    seen: dict[str, Artifact] = {}
    for item in items:
        other = seen.get(item.dest)
        if other is not None:
            raise ConfigError(
                f"{item.describe()} ({item.role}) and {other.describe()} ({other.role}) both land in {item.dest}",
                remedy="list each repo once (one revision per repo) and give each file its own path",
            )
        seen[item.dest] = item


# --- the extra manifest -------------------------------------------------------------------

MANIFEST_EXAMPLE = """\
[[model]]                       # a Hugging Face repo (whole repo unless include is given)
repo = "BAAI/bge-small-en-v1.5@main"
include = ["*.json", "*.txt", "model.safetensors"]   # optional
exclude = ["onnx/*"]                                   # optional

[[file]]                        # any URL, pinned by its sha256
url = "https://example.com/models/detector.onnx"
sha256 = "<64 hex characters>"
path = "detectors/detector.onnx"   # optional: where under files/ it lands
"""


MANIFEST_REMEDY = "fix that entry of the manifest (its format, with an example: docs/configuration.md)"


def load_manifest(path: Path, layout: Layout) -> list[Artifact]:
    """Read the optional TOML manifest; every error names the file, line and entry."""
    try:
        return _load_manifest(path, layout)
    except ConfigError as exc:
        if exc.remedy == ConfigError.default_remedy:
            exc.remedy = MANIFEST_REMEDY
        raise


def _load_manifest(path: Path, layout: Layout) -> list[Artifact]:
    where = f"MODELCACHE_MANIFEST ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found", remedy="fix the path or unset MODELCACHE_MANIFEST") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{where}: cannot read: {exc}", remedy="make the file readable, or unset MODELCACHE_MANIFEST"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid TOML: {exc}", remedy="see the example in docs/configuration.md"
        ) from None
    lines = text.splitlines()
    for key in sorted(set(data) - {"model", "file"}):
        line = _key_line(lines, key)
        raise ConfigError(f"{path}:{line}: unknown section or key {key!r}; expected [[model]] or [[file]] tables")
    items: list[Artifact] = []
    for section, parse in (("model", _manifest_model), ("file", _manifest_file)):
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise ConfigError(
                f"{path}:{_key_line(lines, section)}: '{section}' must be written as [[{section}]] tables"
            )
        header = re.compile(rf"^\s*\[\[\s*{section}\s*\]\]")
        starts: list[int | str] = [i + 1 for i, line in enumerate(lines) if header.match(line)]
        if not starts:
            starts = [_key_line(lines, section)]
        for index, entry in enumerate(entries):
            line = starts[index] if index < len(starts) else starts[-1]
            items.append(parse(entry, f"{path}:{line} [[{section}]] #{index + 1}", layout))
    return items


def _key_line(lines: list[str], key: str) -> int | str:
    """The line where a top-level table or key named ``key`` starts ("?" if not found)."""
    pattern = re.compile(rf"^\s*(\[+\s*{re.escape(key)}\s*[\].]|{re.escape(key)}\s*[=.])")
    return next((i + 1 for i, line in enumerate(lines) if pattern.match(line)), "?")


def _manifest_model(entry: dict, where: str, layout: Layout) -> Artifact:
    _only_keys(entry, {"repo", "include", "exclude", "mlx"}, where)
    if "repo" not in entry or not isinstance(entry["repo"], str):
        raise ConfigError(f"{where}: 'repo' is required (e.g. repo = \"org/name@main\")")
    ref = parse_repo(entry["repo"], where=where)
    include = _patterns(entry, "include", where)
    exclude = _patterns(entry, "exclude", where) or ()
    if not isinstance(entry.get("mlx", False), bool):
        raise ConfigError(f"{where}: 'mlx' must be true or false")
    kind: Kind = "mlx" if entry.get("mlx") else "hf"
    return _repo(ref, "mlx" if kind == "mlx" else "extra", kind, layout, include=include, exclude=exclude)


def _manifest_file(entry: dict, where: str, layout: Layout) -> Artifact:
    _only_keys(entry, {"url", "sha256", "path"}, where)
    url = entry.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'url' must be an http(s) URL")
    if not isinstance(entry.get("sha256"), str):
        raise ConfigError(f"{where}: 'sha256' is required: a file is pinned by its content hash")
    sha256 = parse_sha256(entry["sha256"], where=where)
    rel = entry.get("path") or PurePosixPath(urlparse(url).path).name
    if not isinstance(rel, str) or not rel:
        raise ConfigError(f"{where}: cannot derive a file name from the URL; set 'path'")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or rel.startswith("."):
        raise ConfigError(f"{where}: 'path' must be a relative path inside files/ (got {rel!r})")
    return Artifact(
        name=f"files/{pure.as_posix()}",
        role="extra",
        kind="url",
        source=url,
        dest=layout.rel(layout.files / pure),
        sha256=sha256,
    )


def _only_keys(entry: object, allowed: set[str], where: str) -> None:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _patterns(entry: dict, key: str, where: str) -> tuple[str, ...] | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: '{key}' must be a non-empty list of glob patterns (leave it out for none)")
    return tuple(value)
