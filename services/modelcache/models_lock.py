"""The model lockfile (``models.lock``): every artifact of the plan pinned, committed beside
docker-compose.yml, so that every host fills its volume with the same bytes.

``modelcache lock`` writes it from the Hub's metadata (no weights are downloaded); with
``MODELCACHE_LOCKFILE`` set, ``fetch`` takes commits, file lists, sizes and hashes from it
and asks the Hub nothing but the bytes; with a top-level ``registry = "oci://…@sha256:…"``
it asks the Hub nothing at all and fills the volume from that artifact instead. The format is TOML, one ``[[artifact]]`` table per
artifact and one line per file, in a fixed order, so a moved pin is a small diff::

    version = 1
    plan = "<digest of the configuration it was made from>"

    [[artifact]]
    name = "sentence-transformers/all-MiniLM-L6-v2"
    kind = "hf"
    spec = "<digest of this artifact's configuration>"
    source = "sentence-transformers/all-MiniLM-L6-v2"
    revision = "main"
    commit = "<40 hex>"
    files = [
      { path = "config.json", size = 612, git = "<git blob sha1>" },
      { path = "model.safetensors", size = 90868376, sha256 = "<64 hex>" },
    ]

Hub files carry the sha256 the Hub lists for LFS files, or git's blob id for small ones;
whisper and URL artifacts the sha256 of their one file. Standard library only: the
service's gate reads it too.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcache.errors import ConfigError
from modelcache.layout import atomic_write_text
from modelcache.plan import Artifact, Plan
from modelcache.settings import Settings

LOCKFILE_VERSION = 1
LOCKFILE_NAME = "models.lock"
UPGRADE_REMEDY = "run `modelcache lock` to pin what is new, or `modelcache lock --upgrade` to move every pin"
_HEX = {40: re.compile(r"^[0-9a-f]{40}$"), 64: re.compile(r"^[0-9a-f]{64}$")}
HEADER = """\
# models.lock: the exact model files `modelcache fetch` (the model-downloader) puts in the
# volume. Made by `modelcache lock` from the Hub's metadata; commit it. `modelcache lock
# --upgrade [NAME]` moves pins; `modelcache lock --check` says whether it matches .env.
"""


@dataclass(frozen=True)
class PinnedFile:
    path: str  # inside the repo (hub artifacts) or inside the volume (whisper, url)
    size: int | None
    sha256: str | None = None
    git: str | None = None  # git blob sha1: small Hub files, whose sha256 the Hub does not list


@dataclass(frozen=True)
class Pin:
    name: str
    kind: str
    spec: str  # the plan artifact's spec digest it was made for
    source: str
    revision: str | None
    commit: str | None
    files: tuple[PinnedFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass(frozen=True)
class Lockfile:
    plan: str
    pins: tuple[Pin, ...]
    #: where the pinned bytes are to be fetched from instead of the Hub: an artifact made by
    #: `modelcache push`, by digest. Not part of the digest: it says where, not what.
    registry: str | None = None

    @property
    def digest(self) -> str:
        """Of the content (not the comments): what a volume's lock records."""
        payload = json.dumps(
            {"version": LOCKFILE_VERSION, "plan": self.plan, "pins": [asdict(p) for p in self.pins]},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, name: str) -> Pin | None:
        return next((p for p in self.pins if p.name == name), None)

    def pin_for(self, artifact: Artifact) -> Pin | None:
        """The pin made for exactly this artifact's configuration, or None."""
        return next((p for p in self.pins if p.spec == artifact.spec), None)

    def unpinned(self, plan: Plan) -> list[Artifact]:
        return [a for a in plan.artifacts if self.pin_for(a) is None]

    def stale(self, plan: Plan) -> list[str]:
        """Every way this lockfile differs from the configuration (empty: up to date)."""
        problems = [f"{a.describe()} ({a.role}) is configured but not pinned" for a in self.unpinned(plan)]
        specs = {a.spec for a in plan.artifacts}
        problems += [f"{p.name} is pinned but no longer configured" for p in self.pins if p.spec not in specs]
        if not problems and self.plan != plan.digest:
            problems.append("the configuration changed since the lockfile was made")
        return problems


