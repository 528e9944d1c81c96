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

from modelcache.errors import ConfigError, ModelcacheError, VerificationError
from modelcache.layout import Layout
from modelcache.lock import Lock, LockedArtifact, read_lock
from modelcache.lockfile import configured
from modelcache.plan import Artifact, Plan, build_plan
from modelcache.settings import Settings
from modelcache.verify import Report, verify

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
    """Everything the configuration asks the service to serve is in the volume, as the lock
    says, and the libraries to load it are here; or StartupError."""
    layout = Layout(settings.models_dir.absolute())
    for name in TOKEN_VARIABLES:  # offline and read-only: a token in .env has no business here
        os.environ.pop(name, None)
    os.environ.update(offline_environment(layout))
    plan = build_plan(settings)
    if not any(a.role in SERVED_ROLES for a in plan.artifacts):
        raise StartupError(
            "no model to serve is configured (MLX repos and manifest files are fetched, not served)",
            remedy="set at least one of MODELCACHE_WHISPER, MODELCACHE_TEXT_EMBEDDING, MODELCACHE_VISION, MODELCACHE_FACE",
        )
    try:
        report = verify(
            layout, plan, deep=settings.verify == "deep", workers=settings.workers, lockfile=configured(settings)
        )
    except VerificationError as exc:  # damaged lock
        raise StartupError(exc.message, remedy=REMEDY) from None
    if not report.ok or report.lock is None:
        raise StartupError(
            f"the models volume at {layout.root} does not hold what this configuration needs "
            f"({len(report.problems)} problem(s), {'deep' if report.deep else 'fast'} check)",
            details=[p.line() for p in report.problems],
            remedy=REMEDY,
        )
    missing = missing_packages([a for a in plan.artifacts if a.role in SERVED_ROLES])
    if missing:
        raise StartupError(
            f"{len(missing)} model(s) cannot be loaded: their library is not installed in this environment",
            details=missing,
            remedy="install what each line names (the service image has them all), or set that model to none",
        )
    return Gate(settings, layout, plan, report.lock, report)


def served(plan: Plan, lock: Lock) -> list[tuple[Artifact, LockedArtifact]]:
    """The configured models the service serves, each with its lock entry (verified present)."""
    locked = {a.spec: a for a in lock.artifacts}
    return [(a, locked[a.spec]) for a in plan.artifacts if a.role in SERVED_ROLES and a.spec in locked]


#: the settings a reload takes from MODELCACHE_ENV_FILE (which models, how they are kept);
#: the others (port, paths, keys, limits) take effect at the next start
RELOADABLE = (
    "MODELCACHE_WHISPER", "MODELCACHE_ASR_ENGINE", "MODELCACHE_WHISPER_URL", "MODELCACHE_WHISPER_SHA256",
    "MODELCACHE_ASR_COMPUTE_TYPE", "MODELCACHE_TEXT_EMBEDDING", "MODELCACHE_VISION", "MODELCACHE_FACE",
    "MODELCACHE_MLX", "MODELCACHE_MEMORY_BUDGET", "MODELCACHE_PIN",
)  # fmt: skip


def service_settings(env: dict[str, str] | None = None) -> Settings:
    """The service's settings: its environment, where MODELCACHE_ENV_FILE (compose mounts the
    project's .env there) overrides the model settings. Read at start and on every reload,
    so that an edited .env takes effect without recreating the container."""
    env = dict(os.environ if env is None else env)
    path = env.get("MODELCACHE_ENV_FILE", "").strip()
    if path:
        from dotenv import dotenv_values

        if not os.path.isfile(path) and not os.path.exists(path):
            raise ConfigError(f"MODELCACHE_ENV_FILE ({path}): file not found",
                              remedy="mount the project's .env there (compose does), or unset MODELCACHE_ENV_FILE")  # fmt: skip
        try:
            values = dotenv_values(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"MODELCACHE_ENV_FILE ({path}): cannot read: {exc}",
                              remedy="fix the file (KEY=value lines), or unset MODELCACHE_ENV_FILE") from None  # fmt: skip
        env.update({k: v for k, v in values.items() if k in RELOADABLE and v is not None})
    return Settings.from_env(env)


def run_gate(settings: Settings | None = None) -> Gate:
    """check(), printing the error and exiting non-zero on failure (the service entry point)."""
    try:
        return check(settings or service_settings())
    except ModelcacheError as exc:
        print(exc.render(), file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
