"""Model processes start from a zygote that has imported the heavy libraries once.

Importing torch and transformers takes about 3 s of CPU on the project's 2-core VM (torch
0.9 s, transformers 0.7 s, a model family's modeling code 1.5 s): for a small model that is
nearly all of its load time, paid again by every process that loads a model, at start, on
every load on demand and on every reload. The torch engines' processes are therefore
forked from one multiprocessing forkserver that imported those modules once (its
"preload"); the new process only reads its weights. The zygote runs no kernel and starts
no thread, so a fork from it inherits no OpenMP team and no lock held by another thread.

faster-whisper (CTranslate2, no torch) and YuNet (OpenCV) keep starting as fresh
interpreters: forked from the zygote, they would carry torch's pages for nothing.
Where this user may not execute the interpreter again, every worker is forked from the
HTTP process instead, as before.

Nothing here imports a heavy library in the HTTP process: the zygote learns what to
import from an environment variable that only it reads (:mod:`modelcache.service.models._preload`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from modelcache.service.engines.catalogue import ENGINES

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext

ENV = "_MODELCACHE_PRELOAD"  # read by the zygote only

_configured = False


def can_exec() -> bool:
    """False where this user may not execute the interpreter again (seen in a sandbox)."""
    return os.access(sys.executable, os.X_OK)


def start_method(engine: str) -> Literal["fork", "forkserver", "spawn"]:
    if not can_exec():
        return "fork"
    return "forkserver" if ENGINES[engine].preload is not None else "spawn"


def context(engine: str) -> ForkContext | ForkServerContext | SpawnContext:
    # the stub types get_context() of a union of method names as plain BaseContext (no Process)
    return cast("ForkContext | ForkServerContext | SpawnContext", multiprocessing.get_context(start_method(engine)))


def preload_for(specs) -> dict:
    """What the zygote should import for these workers: modules, and the transformers model
    families (from each snapshot's config.json) whose code it should import too."""
    modules: list[str] = []
    families: list[str] = []
    for spec in specs:
        engine = ENGINES[spec.engine]
        modules += engine.preload or ()
        if engine.preload_model_code:
            family = _model_type(Path(spec.load.path))
            if family:
                families.append(family)
    return {"modules": list(dict.fromkeys(modules)), "families": list(dict.fromkeys(families))}


def _model_type(snapshot: Path) -> str | None:
    try:
        value = json.loads((snapshot / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def prepare(specs) -> None:
    """Tell the zygote what to import, before its first worker starts it. Later calls do
    nothing: a model a reload adds imports what the zygote lacks in its own process."""
    global _configured
    if _configured or not can_exec():
        return
    wanted = preload_for(specs)
    if not wanted["modules"]:
        return
    _configured = True
    os.environ[ENV] = json.dumps(wanted)  # the forkserver is started with this environment
    multiprocessing.get_context("forkserver").set_forkserver_preload(["modelcache.service.models._preload"])


def pid() -> int | None:
    """The zygote's process id while it runs (a child of this process), else None."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            children = Path(f"/proc/self/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"multiprocessing.forkserver" in cmdline:
                return int(child)
    return None


def stop() -> None:
    """End the zygote once the model processes have ended, and reap it (with the CPU time
    of the processes it forked), instead of leaving it to end on its own after this
    process. multiprocessing offers this only as ``ForkServer._stop``; without it the
    zygote still ends when this process does (its pipe from here closes)."""
    from multiprocessing import forkserver

    stop_server = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop_server is not None and pid() is not None:
        try:
            stop_server()
        except OSError:
            pass