def read_lockfile(path: Path) -> Lockfile | None:
    """The lockfile at ``path``; None when it is empty (compose mounts /dev/null for "none")."""
    where = f"MODELCACHE_LOCKFILE ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: file not found",
            remedy="create it with `modelcache lock`, or unset MODELCACHE_LOCKFILE",
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"{where} is a directory, not a lockfile (Docker makes one when a bind-mounted file is missing)",
            remedy="create the file with `modelcache lock` on the host, or unset MODELCACHE_LOCKFILE",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}", remedy="make the file readable") from None
    if not text.strip():
        return None
    try:
        return _parse(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid TOML: {exc}", remedy="restore it from version control, or " + UPGRADE_REMEDY
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}", remedy="restore it from version control, or " + UPGRADE_REMEDY) from None


def _parse(data: dict) -> Lockfile:
    if data.get("version") != LOCKFILE_VERSION:
        raise ValueError(
            f"unsupported lockfile version {data.get('version')!r} (this modelcache reads {LOCKFILE_VERSION})"
        )
    plan = _text(data, "plan", "the lockfile")
    pins = []
    for index, entry in enumerate(data.get("artifact", [])):
        where = f"[[artifact]] #{index + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a table")
        name = _text(entry, "name", where)
        where = f"[[artifact]] {name!r}"
        kind, spec, source = (_text(entry, key, where) for key in ("kind", "spec", "source"))
        commit = entry.get("commit")
        if commit is not None and not _HEX[40].match(str(commit)):
            raise ValueError(f"{where}: commit {commit!r} is not 40 hexadecimal characters")
        files = entry.get("files")
        if not isinstance(files, list) or not files:
            raise ValueError(f"{where}: 'files' must list at least one file")
        pins.append(
            Pin(
                name=name,
                kind=kind,
                spec=spec,
                source=source,
                revision=entry.get("revision"),
                commit=commit,
                files=tuple(_file(f, where) for f in files),
            )
        )
    registry = data.get("registry")
    if registry is not None:
        from modelcache.errors import ConfigError
        from modelcache.settings import parse_oci_reference

        try:
            ref = parse_oci_reference(str(registry), where="registry")
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        if ref.digest is None:
            raise ValueError(
                f"registry = {registry!r} names a tag; a lockfile pins bytes, so it names the artifact by digest "
                "(oci://HOST/REPO@sha256:…, as `modelcache push` prints it)"
            )
    return Lockfile(plan, tuple(pins), registry)


def _text(table: dict, key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: '{key}' is missing or not a string")
    return value


def _file(entry: object, where: str) -> PinnedFile:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ValueError(f"{where}: every file needs a 'path'")
    path, size = entry["path"], entry.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValueError(f"{where}: {path}: 'size' must be a whole number of bytes")
    sha256, git = entry.get("sha256"), entry.get("git")
    if sha256 is not None and not _HEX[64].match(str(sha256)):
        raise ValueError(f"{where}: {path}: 'sha256' is not 64 hexadecimal characters")
    if git is not None and not _HEX[40].match(str(git)):
        raise ValueError(f"{where}: {path}: 'git' is not 40 hexadecimal characters")
    if sha256 is None and git is None:
        raise ValueError(f"{where}: {path}: a file is pinned by 'sha256' or 'git'")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{where}: {path!r} is not a relative path")
    return PinnedFile(path, size, sha256, git)


def render(lockfile: Lockfile) -> str:
    """The text of a lockfile: fixed order, one line per file."""
    lines = [HEADER, f"version = {LOCKFILE_VERSION}", f"plan = {_q(lockfile.plan)}"]
    if lockfile.registry:
        lines.append(f"registry = {_q(lockfile.registry)}")
    for pin in sorted(lockfile.pins, key=lambda p: p.name):
        lines += ["", "[[artifact]]"]
        for key in ("name", "kind", "spec", "source", "revision", "commit"):
            value = getattr(pin, key)
            if value is not None:
                lines.append(f"{key} = {_q(value)}")
        lines.append("files = [")
        for f in sorted(pin.files, key=lambda f: f.path):
            fields = [f"path = {_q(f.path)}"]
            if f.size is not None:
                fields.append(f"size = {f.size}")
            fields += [f"{k} = {_q(v)}" for k, v in (("sha256", f.sha256), ("git", f.git)) if v is not None]
            lines.append("  { " + ", ".join(fields) + " },")
        lines.append("]")
    return "\n".join(lines) + "\n"


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_lockfile(path: Path, lockfile: Lockfile) -> None:
    atomic_write_text(path, render(lockfile))


def configured(settings: Settings) -> Lockfile | None:
    """The lockfile MODELCACHE_LOCKFILE names (None: none configured, or an empty file)."""
    return read_lockfile(settings.lockfile) if settings.lockfile is not None else None
