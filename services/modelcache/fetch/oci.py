"""Models through any OCI registry: `push` a complete volume as a CNCF ModelPack artifact,
`fetch --from` (MODELCACHE_FROM) fills a volume from it alone, with no Hub request.

The artifact (docs/volume-layout.md#oci-artifacts):

- an OCI image manifest with ``artifactType`` ``application/vnd.cncf.model.manifest.v1+json``;
- a ModelPack config blob (``descriptor``, ``config``, ``modelfs.diffIds``);
- one uncompressed layer per file the lock names, in path order, its bytes the file's
  bytes (so the layer digest is the lock's sha256) and its path relative to the volume
  root in the ``org.cncf.model.filepath`` annotation;
- the volume's lock itself, as a layer of type ``application/vnd.modelcache.lock.v1+json``
  at ``.modelcache/lock.json``.

No timestamps and a fixed order: the same volume always gives the same manifest digest.

A fetch resolves the manifest once (a tag to a digest), checks that the lock layer and the
file layers agree, then brings every missing file through the same verified, resumable
transfer as a Hub fetch, into the same places (blobs, snapshot links, refs), and writes the
lock layer's bytes last: the volume is byte-identical to a Hub fetch of the same models.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from modelcache import signatures
from modelcache.bundle import Member, check_against, members
from modelcache.errors import ConfigError, NetworkError, VerificationError
from modelcache.fetch.execute import FetchResult, check_disk, ensure_writable, leftovers, run_jobs, sweep
from modelcache.fetch.jobs import ArtifactState, Job, Progress
from modelcache.fetch.policy import Policy
from modelcache.fetch.registry import OCI_MANIFEST, Manifest, Registry
from modelcache.fetch.registry import client as registry_client
from modelcache.fetch.transfer import Expected, Segmenting, download, publish
from modelcache.hashing import sha256_file
from modelcache.layout import Layout, atomic_write_text, link_snapshot_file
from modelcache.models_lock import configured
from modelcache.plan import Plan, build_plan
from modelcache.progress import Reporter, human_bytes
from modelcache.settings import OciReference, Settings
from modelcache.verify import verify, verify_lock
from modelcache.volume_lock import Lock, LockedFile, parse_lock, read_lock
from modelcache.writer_lock import VolumeLock

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_TYPE = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_TYPE = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_TYPE = "application/vnd.cncf.model.doc.v1.raw"
LOCK_TYPE = "application/vnd.modelcache.lock.v1+json"
SIGNATURE_TYPE = "application/vnd.modelcache.signature.v1+json"  # a site signature (`modelcache sign`)
FILEPATH = "org.cncf.model.filepath"
MODELS_ANNOTATION = "io.modelcache.models"
FILE_TYPES = (WEIGHT_TYPE, WEIGHT_CONFIG_TYPE, DOC_TYPE)
MAX_LOCK_BYTES = 64 * 1024 * 1024
MAX_SIGNATURE_BYTES = 16 * 1024 * 1024
USER_AGENT = "modelcache/0.1"

_CONFIG_SUFFIXES = {".json", ".txt", ".model", ".yaml", ".yml", ".tiktoken", ".vocab", ".jinja", ".py"}
_NOT_OURS = "the artifact was not made by `modelcache push`, or was changed since: push it again from a complete volume"


def media_type(path: str) -> str:
    """The ModelPack layer type of a file: documentation, weight configuration, or weights."""
    name = PurePosixPath(path).name.lower()
    if name.endswith(".md") or name.startswith(("readme", "license", "licence", "notice", "copying")):
        return DOC_TYPE
    if PurePosixPath(name).suffix in _CONFIG_SUFFIXES:
        return WEIGHT_CONFIG_TYPE
    return WEIGHT_TYPE


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    path: str  # relative to the volume root
    source: Path | None = None  # a file of the volume, or
    data: bytes | None = None  # bytes made here (config, lock)

    def descriptor(self) -> dict:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": {FILEPATH: self.path},
        }


@dataclass(frozen=True)
class Built:
    manifest: bytes
    digest: str
    config: Blob
    layers: tuple[Blob, ...]


def build(layout: Layout, lock: Lock, lock_bytes: bytes) -> Built:
    """The artifact of a volume: deterministic, from the lock and the site signatures (no
    model file is read)."""
    layers = [
        Blob("sha256:" + f.sha256, f.size, media_type(f.path), f.path, source=layout.abs(f.path)) for f in lock.files
    ]
    layers.append(Blob(_digest(lock_bytes), len(lock_bytes), LOCK_TYPE, layout.rel(layout.lock_file), data=lock_bytes))
    for artifact in lock.artifacts:
        path = signatures.site_signature(layout, artifact.name)
        if path.is_file():
            data = path.read_bytes()
            layers.append(Blob(_digest(data), len(data), SIGNATURE_TYPE, layout.rel(path), data=data))
    layers.sort(key=lambda b: b.path)
    models = [
        {
            "name": a.name,
            "kind": a.kind,
            "role": a.role,
            "source": a.source,
            "revision": a.revision,
            "commit": a.commit,
        }
        for a in lock.artifacts
    ]
    single = lock.artifacts[0] if len(lock.artifacts) == 1 else None
    descriptor: dict[str, object] = {
        "name": single.source if single else "modelcache volume",
        "description": f"{len(models)} model(s): "
        + ", ".join(f"{a.source}@{a.commit}" if a.commit else a.source for a in lock.artifacts),
    }
    if single and single.commit:
        descriptor["revision"] = single.commit
    config_bytes = _json(
        {"descriptor": descriptor, "config": {}, "modelfs": {"type": "layers", "diffIds": [b.digest for b in layers]}}
    )
    config = Blob(_digest(config_bytes), len(config_bytes), CONFIG_TYPE, "", data=config_bytes)
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
            "layers": [b.descriptor() for b in layers],
            "annotations": {MODELS_ANNOTATION: json.dumps(models, sort_keys=True, separators=(",", ":"))},
        }
    )
    return Built(manifest, _digest(manifest), config, tuple(layers))


# --- push -----------------------------------------------------------------------------------


@dataclass
class PushResult:
    reference: str
    digest: str
    bytes_sent: int = 0
    bytes_skipped: int = 0
    blobs: int = 0
    blobs_sent: int = 0
    blobs_mounted: int = 0  # linked from another repository of the registry (--mount-from)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "bytes_sent": self.bytes_sent,
            "bytes_skipped": self.bytes_skipped,
            "blobs": self.blobs,
            "blobs_sent": self.blobs_sent,
            "blobs_mounted": self.blobs_mounted,
            "seconds": round(self.seconds, 3),
        }


def select(layout: Layout, plan: Plan, settings: Settings, models: tuple[str, ...]) -> tuple[Lock, bytes]:
    """The lock to publish, and its bytes, after checking the volume holds it intact (fast check)."""
    lock = read_lock(layout)
    if lock is None:
        raise VerificationError(
            f"no lock in {layout.root}: the volume is not complete, there is nothing to push",
            remedy="run `modelcache fetch` first",
        )
    if not models:
        report = verify(layout, plan, lock=lock, workers=settings.workers, lockfile=configured(settings))
        if not report.ok:
            raise VerificationError(
                f"the volume at {layout.root} does not verify against its lock and the configuration; nothing was pushed",
                details=[p.line() for p in report.problems],
                remedy="run `modelcache fetch` (or `fetch --deep`) to complete and repair it, then push again",
            )
        return lock, layout.lock_file.read_bytes()
    chosen = [a for a in lock.artifacts if a.name in models or a.source in models]
    unknown = [m for m in models if not any(m in (a.name, a.source) for a in chosen)]
    if unknown:
        raise ConfigError(
            f"--model names {len(unknown)} model(s) the volume's lock does not hold: {', '.join(unknown)}",
            details=[f"{a.name} ({a.source})" for a in lock.artifacts],
            remedy="name models as `modelcache ls` lists them (the first column, or the repo id)",
        )
    specs = {a.spec for a in chosen}
    subplan = Plan(tuple(a for a in plan.artifacts if a.spec in specs))
    if len(subplan.artifacts) != len(chosen):
        raise ConfigError(
            "a model named by --model was fetched with other settings than the configuration has now",
            remedy="run `modelcache fetch` so that the volume matches the configuration, then push again",
        )
    sub = replace(lock, artifacts=tuple(chosen), plan_digest=subplan.digest)
    report = verify_lock(layout, sub, workers=settings.workers)
    if not report.ok:
        raise VerificationError(
            f"the volume at {layout.root} does not verify against its lock; nothing was pushed",
            details=[p.line() for p in report.problems],
            remedy="run `modelcache fetch` (or `fetch --deep`) to repair it, then push again",
        )
    return sub, sub.to_json().encode()


def push(
    settings: Settings,
    ref: OciReference,
    *,
    models: tuple[str, ...] = (),
    mount_from: tuple[str, ...] = (),
    reporter: Reporter,
    env=None,
) -> PushResult:
    started = time.monotonic()
    layout = Layout(settings.models_dir.absolute())
    lock, lock_bytes = select(layout, build_plan(settings), settings, models)
    built = build(layout, lock, lock_bytes)
    assert ref.tag is not None
    result = PushResult(reference=str(ref), digest=built.digest)
    policy = Policy(
        retries=settings.retries,
        stall_timeout=settings.stall_timeout,
        deadline=time.monotonic() + settings.fetch_timeout,
        notify=reporter.note,
    )
    blobs: dict[str, Blob] = {}
    for blob in (built.config, *built.layers):
        blobs.setdefault(blob.digest, blob)
    result.blobs = len(blobs)
    with registry_client(settings, USER_AGENT) as client:
        registry = Registry(client, ref, policy, insecure=settings.insecure_registries, push=True, env=env)
        task = reporter.start(str(ref), sum(b.size for b in blobs.values()))
        try:
            for blob in blobs.values():
                if registry.has_blob(blob.digest) is not None:
                    result.bytes_skipped += blob.size
                elif any(registry.mount(blob.digest, source) for source in mount_from):
                    result.bytes_skipped += blob.size
                    result.blobs_mounted += 1
                else:
                    registry.upload(blob.digest, blob.size, path=blob.source, data=blob.data)
                    result.bytes_sent += blob.size
                    result.blobs_sent += 1
                reporter.advance(task, blob.size)
            reporter.finish(task, transferred=result.bytes_sent, verb="pushed")
        finally:
            reporter.close()
        registry.put_manifest(ref.tag, built.manifest)
    result.seconds = time.monotonic() - started
    return result


# --- push --image: the volume as a container image, for image volumes and modelcars -------

IMAGE_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
IMAGE_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class _HashingWriter:
    def __init__(self, fh) -> None:
        self.fh, self.hash, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.fh.write(data)


def push_image(
    settings: Settings, ref: OciReference, *, models: tuple[str, ...] = (), reporter: Reporter, env=None
) -> PushResult:
    """Publish the volume as an OCI image with one uncompressed tar layer holding the volume's
    tree (lock included): what Kubernetes image volumes and KServe modelcars mount. The layer
    is the deterministic tar of `export` (fixed order, no timestamps), written to a temporary
    file first (TMPDIR needs the volume's size free); the same volume gives the same digest."""
    import platform
    import tempfile

    from modelcache.bundle import write_tree
    from modelcache.errors import DiskFullError

    started = time.monotonic()
    layout = Layout(settings.models_dir.absolute())
    lock, lock_bytes = select(layout, build_plan(settings), settings, models)
    assert ref.tag is not None
    with tempfile.TemporaryDirectory(prefix="modelcache-image-") as tmp:
        need = sum(f.size for f in lock.files) + len(lock_bytes) + 1536 * (len(lock.files) * 2 + 8)
        free = shutil.disk_usage(tmp).free
        if need > free:
            raise DiskFullError(
                f"{tmp} has {human_bytes(free)} free but the image layer needs {human_bytes(need)}; nothing was pushed",
                remedy="point TMPDIR at a filesystem with room for one copy of the volume",
            )
        layer = Path(tmp) / "layer.tar"
        with open(layer, "wb") as fh:
            writer = _HashingWriter(fh)
            write_tree(writer, layout, lock, lock_bytes, reporter=reporter)  # type: ignore[arg-type]
        layer_digest, layer_size = "sha256:" + writer.hash.hexdigest(), writer.size
        models_json = json.loads(build(layout, lock, lock_bytes).manifest)["annotations"][MODELS_ANNOTATION]
        config = _json(
            {
                "architecture": _ARCH.get(platform.machine().lower(), platform.machine().lower()),
                "os": "linux",
                "config": {"Labels": {MODELS_ANNOTATION: models_json}},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        )
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": IMAGE_CONFIG_TYPE, "digest": _digest(config), "size": len(config)},
                "layers": [{"mediaType": IMAGE_LAYER_TYPE, "digest": layer_digest, "size": layer_size}],
                "annotations": {MODELS_ANNOTATION: models_json},
            }
        )
        result = PushResult(reference=str(ref), digest=_digest(manifest), blobs=2)
        policy = Policy(
            retries=settings.retries,
            stall_timeout=settings.stall_timeout,
            deadline=time.monotonic() + settings.fetch_timeout,
            notify=reporter.note,
        )
        with registry_client(settings, USER_AGENT) as client:
            registry = Registry(client, ref, policy, insecure=settings.insecure_registries, push=True, env=env)
            for digest, size, path, data in (
                (layer_digest, layer_size, layer, None),
                (_digest(config), len(config), None, config),
            ):
                if registry.has_blob(digest) is not None:
                    result.bytes_skipped += size
                else:
                    registry.upload(digest, size, path=path, data=data)
                    result.bytes_sent += size
                    result.blobs_sent += 1
            registry.put_manifest(ref.tag, manifest)
    reporter.close()
    result.seconds = time.monotonic() - started
    return result


