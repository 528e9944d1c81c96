"""The model registry: every configured model, loaded once at startup, by local path,
each in a worker process of its own (``workers.py``).

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
from modelcache.service.workers import ModelWorker, WorkerSpec

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
    worker: ModelWorker | None = None
    load_seconds: float = 0.0
    aliases: tuple[str, ...] = ()
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def revision(self) -> str | None:
        return self.locked.commit or self.artifact.sha256

    @property
    def bytes(self) -> int:
        return self.locked.size

    @property
    def loaded(self) -> bool:
        return self.worker is not None and self.worker.alive

    @property
    def info(self) -> dict:
        """What the worker reported after loading (dimensions, device, compute type, ...)."""
        return self.worker.info if self.worker is not None else {}

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
            "state": "loaded" if self.loaded else "failed",
            "device": self.info.get("device"),
            "memory_bytes": self.worker.rss_bytes() if self.worker is not None else 0,
            **({"compute_type": self.info["compute_type"]} if "compute_type" in self.info else {}),
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
        return all(e.loaded for e in self.entries)

    def stop(self) -> None:
        for entry in self.entries:
            if entry.worker is not None:
                entry.worker.stop()


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
        # OpenAI's name for speech-to-text means the first Whisper model configured
        aliases = ("whisper-1",) if artifact.role == "asr" and not any(e.task == "speech-to-text" for e in entries) else ()
        entries.append(ModelEntry(model_id(artifact), task, engine, artifact, locked[artifact.spec], aliases=aliases))
    return entries


def load_spec(gate: Gate, entry: ModelEntry) -> LoadSpec:
    layout, locked, settings = gate.layout, entry.locked, gate.settings
    if entry.artifact.is_repo:
        path = layout.snapshot(locked.source, locked.commit or "")
        if entry.artifact.role == "face":
            path = layout.abs(locked.files[0].path)
    else:
        path = layout.abs(locked.files[0].path)
    variant = entry.artifact.name.split("/", 1)[1] if entry.artifact.kind == "whisper" else None
    compute = settings.asr_compute_type if entry.engine_name == "faster-whisper" else None
    return LoadSpec(entry.id, path, settings.device, entry.engine_name, variant, settings.threads, compute)


def make_engine(task: str, engine: str, spec: LoadSpec) -> object:
    """The engine object (in the worker process that will run it)."""
    if task == "speech-to-text":
        if engine == "faster-whisper":
            from modelcache.service.engines.whisper_faster import FasterWhisper

            return FasterWhisper(spec)
        from modelcache.service.engines.whisper_openai import OpenAIWhisper

        return OpenAIWhisper(spec)
    if task == "text-embedding":
        from modelcache.service.engines.text import TransformersTextEmbedder

        return TransformersTextEmbedder(spec)
    if task == "image-embedding":
        from modelcache.service.engines.vision import VisionEmbedder

        return VisionEmbedder(spec)
    from modelcache.service.engines.faces import YuNetDetector

    return YuNetDetector(spec)


def worker_spec(gate: Gate, entry: ModelEntry) -> WorkerSpec:
    nice = gate.settings.asr_nice if entry.task == "speech-to-text" else 0
    return WorkerSpec(entry.id, entry.task, entry.engine_name, load_spec(gate, entry), gate.settings.device, nice)


def load_all(gate: Gate, log=print) -> Registry:
    """Start every model's worker (in parallel) and wait until all are loaded. Any failure
    stops startup with one message naming them all."""
    entries = plan_entries(gate)
    for entry in entries:
        entry.worker = ModelWorker(worker_spec(gate, entry))
        entry.worker.start()
    failures = []
    for entry in entries:
        worker = entry.worker
        assert worker is not None
        if not worker.wait_ready():
            path = gate.layout.rel(worker.spec.load.path)
            failures.append(f"{entry.id} ({entry.engine_name}) from {path}: {worker.failure}")
            continue
        entry.load_seconds = worker.info["load_seconds"]
        log(f"loaded {entry.id} ({entry.task}, {entry.engine_name}) on {worker.info['device']} in "
            f"{entry.load_seconds:.2f}s (process {worker.pid}, {worker.rss_bytes() / 2**20:.0f} MiB)")  # fmt: skip
    if failures:
        for entry in entries:
            if entry.worker is not None:
                entry.worker.stop(grace=1)
        cuda = any("CUDA" in f or "cuda" in f for f in failures) and gate.settings.device != "cpu"
        raise ModelLoadError(
            f"{len(failures)} model(s) failed to load; the service does not start without every model",
            details=failures,
            remedy=CUDA_REMEDY if cuda else LOAD_REMEDY,
        )
    devices = {e.info.get("device") for e in entries} - {None}
    return Registry(entries, ",".join(sorted(devices)) or gate.settings.device)


CUDA_REMEDY = (
    "run the gpu profile on a host with an NVIDIA GPU and its container toolkit "
    "(`nvidia-smi` must work in a container), or use COMPOSE_PROFILES=cpu / MODELCACHE_DEVICE=cpu"
)
