"""Air-gapped installs: ``export`` a complete volume to one bundle file, ``import`` it into
another volume with every byte checked before it becomes visible.

A bundle is a plain POSIX (pax) tar that ``tar -t`` lists and ``tar -x`` unpacks into the
volume's own layout. Its first member, ``modelcache-bundle.json``, is the volume's lock:
it says what every other member must be. Then, in path order, every file the lock names
(Hub blobs, the snapshot links pointing at them, the refs; whisper checkpoints and plain
files). Deterministic: the same volume gives a byte-identical bundle (fixed order, mtime
0, owner 0, fixed modes), so bundles can be compared and signed.

Import reads the bundle as a stream, refuses anything the lock does not name (extra or
missing members, absolute or ``..`` paths, links that point elsewhere), writes each file
under ``.modelcache/partial/``, hashes it against the lock, and only then renames it into
place; files already present (and of the right size; hashed with ``--deep``) are skipped,
so an interrupted import resumes. The volume's lock is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from modelcache.errors import ConfigError, DiskFullError, VerificationError
from modelcache.layout import Layout, link_snapshot_file
from modelcache.models_lock import Lockfile
from modelcache.plan import Plan
from modelcache.progress import Reporter, human_bytes
from modelcache.verify import check_file, verify, wanted_artifacts
from modelcache.volume_lock import Lock, parse_lock, write_lock

BUNDLE_LOCK = "modelcache-bundle.json"
BUNDLE_FORMAT = "modelcache-bundle"
BUNDLE_VERSION = 1
CHUNK = 4 * 1024 * 1024
MAX_LOCK_BYTES = 64 * 1024 * 1024
BAD_BUNDLE = "the bundle is damaged or was not made by `modelcache export`: make it again from a complete volume"


@dataclass(frozen=True)
class Member:
    """One thing a bundle holds, as the lock says it must be."""

    path: str  # relative to the volume root, posix
    kind: str  # "file" or "link"
    size: int = 0
    sha256: str | None = None  # files: their content; None for refs (checked against the commit)
    content: bytes | None = None  # refs: exactly these bytes
    target: str | None = None  # links: the relative target


@dataclass
class Transfer:
    files: int = 0
    bytes: int = 0  # bytes through the bundle (written for export, read for import)
    skipped: int = 0  # import: files already in place
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def members(layout: Layout, lock: Lock) -> list[Member]:
    """Every member of the bundle for ``lock``, in bundle order (the lock member excluded)."""
    out: dict[str, Member] = {}
    for artifact in lock.artifacts:
        for f in artifact.files:
            if f.blob:  # a Hub file: the blob, and the snapshot path as a relative link to it
                out[f.blob] = Member(f.blob, "file", f.size, f.sha256)
                target = posixpath.relpath(f.blob, posixpath.dirname(f.path))
                out[f.path] = Member(f.path, "link", target=target)
            else:
                out[f.path] = Member(f.path, "file", f.size, f.sha256)
        if (
            artifact.kind in ("hf", "mlx")
            and artifact.revision
            and artifact.commit
            and artifact.revision != artifact.commit
        ):
            ref = layout.rel(layout.ref(artifact.source, artifact.revision))
            out[ref] = Member(ref, "file", len(artifact.commit), content=artifact.commit.encode())
    return [out[p] for p in sorted(out)]


def _tarinfo(name: str, kind: str = "file", size: int = 0, target: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if kind == "link":
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target or "", 0o777
    else:
        info.type, info.size, info.mode = tarfile.REGTYPE, size, 0o644
    return info


class _Hashing:
    """A file object that hashes what is read through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.hash, self.count = fh, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        block = self.fh.read(n)
        self.hash.update(block)
        self.count += len(block)
        return block


# --- export ---------------------------------------------------------------------------------