# --- fetch --from ---------------------------------------------------------------------------


@dataclass
class Pulled:
    """A resolved artifact: its manifest, the lock its lock layer holds, and the file layers."""

    manifest: Manifest
    lock_layer: dict
    files: dict[str, dict] = field(default_factory=dict)  # filepath -> descriptor
    signatures: dict[str, dict] = field(default_factory=dict)  # filepath -> site signature descriptor


def read_manifest(ref: OciReference, manifest: Manifest) -> Pulled:
    data = manifest.data
    kind = data.get("artifactType") or (data.get("config") or {}).get("mediaType")
    if data.get("mediaType", OCI_MANIFEST) != OCI_MANIFEST or kind != ARTIFACT_TYPE:
        what = kind or data.get("mediaType") or "no artifactType"
        raise ConfigError(
            f"{ref} is not a model artifact: its manifest is of type {what!r}, not {ARTIFACT_TYPE!r}",
            remedy="point MODELCACHE_FROM / --from at an artifact made by `modelcache push` (a container image "
            "or another artifact cannot fill the volume)",
        )
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise VerificationError(f"{ref}: the manifest has no layers list", remedy=_NOT_OURS)
    locks = [d for d in layers if isinstance(d, dict) and d.get("mediaType") == LOCK_TYPE]
    if len(locks) != 1:
        raise ConfigError(
            f"{ref} is a model artifact but has {len(locks)} modelcache lock layer(s) ({LOCK_TYPE}), not one",
            remedy="modelcache fills a volume only from artifacts made by `modelcache push`: push one from a "
            "complete volume",
        )
    pulled = Pulled(manifest, locks[0])
    for d in layers:
        if d is locks[0]:
            continue
        path = ((d.get("annotations") or {}) if isinstance(d, dict) else {}).get(FILEPATH)
        if isinstance(d, dict) and d.get("mediaType") == SIGNATURE_TYPE:
            if not isinstance(path, str) or path in pulled.signatures:
                raise VerificationError(f"{ref}: a signature layer has the path {path!r}", remedy=_NOT_OURS)
            pulled.signatures[path] = d
            continue
        if not isinstance(path, str) or path in pulled.files:
            raise VerificationError(
                f"{ref}: a layer has {'no' if not isinstance(path, str) else 'a repeated'} {FILEPATH} annotation "
                f"({path!r})",
                remedy=_NOT_OURS,
            )
        pulled.files[path] = d
    return pulled


