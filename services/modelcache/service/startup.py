"""The fail-fast gate. Runs before any heavy import; the standard library only.

1. Point every library at offline mode and every cache or temp dir at /tmp, before
   anything imports huggingface_hub, transformers, torch or numba.
2. Rebuild the plan from the environment, read the lock, verify the volume (fast by
   default, deep with MODELCACHE_VERIFY=deep). Config drift is a failure too.
3. On any problem: one message naming every problem and the remedy; exit non-zero.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass

from modelcache.errors import ModelcacheError, VerificationError
from modelcache.layout import Layout
from modelcache.lock import Lock, LockedArtifact, read_lock
from modelcache.lockfile import configured
from modelcache.plan import Artifact, Plan, build_plan
from modelcache.settings import Settings
from modelcache.verify import Report, verify_lock

RESET = "or reset only the models volume (`scripts/reset-models-volume --yes`) and run `docker compose up --wait`"
REMEDY = (
    "run the downloader with the same .env: `docker compose run --rm model-downloader` "
    "(outside Docker: `modelcache fetch`); for damaged files `... model-downloader fetch --deep`; " + RESET
)
LOAD_REMEDY = (
    "the files match the lock but a library could not load them: check them with "
    "`docker compose run --rm model-downloader verify --deep`, re-fetch with `... fetch --deep`; " + RESET
)


def offline_environment(layout: Layout, scratch: str | None = None) -> dict[str, str]:
    """The variables that keep every library offline and its writes off the volume."""
    tmp = scratch or tempfile.gettempdir()
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "DO_NOT_TRACK": "1",
        "HF_HOME": str(layout.hf_home),
        "HF_HUB_CACHE": str(layout.hub),
        "HF_XET_CACHE": f"{tmp}/xet",
        "HF_MODULES_CACHE": f"{tmp}/hf_modules",
        "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/torchinductor",
        "TORCH_HOME": f"{tmp}/torch",
        "TRITON_CACHE_DIR": f"{tmp}/triton",
        "NUMBA_CACHE_DIR": f"{tmp}/numba",
        "MPLCONFIGDIR": f"{tmp}/matplotlib",
        "XDG_CACHE_HOME": f"{tmp}/cache",
        "TOKENIZERS_PARALLELISM": "false",
    }


@dataclass(frozen=True)
class Gate:
    settings: Settings
    layout: Layout
    plan: Plan
    lock: Lock
    report: Report
    selection: Selection


SERVED_ROLES = ("asr", "text-embedding", "vision", "face")


class StartupError(VerificationError):
    title = "cannot start"


#: what each engine imports, and how to install it when it is missing
ENGINE_PACKAGES = {
    "openai-whisper": (("torch", "whisper"), "pip install --no-deps openai-whisper==20250625 (its dependencies "
                       "are in modelcache's service extra: pip install 'modelcache[service]')"),
    "faster-whisper": (("faster_whisper", "ctranslate2"), "pip install 'modelcache[service]'"),
    "transformers": (("torch", "transformers"), "pip install 'modelcache[service]' (torch from the PyTorch index "
                     "of your choice first)"),
    "opencv-yunet": (("cv2",), "pip install 'modelcache[service]'"),
}
#: Hub credentials: the service never needs them; they must not reach its model processes
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")


def missing_packages(artifacts: list[Artifact]) -> list[str]:
    """One line per model whose engine's packages are not installed (nothing is imported)."""
    import importlib.util

    lines = []
    for artifact in artifacts:
        if artifact.role == "asr":
            engine = artifact.engine or "openai-whisper"
        else:
            engine = ENGINE_ENGINES.get(artifact.role)
        if engine is None:
            continue
        modules, install = ENGINE_PACKAGES[engine]
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            lines.append(f"{artifact.name} needs {', '.join(absent)} ({engine}), not installed: {install}")
    return lines


ENGINE_ENGINES = {"text-embedding": "transformers", "vision": "transformers", "face": "opencv-yunet"}


def check(settings: Settings) -> Gate:
    """The volume holds every file its lock names, what the service is to serve is among
    them, and the libraries to load it are here; or StartupError.

    What is served (see :func:`select`): when the service's configuration asks for exactly
    the models of the volume's lock, it *follows the lock* (and serves what a new lock
    holds after each reload); when it asks for some of them, that subset; when it asks for
    something the lock lacks, the lock wins and the difference is reported (``Gate.selection.drift``,
    ``/health``, the log): after a hot reload, the container's environment is stale by design.
    """
    layout = Layout(settings.models_dir.absolute())
    for name in TOKEN_VARIABLES:  # offline and read-only: a token in .env has no business here
        os.environ.pop(name, None)
    os.environ.update(offline_environment(layout))
    plan = build_plan(settings)
    try:
        lock = read_lock(layout)
    except VerificationError as exc:  # damaged lock
        raise StartupError(exc.message, remedy=REMEDY) from None
    report = verify_volume(settings, layout, lock)
    if not report.ok or lock is None:
        raise StartupError(
            f"the models volume at {layout.root} does not hold what its lock says "
            f"({len(report.problems)} problem(s), {'deep' if report.deep else 'fast'} check)",
            details=[p.line() for p in report.problems],
            remedy=REMEDY,
        )
    selection = select(plan, lock)
    if not selection.served:
        raise _nothing_to_serve(lock)
    missing = missing_packages([artifact for artifact, _ in selection.served])
    if missing:
        raise StartupError(
            f"{len(missing)} model(s) cannot be loaded: their library is not installed in this environment",
            details=missing,
            remedy="install what each line names (the service image has them all), or set that model to none",
        )
    return Gate(settings, layout, plan, lock, report, selection)


