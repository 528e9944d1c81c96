"""How the service checks its volume against the lock: at start (the gate) and at every
reload. Standard library only (the gate imports it before anything heavy)."""

from __future__ import annotations

from modelcache.layout import Layout
from modelcache.models_lock import configured
from modelcache.settings import Settings
from modelcache.verify import Report, verify_lock
from modelcache.volume_lock import Lock

RESET = "or reset only the models volume (`scripts/reset-models-volume --yes`) and run `docker compose up --wait`"
REMEDY = (
    "run the downloader with the same .env: `docker compose run --rm model-downloader` "
    "(outside Docker: `modelcache fetch`); for damaged files `... model-downloader fetch --deep`; " + RESET
)
LOAD_REMEDY = (
    "the files match the lock but a library could not load them: check them with "
    "`docker compose run --rm model-downloader verify --deep`, re-fetch with `... fetch --deep`; " + RESET
)


def verify_volume(settings: Settings, layout: Layout, lock: Lock | None) -> Report:
    """The volume against its lock as the service checks it, at start and on every reload:
    every file the lock names, fast or deep (MODELCACHE_VERIFY), and against the lockfile
    MODELCACHE_LOCKFILE names."""
    return verify_lock(
        layout, lock, deep=settings.verify == "deep", workers=settings.workers, lockfile=configured(settings)
    )