def check_layers(ref: OciReference, pulled: Pulled, lock: Lock) -> None:
    """The lock layer and the file layers must name the same files, sizes and digests."""
    details: list[str] = []
    named = set()
    for f in lock.files:
        named.add(f.path)
        _safe_path(ref, f.path)
        if f.blob:
            _safe_path(ref, f.blob)
        d = pulled.files.get(f.path)
        if d is None:
            details.append(f"{f.path}: in the lock, no layer")
        elif d.get("digest") != "sha256:" + f.sha256 or d.get("size") != f.size:
            details.append(
                f"{f.path}: the lock says sha256:{f.sha256[:12]}… ({f.size} bytes), the layer "
                f"{str(d.get('digest'))[:19]}… ({d.get('size')} bytes)"
            )
        elif d.get("mediaType") not in FILE_TYPES:
            details.append(f"{f.path}: layer of type {d.get('mediaType')!r}")
    details += [f"{p}: a layer, not in the lock" for p in sorted(set(pulled.files) - named)]
    if details:
        raise VerificationError(
            f"{ref}: its lock layer disagrees with its file layers ({len(details)} difference(s)); nothing was fetched",
            details=details[:20] + ([f"… and {len(details) - 20} more"] if len(details) > 20 else []),
            remedy=_NOT_OURS,
        )


