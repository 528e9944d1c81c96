"""The model registry: every configured model, loaded once at startup, by local path.

Load specs come from the lock (resolved commit -> snapshot directory, or the checkpoint
file), never from a hub id, so no code path here can download.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelcache.errors import VerificationError
from modelcache.lock import LockedArtifact
from modelcache.plan import Artifact
from modelcache.service.engines.base import LoadSpec
from modelcache.service.startup import LOAD_REMEDY, Gate

TASKS = {
    "asr": "speech-to-text",
    "text-embedding": "text-embedding",
    "vision": "image-embedding",
    "face": "face-detection",
}


@dataclass
class ModelEntry:
    id: str
    task: str
    engine_name: str
    artifact: Artifact
    locked: LockedArtifact
    engine: object = None
    load_seconds: float = 0.0
    aliases: tuple[str, ...] = ()
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def revision(self) -> str | None:
        return self.locked.commit or self.artifact.sha256

    @property
    def bytes(self) -> int:
        return self.locked.size

    def describe(self) -> dict:
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.artifact.source.split("/")[0] if self.artifact.is_repo else "openai",
            "task": self.task,
            "engine": self.engine_name,
            "source": self.artifact.source,
            "revision": self.revision,
            "bytes": self.bytes,
            "load_seconds": round(self.load_seconds, 3),
            "aliases": list(self.aliases),
        }


class ModelLoadError(VerificationError):
    title = "cannot start"


class Registry:
    def __init__(self, entries: list[ModelEntry], device: str) -> None:
        self.entries = entries
        self.device = device
        self._by_name = {}
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                self._by_name.setdefault(name, entry)

    def get(self, name: str) -> ModelEntry | None:
        return self._by_name.get(name)

    def by_task(self, task: str) -> list[ModelEntry]:
        return [e for e in self.entries if e.task == task]

    @property
    def loaded(self) -> bool:
        return all(e.engine is not None for e in self.entries)


def model_id(artifact: Artifact) -> str:
    if artifact.kind == "whisper":
        return artifact.name.replace("/", "-")  # whisper/base -> whisper-base
    if artifact.role == "face":
        return "yunet"
    return artifact.name


def plan_entries(gate: Gate) -> list[ModelEntry]:
    """One entry per servable artifact in the plan (MLX repos and extra files are not served)."""
    locked = {a.spec: a for a in gate.lock.artifacts}
    entries = []
    for artifact in gate.plan.artifacts:
        task = TASKS.get(artifact.role)
        if task is None:
            continue
        engine = {
            "asr": artifact.engine or "openai-whisper",
            "text-embedding": "transformers",
            "vision": "transformers",
            "face": "opencv-yunet",
        }[artifact.role]
        aliases = ("whisper-1",) if artifact.role == "asr" else ()
        entries.append(ModelEntry(model_id(artifact), task, engine, artifact, locked[artifact.spec], aliases=aliases))
    return entries


def load_spec(gate: Gate, entry: ModelEntry, device: str) -> LoadSpec:
    layout, locked = gate.layout, entry.locked
    if entry.artifact.is_repo:
        path = layout.snapshot(locked.source, locked.commit or "")
        if entry.artifact.role == "face":
            path = layout.abs(locked.files[0].path)
    else:
        path = layout.abs(locked.files[0].path)
    variant = entry.artifact.name.split("/", 1)[1] if entry.artifact.kind == "whisper" else None
    return LoadSpec(entry.id, path, device, entry.engine_name, variant)


def make_engine(entry: ModelEntry, spec: LoadSpec) -> object:
    if entry.task == "speech-to-text":
        if entry.engine_name == "faster-whisper":
            from modelcache.service.engines.whisper_faster import FasterWhisper

            return FasterWhisper(spec)
        from modelcache.service.engines.whisper_openai import OpenAIWhisper

        return OpenAIWhisper(spec)
    if entry.task == "text-embedding":
        from modelcache.service.engines.text import TransformersTextEmbedder

        return TransformersTextEmbedder(spec)
    if entry.task == "image-embedding":
        from modelcache.service.engines.vision import VisionEmbedder

        return VisionEmbedder(spec)
    from modelcache.service.engines.faces import YuNetDetector

    return YuNetDetector(spec)


def load_all(gate: Gate, log=print) -> Registry:
    """Load every model once. Any failure stops startup with one message naming them all."""
    from modelcache.service.engines.device import resolve_device

    try:
        device = resolve_device(gate.settings.device)
    except RuntimeError as exc:
        raise ModelLoadError(
            str(exc),
            remedy="run the gpu profile on a host with an NVIDIA GPU and its container toolkit "
            "(`nvidia-smi` must work in a container), or use COMPOSE_PROFILES=cpu / MODELCACHE_DEVICE=cpu",
        ) from None
    entries = plan_entries(gate)
    failures = []
    for entry in entries:
        spec = load_spec(gate, entry, device)
        started = time.perf_counter()
        try:
            entry.engine = make_engine(entry, spec)
        except Exception as exc:  # any library error while loading is a startup failure
            failures.append(f"{entry.id} ({entry.engine_name}) from {gate.layout.rel(spec.path)}: "
                            f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")  # fmt: skip
            continue
        entry.load_seconds = time.perf_counter() - started
        log(f"loaded {entry.id} ({entry.task}, {entry.engine_name}) on {device} in {entry.load_seconds:.2f}s")
    if failures:
        raise ModelLoadError(
            f"{len(failures)} model(s) failed to load; the service does not start without every model",
            details=failures,
            remedy=LOAD_REMEDY,
        )
    return Registry(entries, device)