def verify_volume(settings: Settings, layout: Layout, lock: Lock | None) -> Report:
    """The volume against its lock as the service checks it, at start and on every reload:
    every file the lock names, fast or deep (MODELCACHE_VERIFY), and against the lockfile
    MODELCACHE_LOCKFILE names."""
    return verify_lock(layout, lock, deep=settings.verify == "deep", workers=settings.workers,
                       lockfile=configured(settings))  # fmt: skip


@dataclass(frozen=True)
class Selection:
    """Which of the lock's models the service serves."""

    follow: bool  # serve whatever the lock holds, now and after each reload
    served: list[tuple[Artifact, LockedArtifact]]
    drift: list[str]  # how the configuration and the lock differ (reported, never refused)
    missing: list[str]  # configured models the lock lacks (a subset-serving reload refuses these)


def select(plan: Plan, lock: Lock, *, follow: bool | None = None) -> Selection:
    """The models to serve: see :func:`check`. ``follow`` is decided at start (None) and kept
    by every reload."""
    by_spec = {a.spec: a for a in plan.artifacts}
    in_lock = []
    for locked in lock.artifacts:
        artifact = by_spec.get(locked.spec) or _artifact_of(locked)
        if artifact is not None and artifact.role in SERVED_ROLES:
            in_lock.append((artifact, locked))
    wanted = [a for a in plan.artifacts if a.role in SERVED_ROLES]
    locked_specs = {locked.spec for _, locked in in_lock}
    missing = [f"{a.describe()} ({a.role})" for a in wanted if a.spec not in locked_specs]
    if follow is None:
        follow = bool(missing) or {a.spec for a in wanted} == locked_specs
    if follow:
        served = in_lock
    else:
        locked = {locked.spec: locked for _, locked in in_lock}
        served = [(a, locked[a.spec]) for a in wanted if a.spec in locked]
    wanted_specs = {a.spec for a in wanted}
    drift = [f"the configuration asks for {m}, which the volume's lock does not hold" for m in missing]
    if follow:
        drift += [f"the volume's lock holds {locked.source}{'@' + locked.revision if locked.revision else ''} "
                  f"({artifact.role}), which the configuration does not ask for"
                  for artifact, locked in in_lock if locked.spec not in wanted_specs]  # fmt: skip
    return Selection(follow, served, drift, missing)


def _nothing_to_serve(lock: Lock) -> StartupError:
    """Why no model is served: the lock holds none, or the configuration switched off every
    model the lock holds (a service may serve a subset of a shared volume, here none)."""
    remedy = ("set at least one of MODELCACHE_WHISPER, MODELCACHE_TEXT_EMBEDDING, MODELCACHE_VISION, "
              "MODELCACHE_FACE and run the downloader")  # fmt: skip
    held = [f"{locked.name if locked.kind in ('whisper', 'url') else locked.source} ({locked.role})"
            for locked in lock.artifacts if locked.role in SERVED_ROLES]  # fmt: skip
    if not held:
        return StartupError("no model to serve: neither the configuration nor the volume's lock names one "
                            "(MLX repos and manifest files are fetched, not served)", remedy=remedy)  # fmt: skip
    return StartupError(
        f"no model to serve: the configuration switches every model off, though the volume's lock holds "
        f"{len(held)}: {', '.join(held)}",
        remedy="name the models this service should serve in .env (MODELCACHE_WHISPER, MODELCACHE_TEXT_EMBEDDING, "
        "MODELCACHE_VISION, MODELCACHE_FACE), or leave them unset to serve what the lock holds",
    )


def _artifact_of(locked: LockedArtifact) -> Artifact | None:
    """The plan artifact a lock entry was made from, rebuilt from what the lock records
    (None for locks from before the lock recorded roles)."""
    if locked.role is None:
        return None
    sha256 = locked.files[0].sha256 if locked.kind in ("whisper", "url") and locked.files else None
    return Artifact(name=locked.name, role=locked.role, kind=locked.kind, source=locked.source,  # type: ignore[arg-type]
                    dest=locked.dest, revision=locked.revision, sha256=sha256, engine=locked.engine)  # fmt: skip


def run_gate(settings: Settings | None = None) -> Gate:
    """check(), printing the error and exiting non-zero on failure (the service entry point)."""
    try:
        return check(settings or Settings.from_env())
    except ModelcacheError as exc:
        print(exc.render(), file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
