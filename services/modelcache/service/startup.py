"""The fail-fast gate. Runs before any heavy import; the standard library only.

1. Point every library at offline mode and every cache or temp dir at /tmp, before
   anything imports huggingface_hub, transformers, torch or numba.
2. Rebuild the plan from the environment, read the lock, verify the volume (fast by
   default, deep with MODELCACHE_VERIFY=deep). Config drift is a failure too.
3. On any problem: one message naming every problem and the remedy; exit non-zero.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from modelcache import logs
from modelcache.errors import ModelcacheError, VerificationError
from modelcache.layout import Layout
from modelcache.plan import Artifact, Plan, build_plan
from modelcache.service.engines.catalogue import SERVED_ROLES, engine_for
from modelcache.service.faults import StartupError
from modelcache.service.models.selection import Selection, select
from modelcache.service.models.volume import REMEDY, verify_volume
from modelcache.settings import Settings
from modelcache.verify import Report
from modelcache.volume_lock import Lock, read_lock


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
class Verified:
    """What the gate checked: the service may load these models."""

    settings: Settings
    layout: Layout
    plan: Plan
    lock: Lock
    report: Report
    selection: Selection


#: Hub credentials: the service never needs them; they must not reach its model processes
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")


def missing_packages(artifacts: list[Artifact]) -> list[str]:
    """One line per model whose engine's packages are not installed (nothing is imported)."""
    import importlib.util

    lines = []
    for artifact in artifacts:
        if artifact.role not in SERVED_ROLES:
            continue  # fetched, not served (MLX repos, manifest files)
        engine = engine_for(artifact.role, artifact.engine)
        absent = [m for m in engine.packages if importlib.util.find_spec(m) is None]
        if absent:
            lines.append(f"{artifact.name} needs {', '.join(absent)} ({engine.name}), not installed: {engine.install}")
    return lines


def check(settings: Settings) -> Verified:
    """The volume holds every file its lock names, what the service is to serve is among
    them, and the libraries to load it are here; or StartupError.

    What is served: ``models/selection.py``.
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
    selection = select(plan, lock, configured=settings.serve == "configured")
    if not selection.served:
        raise _nothing_to_serve(lock)
    missing = missing_packages([artifact for artifact, _ in selection.served])
    if missing:
        raise StartupError(
            f"{len(missing)} model(s) cannot be loaded: their library is not installed in this environment",
            details=missing,
            remedy="install what each line names (the service image has them all), or set that model to none",
        )
    return Verified(settings, layout, plan, lock, report, selection)


def _nothing_to_serve(lock: Lock) -> StartupError:
    """Why no model is served: the lock holds none, or the configuration switched off every
    model the lock holds (a service may serve a subset of a shared volume, here none)."""
    remedy = (
        "set at least one of MODELCACHE_WHISPER, MODELCACHE_TEXT_EMBEDDING, MODELCACHE_VISION, "
        "MODELCACHE_FACE and run the downloader"
    )
    held = [
        f"{locked.name if locked.kind in ('whisper', 'url') else locked.source} ({locked.role})"
        for locked in lock.artifacts
        if locked.role in SERVED_ROLES
    ]
    if not held:
        return StartupError(
            "no model to serve: neither the configuration nor the volume's lock names one "
            "(MLX repos and manifest files are fetched, not served)",
            remedy=remedy,
        )
    return StartupError(
        f"no model to serve: the configuration switches every model off, though the volume's lock holds "
        f"{len(held)}: {', '.join(held)}",
        remedy="name the models this service should serve in .env (MODELCACHE_WHISPER, MODELCACHE_TEXT_EMBEDDING, "
        "MODELCACHE_VISION, MODELCACHE_FACE), or leave them unset to serve what the lock holds",
    )


def run_gate(settings: Settings | None = None) -> Verified:
    """check(), printing the error and exiting non-zero on failure (the service entry point)."""
    try:
        return check(settings or Settings.from_env())
    except ModelcacheError as exc:
        logs.error(exc)
        raise SystemExit(exc.exit_code) from None