def write_tree(fh: IO[bytes], layout: Layout, lock: Lock, lock_bytes: bytes, *, reporter: Reporter) -> Transfer:
    """The volume as a plain file tree (a container image layer): what the lock names, links
    as links, and the lock itself at its place, every byte checked against the lock."""
    items = members(layout, lock)
    total = sum(m.size for m in items) + len(lock_bytes)
    return _write(
        fh,
        layout,
        items,
        lock_bytes,
        total,
        reporter,
        time.monotonic(),
        stream=True,
        header_name=layout.rel(layout.lock_file),
        label="image layer",
    )


def export(layout: Layout, lock: Lock, target: str, *, reporter: Reporter) -> Transfer:
    """Write the bundle of a complete volume to ``target`` (a path, or ``-`` for stdout)."""
    started = time.monotonic()
    items = members(layout, lock)
    problems = [p.line() for f in lock.files if (p := check_file(layout, f, deep=False)) is not None]
    if problems:
        raise VerificationError(
            f"the volume at {layout.root} is not complete; a bundle of it would not install",
            details=problems,
            remedy="run `modelcache fetch` (or `fetch --deep`) on it first",
        )
    header = (
        json.dumps(
            {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "lock": json.loads(lock.to_json())},
            indent=2,
            sort_keys=True,
        ).encode()
        + b"\n"
    )
    total = sum(m.size for m in items) + len(header)
    estimate = total + 1536 * (len(items) + 1) + 20 * 512  # headers (pax for long names) and the end blocks
    if target == "-":
        return _write(sys.stdout.buffer, layout, items, header, total, reporter, started, stream=True)
    out = Path(target)
    if out.is_dir():
        raise ConfigError(f"{out} is a directory", remedy=f"name a file, e.g. {out / 'models.tar'}")
    free = shutil.disk_usage(out.parent if str(out.parent) else Path(".")).free
    if estimate > free:
        raise DiskFullError(
            f"{out.parent} has {human_bytes(free)} free but the bundle needs {human_bytes(estimate)}; nothing was written",
            remedy="write it somewhere with more room, or to stdout (`export -`) and on through a pipe",
        )
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "wb") as fh:
            result = _write(fh, layout, items, header, total, reporter, started, stream=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def _write(
    fh: IO[bytes],
    layout: Layout,
    items: list[Member],
    header: bytes,
    total: int,
    reporter: Reporter,
    started: float,
    *,
    stream: bool,
    header_name: str = BUNDLE_LOCK,
    label: str = "export",
) -> Transfer:
    result = Transfer()
    task = reporter.start(label, total)
    mode: Literal["w|", "w"] = "w|" if stream else "w"
    # copybufsize is a real TarFile.__init__ keyword (open() passes it on), missing from typeshed's open()
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=fh, mode=mode, format=tarfile.PAX_FORMAT, bufsize=CHUNK, copybufsize=CHUNK
    ) as tar:
        tar.addfile(_tarinfo(header_name, size=len(header)), _Bytes(header))
        reporter.advance(task, len(header))
        for m in items:
            if m.kind == "link":
                tar.addfile(_tarinfo(m.path, "link", target=m.target))
                continue
            with open(layout.abs(m.path), "rb") as src:
                reader = _Hashing(src)
                tar.addfile(_tarinfo(m.path, size=m.size), reader)
            got = reader.hash.hexdigest()
            want = m.sha256 or hashlib.sha256(m.content or b"").hexdigest()
            if reader.count != m.size or got != want:
                raise VerificationError(
                    f"{m.path} changed on disk: sha256 {got[:12]}… is not the lock's {want[:12]}…; the bundle was not kept",
                    remedy="run `modelcache fetch --deep` to repair the volume, then export again",
                )
            result.files += 1
            reporter.advance(task, m.size)
    result.bytes = total
    result.seconds = time.monotonic() - started
    return result


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        block, self.pos = self.data[self.pos : end], min(end, len(self.data))
        return block


# --- import ---------------------------------------------------------------------------------


