"""The served models: one entry per model (what it is, from the lock, and where it stands
in memory), the registry that finds them by id, and the specs their processes
(``worker.py``) load them from.

Load specs come from the lock (resolved commit -> snapshot directory, or the checkpoint
file), never from a hub id, so no code path here can download.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from modelcache.layout import Layout
from modelcache.plan import Artifact, graph_file
from modelcache.service.engines.base import LoadSpec
from modelcache.service.engines.catalogue import TASKS, engine_for
from modelcache.service.models.worker import ModelWorker, WorkerSpec
from modelcache.settings import Settings
from modelcache.volume_lock import LockedArtifact


class ModelState(StrEnum):
    """Where a model stands in memory (``/health`` and ``/v1/models`` show the value)."""

    LOADED = "loaded"
    UNLOADED = "unloaded"
    LOADING = "loading"
    UNLOADING = "unloading"
    FAILED = "failed"  # its load failed, or its process ended
    RETIRED = "retired"  # removed by a reload; its process stops once its calls are answered

    def __str__(self) -> str:
        return self.value


@dataclass(eq=False)
class ModelEntry:
    """One servable model: what it is (from the lock), and where it stands in memory.

    Only the lifecycle (``lifecycle.py``) moves ``state`` and the figures below it;
    ``active`` counts calls handed to the worker and not yet answered (``Lifecycle.using``).
    """

    id: str
    task: str
    engine_name: str
    artifact: Artifact
    locked: LockedArtifact
    worker: ModelWorker | None = None
    load_seconds: float = 0.0
    aliases: tuple[str, ...] = ()
    created: int = field(default_factory=lambda: int(time.time()))
    state: ModelState = ModelState.UNLOADED
    error: str | None = None
    info: dict = field(default_factory=dict)  # what the worker reported after its last load
    load_bytes: int = 0  # its process's private memory (USS) after its last load, measured
    peak_bytes: int = 0  # the most private memory its process needed while answering, measured (kept across loads)
    waiting: str | None = None  # while its load waits for room in the memory budget: why
    warned_at: int = 0  # the peak above which its next "more than the budget" warning is logged
    last_used: float | None = None  # time.time() of the last request
    pinned: bool = False
    failed_at: float | None = None  # time.monotonic() of the last failed load (loads are not retried at once)
    active: int = 0

    @property
    def key(self) -> tuple:
        """Same key, same model: configuration, commit and every file's content."""
        return (self.locked.spec, self.locked.commit, tuple(f.sha256 for f in self.locked.files))

    @property
    def revision(self) -> str | None:
        return self.locked.commit or self.artifact.sha256

    @property
    def bytes(self) -> int:
        return self.locked.size

    @property
    def loaded(self) -> bool:
        return self.state is ModelState.LOADED and self.worker is not None and self.worker.alive

    @property
    def need_bytes(self) -> int:
        """What the model needs to serve, as far as measured: its peak, or its load size."""
        return max(self.load_bytes, self.peak_bytes)

    def memory_now(self) -> int:
        """What unloading the model would give back now (its process's private pages; 0 when
        not running)."""
        if self.worker is not None and self.worker.alive:
            return self.worker.memory_bytes()
        return 0

    def pss_now(self) -> int:
        """The process's share of all it maps (0 when not running): these add up across processes."""
        return self.worker.pss_bytes() if self.worker is not None and self.worker.alive else 0

    def current_state(self) -> ModelState:
        """The state, where a process that died under a loaded model reads as failed (the
        lifecycle's supervisor then restarts it, or its next request does)."""
        if self.state is ModelState.LOADED and not self.loaded:
            return ModelState.FAILED
        return self.state

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
            "state": self.current_state().value,
            "pinned": self.pinned,
            "last_used": round(self.last_used, 3) if self.last_used else None,
            "device": self.info.get("device"),
            "memory_bytes": self.memory_now(),
            "load_bytes": self.load_bytes,
            "peak_bytes": self.peak_bytes,
            **({"error": self.error} if self.error else {}),
            **({"compute_type": self.info["compute_type"]} if "compute_type" in self.info else {}),
        }


class Registry:
    def __init__(self, entries: list[ModelEntry], device: str) -> None:
        self.entries = entries
        self.device = device
        self._by_name: dict[str, ModelEntry] = {}
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                self._by_name.setdefault(name, entry)

    def get(self, name: str) -> ModelEntry | None:
        return self._by_name.get(name)

    def by_task(self, task: str) -> list[ModelEntry]:
        return [e for e in self.entries if e.task == task]

    @property
    def ready(self) -> bool:
        """Every model that must stay in memory is there (all of them without a memory budget)."""
        return all(e.current_state() is ModelState.LOADED for e in self.entries if e.pinned)

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


def load_spec(settings: Settings, layout: Layout, entry: ModelEntry) -> LoadSpec:
    """Where the model's files are (from the lock) and how to run it."""
    locked = entry.locked
    if entry.artifact.is_repo:
        path = layout.snapshot(locked.source, locked.commit or "")
        if entry.artifact.role == "face":
            path = layout.abs(locked.files[0].path)
    else:
        path = layout.abs(locked.files[0].path)
    variant = entry.artifact.name.split("/", 1)[1] if entry.artifact.kind == "whisper" else None
    compute = settings.asr_compute_type if entry.engine_name == "faster-whisper" else None
    graph = graph_file(entry.engine_name, [f.path for f in locked.files])
    return LoadSpec(
        entry.id,
        path,
        settings.device,
        entry.engine_name,
        variant,
        settings.threads,
        compute,
        layout.abs(graph) if graph else None,
    )


def worker_spec(settings: Settings, layout: Layout, entry: ModelEntry) -> WorkerSpec:
    nice = settings.asr_nice if entry.task == "speech-to-text" else 0
    return WorkerSpec(
        entry.id, entry.artifact.role, entry.engine_name, load_spec(settings, layout, entry), settings.device, nice
    )


def entry_for(artifact: Artifact, locked: LockedArtifact, *, first_asr: bool) -> ModelEntry:
    """The entry of a model to serve (``first_asr``: it also answers as ``whisper-1``)."""
    engine = engine_for(artifact.role, artifact.engine)
    return ModelEntry(
        model_id(artifact),
        TASKS[artifact.role],
        engine.name,
        artifact,
        locked,
        aliases=("whisper-1",) if first_asr and artifact.role == "asr" else (),
    )


CUDA_REMEDY = (
    "run the gpu profile on a host with an NVIDIA GPU and its container toolkit "
    "(`nvidia-smi` must work in a container), or use COMPOSE_PROFILES=cpu / MODELCACHE_DEVICE=cpu"
)