def _check_config(ref: OciReference, plan: Plan, pins, lock: Lock) -> None:
    try:
        check_against(plan, pins, lock)
    except VerificationError as exc:
        raise VerificationError(
            f"{ref} does not hold what this configuration asks for; nothing was fetched",
            details=exc.details,
            remedy="fetch with the .env (and lockfile) of the host that pushed it, or push the models this host needs",
        ) from None


def _safe_path(ref: OciReference, path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] == ".modelcache"
    ):
        raise VerificationError(f"{ref}: its lock names {path!r}, a path outside the volume's files", remedy=_NOT_OURS)


def run_from_registry(settings: Settings, *, deep: bool, reporter: Reporter, started: float):
    """The whole of `fetch --from`: resolve, check, transfer what is missing, write the lock last."""
    ref = settings.from_ref
    assert ref is not None
    layout = Layout(settings.models_dir)
    plan = build_plan(settings)
    pins = configured(settings)
    ensure_writable(layout)
    deep = deep or settings.verify == "deep"
    policy = Policy(
        retries=settings.retries,
        stall_timeout=settings.stall_timeout,
        deadline=time.monotonic() + settings.fetch_timeout,
        notify=reporter.note,
    )

    def warm(pulled: Pulled) -> Lock | None:
        try:
            raw = layout.lock_file.read_bytes()
        except OSError:
            return None
        if _digest(raw) != pulled.lock_layer.get("digest"):
            return None
        lock = read_lock(layout)
        if lock is None:
            return None
        check_layers(ref, pulled, lock)
        _check_config(ref, plan, pins, lock)
        own = {layout.rel(signatures.site_signature(layout, a.name)) for a in lock.artifacts}
        for path, d in pulled.signatures.items():  # a signature added since: not warm, it must come
            try:
                if path not in own or _digest(layout.abs(path).read_bytes()) != d.get("digest"):
                    return None
            except OSError:
                return None
        return lock if verify_lock(layout, lock, deep=deep, workers=settings.workers).ok else None

    def result(lock: Lock, pulled: Pulled, *, is_warm: bool, files: int = 0, transferred: int = 0) -> FetchResult:
        total = sum(a.size for a in lock.artifacts)
        return FetchResult(
            lock=lock,
            warm=is_warm,
            seconds=time.monotonic() - started,
            files_fetched=files,
            bytes_transferred=transferred,
            bytes_total=total,
            source=str(ref),
            manifest_digest=pulled.manifest.digest,
        )

    with registry_client(settings, USER_AGENT) as client:
        registry = Registry(client, ref, policy, insecure=settings.insecure_registries)
        pulled = read_manifest(ref, registry.get_manifest())
        reporter.note(f"{ref} is {pulled.manifest.digest}")
        lock = warm(pulled)
        if lock is not None:
            if leftovers(layout):
                with VolumeLock(layout, 0, reporter, quiet=True) as held:
                    if held:
                        sweep(layout, reporter)
            signatures.enforce(layout, lock, settings.trust, reporter.note, memo=not deep)
            reporter.note(
                f"volume complete: {len(lock.artifacts)} artifact(s), {human_bytes(lock_size(lock))}; "
                f"it matches {ref}, nothing to fetch"
            )
            return result(lock, pulled, is_warm=True)
        with VolumeLock(layout, settings.lock_timeout, reporter):
            lock = warm(pulled)
            if lock is not None:
                sweep(layout, reporter)
                signatures.enforce(layout, lock, settings.trust, reporter.note, memo=not deep)
                return result(lock, pulled, is_warm=True)
            size = pulled.lock_layer.get("size")
            if not isinstance(size, int) or not 0 < size <= MAX_LOCK_BYTES:
                raise VerificationError(f"{ref}: the lock layer's size {size!r} is not acceptable", remedy=_NOT_OURS)
            raw = registry.get_small_blob(str(pulled.lock_layer.get("digest")), size, what=f"{ref}: its lock layer")
            try:
                lock = parse_lock(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                raise VerificationError(
                    f"{ref}: its lock layer is not a modelcache lock ({exc.__class__.__name__}: {exc})",
                    remedy=_NOT_OURS,
                ) from None
            check_layers(ref, pulled, lock)
            _check_config(ref, plan, pins, lock)
            received = _receive_signatures(registry, ref, pulled, lock, layout, settings)
            # before any weight is transferred: the signed digests against the lock layer's
            signatures.enforce(layout, lock, settings.trust, reporter.note, extra=received)
            items = members(layout, lock)
            jobs = _jobs(
                layout, registry, ref, items, deep, policy, Segmenting(settings.segments, settings.segment_min_bytes)
            )
            _check_missing_blobs(registry, ref, [job for _, job in jobs], settings.workers)
            check_disk(layout, [job for _, job in jobs])
            transferred = run_jobs(jobs, settings.workers, reporter, policy.cancel)
            _finish(layout, items)
            report = verify_lock(layout, lock, workers=settings.workers)
            if not report.ok:
                raise VerificationError(
                    f"after the fetch from {ref} the volume does not verify; the lock was not written",
                    details=[p.line() for p in report.problems],
                )
            for name, found in received.items():  # the site signatures, to be pushed on from here
                for sig in found:
                    if sig.path.name.endswith(".site.sig"):
                        target = signatures.site_signature(layout, name)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_text(target, sig.path.read_text(encoding="utf-8"))
            atomic_write_text(layout.lock_file, raw.decode("utf-8"))  # last: now the volume is complete
            sweep(layout, reporter)
    reporter.note(
        f"volume complete from {ref} ({pulled.manifest.digest}): {len(lock.artifacts)} artifact(s), "
        f"{human_bytes(lock_size(lock))}; fetched {len(jobs)} file(s), {human_bytes(transferred)} transferred; "
        "lock written"
    )
    return result(lock, pulled, is_warm=False, files=len(jobs), transferred=transferred)


def _receive_signatures(
    registry: Registry, ref: OciReference, pulled: Pulled, lock: Lock, layout: Layout, settings: Settings
) -> dict[str, list[signatures.Found]]:
    """The artifact's signatures, read whole into partial/ (small, each checked against its digest):
    site signatures always (the volume keeps them), the repos' model.sig files when a trust
    policy will check them."""
    names = {layout.rel(signatures.site_signature(layout, a.name)): a.name for a in lock.artifacts}
    unknown = sorted(set(pulled.signatures) - set(names))
    if unknown:
        raise VerificationError(
            f"{ref}: signature layers for models its lock does not hold: {', '.join(unknown)}", remedy=_NOT_OURS
        )
    wanted: list[tuple[str, str, dict]] = [(names[p], "site", d) for p, d in pulled.signatures.items()]
    if settings.trust.configured:
        for artifact in lock.artifacts:
            repo_sig = signatures.model_files(layout, artifact).files.get(signatures.REPO_SIGNATURE)
            if repo_sig is not None:
                wanted.append((artifact.name, "repo", pulled.files[repo_sig.path]))
    found: dict[str, list[signatures.Found]] = {}
    layout.partial.mkdir(parents=True, exist_ok=True)
    for name, kind, d in wanted:
        size, digest = d.get("size"), str(d.get("digest"))
        if not isinstance(size, int) or not 0 < size <= MAX_SIGNATURE_BYTES:
            raise VerificationError(f"{ref}: the signature layer of {name} has size {size!r}", remedy=_NOT_OURS)
        data = registry.get_small_blob(digest, size, what=f"{ref}: the {kind} signature of {name}")
        path = layout.partial / f"{digest.removeprefix('sha256:')}.{kind}.sig"
        path.write_bytes(data)
        label = f"the site signature in {ref}" if kind == "site" else f"the repo's {signatures.REPO_SIGNATURE} in {ref}"
        found.setdefault(name, []).append(signatures.Found(label, path))
    return found


def lock_size(lock: Lock) -> int:
    return sum(a.size for a in lock.artifacts)


def _present(layout: Layout, member: Member, deep: bool) -> bool:
    path = layout.abs(member.path)
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != member.size:
            return False
    except OSError:
        return False
    return not deep or sha256_file(path) == member.sha256


def _jobs(
    layout: Layout,
    registry: Registry,
    ref: OciReference,
    items: list[Member],
    deep: bool,
    policy: Policy,
    segmenting: Segmenting,
) -> list[tuple[ArtifactState, Job]]:
    """One transfer per missing blob (a digest held at several paths is fetched once)."""
    wanted: dict[str, list[Member]] = {}
    for m in items:
        if m.kind == "file" and m.sha256 is not None and not _present(layout, m, deep):
            wanted.setdefault(m.sha256, []).append(m)
    state = ArtifactState(artifact=None, commit=None)  # type: ignore[arg-type]  # entries unused: the lock is the layer
    jobs = []
    for sha256, targets in wanted.items():
        first = targets[0]
        expected = Expected(
            size=first.size,
            sha256=sha256,
            pin=f"the manifest of {ref}",
            fix="the registry serves other bytes than the digest it lists (its storage is damaged): push the volume "
            "again, or repair or replace the registry",
        )
        jobs.append(
            (
                state,
                Job(
                    first.path,
                    first.size,
                    layout.partial / f"{sha256}.part",
                    _runner(layout, registry, ref, expected, targets, policy, segmenting),
                ),
            )
        )
    return jobs


def _runner(
    layout: Layout,
    registry: Registry,
    ref: OciReference,
    expected: Expected,
    targets: list[Member],
    policy: Policy,
    segmenting: Segmenting,
) -> Callable[[Progress], tuple[LockedFile, int]]:
    sha256 = expected.sha256 or ""
    part = layout.partial / f"{sha256}.part"

    def fetch_blob(progress: Progress):
        for renewed in (False, True):
            headers = registry.auth_headers()
            try:
                return download(
                    registry.client,
                    registry.blob_url("sha256:" + sha256),
                    part,
                    expected,
                    policy,
                    label=targets[0].path,
                    headers=headers,
                    progress=progress,
                    segmenting=segmenting,
                )
            except ConfigError as exc:  # a token that expired during a long fetch: renew once, resume
                if renewed or "HTTP 401" not in exc.message or not registry.renew(headers, "sha256:" + sha256):
                    raise
                policy.notify(f"{targets[0].path}: the registry's token expired; renewed, resuming")
        raise AssertionError("unreachable")

    def run(progress: Progress) -> tuple[LockedFile, int]:
        try:
            got = fetch_blob(progress)
        except NetworkError as exc:
            if "HTTP 404" not in exc.message:
                raise
            raise _missing_blob(ref, [f"sha256:{sha256} ({targets[0].path})"]) from None
        except ConfigError as exc:  # 401/403 on the blob: the registry's credentials, not the Hub's token
            if "HTTP 401" not in exc.message and "HTTP 403" not in exc.message:
                raise
            raise ConfigError(
                f"{ref}: the registry refused blob sha256:{sha256[:12]}… ({targets[0].path}) after serving the "
                f"manifest ({exc.message.split(': ')[1]}); what arrived is kept for the next run",
                remedy=f"check the account's pull right on {ref.repository} (`docker login {ref.host}`)",
            ) from None
        first = layout.abs(targets[0].path)
        for extra in targets[1:]:  # the same bytes elsewhere: a verified copy
            copy = layout.partial / f"{sha256}.copy"
            shutil.copyfile(part, copy)
            publish(copy, layout.abs(extra.path))
        publish(part, first)
        return LockedFile(targets[0].path, got.size, got.sha256), got.transferred

    return run


def _missing_blob(ref: OciReference, which: list[str]) -> VerificationError:
    return VerificationError(
        f"{ref}: the registry lacks {len(which)} blob(s) the manifest names; nothing was fetched",
        details=which[:20],
        remedy=f"the artifact is incomplete in the registry: push it again (`modelcache push {ref}`) from a "
        "complete volume",
    )


def _check_missing_blobs(registry: Registry, ref: OciReference, jobs: list[Job], workers: int) -> None:
    """HEAD every blob to fetch before fetching any (``workers`` at a time): an incomplete
    artifact fails at once."""
    from concurrent.futures import ThreadPoolExecutor

    def check(job: Job) -> str | None:
        assert job.partial is not None
        digest = "sha256:" + job.partial.name.removesuffix(".part")
        return None if registry.has_blob(digest) is not None else f"{digest} ({job.label})"

    if not jobs:
        return
    first = check(jobs[0])  # alone: a registry that wants a token gets asked for it once
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        missing = [m for m in (first, *pool.map(check, jobs[1:])) if m is not None]
    if missing:
        raise _missing_blob(ref, missing)


def _finish(layout: Layout, items: list[Member]) -> None:
    """Snapshot links and refs, as the Hub fetch makes them."""
    for m in items:
        if m.kind == "link":
            blob = layout.abs(posixpath.normpath(posixpath.join(posixpath.dirname(m.path), m.target or "")))
            link_snapshot_file(blob, layout.abs(m.path))
        elif m.content is not None:
            path = layout.abs(m.path)
            if not (path.is_file() and not path.is_symlink() and path.read_bytes() == m.content):
                atomic_write_text(path, m.content.decode())