def read_header(tar: tarfile.TarFile) -> Lock:
    first = tar.next()
    if first is None or first.name != BUNDLE_LOCK or not first.isfile() or first.size > MAX_LOCK_BYTES:
        raise VerificationError(f"the bundle does not start with {BUNDLE_LOCK}", remedy=BAD_BUNDLE)
    raw = tar.extractfile(first).read()  # type: ignore[union-attr]
    try:
        data = json.loads(raw)
        if data.get("format") != BUNDLE_FORMAT or data.get("version") != BUNDLE_VERSION:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
        return parse_lock(data["lock"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerificationError(
            f"{BUNDLE_LOCK} in the bundle is not a modelcache lock ({exc})", remedy=BAD_BUNDLE
        ) from None


def check_against(plan: Plan, lockfile: Lockfile | None, lock: Lock) -> None:
    """Refuse a bundle that is not what this configuration (and lockfile) asks for, saying why."""
    _entries, drift = wanted_artifacts(plan, lock)
    details = [p.line() for p in drift]
    if lockfile is not None and lock.lockfile != lockfile.digest:
        details.append(
            f"the bundle was filled from {'another lockfile' if lock.lockfile else 'no lockfile'} "
            f"({(lock.lockfile or '-')[:12]}), the configured lockfile is {lockfile.digest[:12]}"
        )
    if details:
        raise VerificationError(
            "the bundle does not hold what this configuration asks for; nothing was imported",
            details=details,
            remedy="import a bundle exported with the same .env (and lockfile), or change .env to match the bundle",
        )


def import_bundle(
    layout: Layout, plan: Plan, lockfile: Lockfile | None, source: str, *, deep: bool, reporter: Reporter
) -> Transfer:
    """Install a bundle into the volume (the caller holds the volume lock)."""
    started = time.monotonic()
    result = Transfer()
    tar = _open(source)
    try:
        lock = read_header(tar)
        check_against(plan, lockfile, lock)
        expected = {m.path: m for m in members(layout, lock)}
        _check_space(layout, expected.values())
        task = reporter.start("import", sum(m.size for m in expected.values()))
        seen: set[str] = set()
        for info in _entries(tar):
            name = _safe_name(info.name)
            member = expected.get(name)
            if member is None:
                raise VerificationError(
                    f"the bundle holds {info.name!r}, which its lock does not name; nothing more was imported",
                    remedy=BAD_BUNDLE,
                )
            if name in seen:
                raise VerificationError(f"the bundle holds {name} twice", remedy=BAD_BUNDLE)
            seen.add(name)
            if member.kind == "link":
                if not info.issym() or info.linkname != member.target:
                    raise VerificationError(
                        f"{name} in the bundle is {_describe(info)}, not a link to {member.target}; nothing more was imported",
                        remedy=BAD_BUNDLE,
                    )
                continue  # links are made at the end, from the lock
            if not info.isfile():
                raise VerificationError(f"{name} in the bundle is {_describe(info)}, not a file", remedy=BAD_BUNDLE)
            if info.size != member.size:
                raise VerificationError(
                    f"{name} in the bundle has {info.size} bytes, the lock says {member.size}", remedy=BAD_BUNDLE
                )
            if _present(layout, member, deep):
                result.skipped += 1
            else:
                _install(layout, tar, info, member)
                result.files += 1
                result.bytes += member.size
            reporter.advance(task, member.size)
        missing = sorted(set(expected) - seen)
        if missing:
            raise VerificationError(
                f"the bundle lacks {len(missing)} file(s) its lock names (truncated?); the volume's lock was not written",
                details=missing[:20] + ([f"… and {len(missing) - 20} more"] if len(missing) > 20 else []),
                remedy=BAD_BUNDLE,
            )
    except (tarfile.TarError, EOFError) as exc:
        raise VerificationError(
            f"the bundle cannot be read to its end ({exc}); what was imported so far is verified and kept, "
            "the volume's lock was not written",
            remedy=BAD_BUNDLE + "; a complete one resumes where this stopped",
        ) from None
    finally:
        tar.close()
    for m in expected.values():
        if m.kind == "link":
            blob = layout.abs(posixpath.normpath(posixpath.join(posixpath.dirname(m.path), m.target or "")))
            link_snapshot_file(blob, layout.abs(m.path))
    report = verify(layout, plan, lock=lock, lockfile=lockfile)
    if not report.ok:
        raise VerificationError(
            "after the import the volume does not verify", details=[p.line() for p in report.problems]
        )
    write_lock(layout, lock)  # last: now the volume is complete
    result.seconds = time.monotonic() - started
    return result


def _open(source: str) -> tarfile.TarFile:
    try:
        if source == "-":
            return tarfile.open(fileobj=sys.stdin.buffer, mode="r|", bufsize=CHUNK)
        # copybufsize: a real TarFile.__init__ keyword that typeshed's open() lacks (see _write)
        return tarfile.open(source, mode="r:", copybufsize=CHUNK)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: no such bundle file", remedy="give the path of a file made by `modelcache export`"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{source} is a directory, not a bundle", remedy="give the bundle file's path") from None
    except PermissionError:
        raise ConfigError(
            f"{source}: permission denied (the downloader runs as uid {os.getuid()})",
            remedy="make the bundle readable for others (`chmod a+r FILE`) or feed it on standard input (`import -`)",
        ) from None
    except tarfile.TarError as exc:
        raise VerificationError(f"{source} is not a tar file ({exc})", remedy=BAD_BUNDLE) from None


def _entries(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := tar.next()) is not None:
        yield info


def _safe_name(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(p == ".." for p in parts) or "\\" in name or "\0" in name:
        raise VerificationError(
            f"the bundle holds {name!r}, a path outside the volume; nothing more was imported", remedy=BAD_BUNDLE
        )
    return posixpath.normpath(name)


def _describe(info: tarfile.TarInfo) -> str:
    if info.issym():
        return f"a link to {info.linkname!r}"
    if info.islnk():
        return f"a hard link to {info.linkname!r}"
    return "a file" if info.isfile() else "a folder" if info.isdir() else "a special file"


def _present(layout: Layout, member: Member, deep: bool) -> bool:
    path = layout.abs(member.path)
    if path.is_symlink() or not path.is_file() or path.stat().st_size != member.size:
        return False
    if member.content is not None:
        return path.read_bytes() == member.content
    return not deep or hashlib.file_digest(open(path, "rb"), "sha256").hexdigest() == member.sha256


def _install(layout: Layout, tar: tarfile.TarFile, info: tarfile.TarInfo, member: Member) -> None:
    """Copy one member to partial/, hash it, and only then rename it into place."""
    layout.partial.mkdir(parents=True, exist_ok=True)
    part = layout.partial / f"import-{hashlib.sha256(member.path.encode()).hexdigest()[:32]}.part"
    src = tar.extractfile(info)
    assert src is not None
    digest, got = hashlib.sha256(), 0
    try:
        with open(part, "wb") as out:
            while block := src.read(CHUNK):
                digest.update(block)
                out.write(block)
                got += len(block)
    except OSError as exc:
        part.unlink(missing_ok=True)
        if exc.errno == 28:
            raise DiskFullError(f"the volume filled up while importing {member.path}") from None
        raise
    want = member.sha256 or hashlib.sha256(member.content or b"").hexdigest()
    if got != member.size or digest.hexdigest() != want:
        part.unlink(missing_ok=True)
        raise VerificationError(
            f"{member.path} in the bundle is damaged: sha256 {digest.hexdigest()[:12]}… ({got} bytes), the lock says "
            f"{want[:12]}… ({member.size} bytes); it was not installed, nor anything after it",
            remedy=BAD_BUNDLE,
        )
    final = layout.abs(member.path)
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(part, 0o644)
    os.replace(part, final)


def _check_space(layout: Layout, items) -> None:
    need = sum(m.size for m in items if not _present(layout, m, False))
    free = shutil.disk_usage(layout.root).free
    if need + 16 * 1024 * 1024 > free:
        raise DiskFullError(
            f"{layout.root} has {human_bytes(free)} free but the bundle needs {human_bytes(need)} more; nothing was imported",
            remedy="free space or enlarge the volume, then import again",
        )
