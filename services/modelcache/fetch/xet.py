"""Opt-in (``MODELCACHE_TRANSFER=xet``): Xet-backed files through hf_xet, held to the same rules.

hf_xet rebuilds a file from content-defined chunks fetched from Xet's storage host (the
CAS), in parallel; near the CAS that can be faster than one HTTP transfer. It is not the
default: the CAS is a second host that firewalls and mirrors often do not let
through, and when hf_xet cannot reach it, it retries for minutes. Here it runs so that
it can only add speed, never a failure:

1. one request to the Hub (our token, Hub host only) says whether the file is Xet-backed
   and where its token route is; the token route names the CAS;
2. the CAS is probed without any token and with a short timeout: unreachable, and the
   file goes the HTTP way at once;
3. hf_xet runs in a child process that writes into ``partial/xet-<partial name>/`` (a staging area,
   never a final path), so it can be stopped at once on Ctrl-C/SIGTERM, at the fetch time
   limit, or when it has made no progress for ``MODELCACHE_STALL_TIMEOUT``;
4. the staged file is hashed against the Hub's sha256 and only then moved to the partial
   path, from where the caller publishes it like any other transfer.

Any failure on the way costs one log line and hands the file to the HTTP path
(:func:`fetch` returns None). hf_xet's own cache folder is ``partial/xet-cache`` (hf_xet 1.8
keeps no chunk cache by default), swept with the other leftovers once the volume is complete.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2

from modelcache.fetch.context import Context
from modelcache.fetch.http import origin
from modelcache.fetch.policy import Cancelled
from modelcache.fetch.transfer import Expected, Result
from modelcache.hashing import hash_file

if TYPE_CHECKING:
    from modelcache.fetch.jobs import Progress

PROBE_TIMEOUT = 5.0
STAGING_PREFIX = "xet-"
CHUNK_CACHE = "xet-cache"


class _Unavailable(Exception):
    """hf_xet cannot be used for this file; the reason goes to the log."""


def fetch(
    ctx: Context,
    file: tuple[str, str, str],
    url: str,
    part: Path,
    expected: Expected,
    *,
    label: str,
    progress: Progress,
) -> Result | None:
    """Bring a Xet-backed file (repo id, commit, path) into ``part``, verified; None: take the HTTP path."""
    policy = ctx.policy
    staging = part.parent / f"{STAGING_PREFIX}{part.name.removesuffix('.part')}"
    try:
        if importlib.util.find_spec("hf_xet") is None:
            raise _Unavailable("the hf_xet package is not installed")
        cas = _cas_of(ctx, url, label)
        _probe(ctx.client, cas)
        staged = _run_child(ctx, file, staging)
        hashed = hash_file(staged)
        if hashed.sha256 != expected.sha256 or staged.stat().st_size != expected.size:
            raise _Unavailable(f"hf_xet produced other bytes (sha256 {hashed.sha256[:12]}…) than {expected.pin} says")
        os.replace(staged, part)
        progress(expected.size or 0)
        return Result(hashed.sha256, expected.size or 0, expected.size or 0)
    except _Unavailable as exc:
        policy.notify(f"{label}: Xet transfer not used ({exc}); fetching it over HTTP through the Hub's redirect")
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cas_of(ctx: Context, url: str, label: str) -> str:
    """The CAS address, from the file's resolve answer and its xet-auth token route."""
    from huggingface_hub.utils._xet import parse_xet_file_data_from_response

    timeout = httpx2.Timeout(PROBE_TIMEOUT * 2)
    try:
        head = ctx.client.head(url, headers=ctx.hub_headers(), follow_redirects=False, timeout=timeout)
        data = parse_xet_file_data_from_response(head, endpoint=ctx.settings.hf_endpoint)
        if data is None or not data.refresh_route:
            raise _Unavailable("the Hub does not serve this file from Xet")
        auth = ctx.hub_headers() if origin(data.refresh_route) == origin(url) else {}
        token = ctx.client.get(data.refresh_route, headers=auth, timeout=timeout)
    except httpx2.HTTPError as exc:
        raise _Unavailable(f"the Hub's Xet metadata could not be read: {exc.__class__.__name__}") from None
    cas = token.headers.get("x-xet-cas-url")
    if token.status_code != 200 or not cas or not cas.startswith(("http://", "https://")):
        raise _Unavailable(f"the Xet token route answered HTTP {token.status_code} without a CAS address")
    return cas


_UNREACHABLE: dict[str, str] = {}  # CAS address -> why; asked once per process, not once per file
_UNREACHABLE_LOCK = threading.Lock()


def _probe(client: httpx2.Client, cas: str) -> None:
    """Any HTTP answer means reachable; a refused or silent host is not worth minutes of retries."""
    with _UNREACHABLE_LOCK:
        known = _UNREACHABLE.get(cas)
    if known is None:
        try:
            client.get(cas, timeout=httpx2.Timeout(PROBE_TIMEOUT), follow_redirects=False).close()
            return
        except httpx2.HTTPError as exc:
            known = f"the Xet storage host {cas} cannot be reached ({exc.__class__.__name__})"
            with _UNREACHABLE_LOCK:
                _UNREACHABLE[cas] = known
    raise _Unavailable(known)


def _run_child(ctx: Context, file: tuple[str, str, str], staging: Path) -> Path:
    repo_id, commit, path = file
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=ctx.settings.hf_endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_XET_CACHE=str(staging.parent / CHUNK_CACHE),
        HF_HOME=str(staging / ".hf-home"),
    )
    if ctx.token:
        env["HF_TOKEN"] = ctx.token  # in the environment, never on the command line
    job = json.dumps({"repo_id": repo_id, "commit": commit, "path": path, "dir": str(staging), "ppid": os.getpid()})
    child = subprocess.Popen(
        [sys.executable, "-m", "modelcache.fetch.xet", job],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _watch(ctx, child, [staging, staging.parent / CHUNK_CACHE])
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    stderr = child.stderr.read() if child.stderr else ""
    if child.returncode != 0:
        last = (stderr.strip().splitlines() or ["no message"])[-1]
        raise _Unavailable(f"hf_xet failed: {last[:300]}")
    staged = staging / path
    if not staged.is_file():
        raise _Unavailable("hf_xet ended without writing the file")
    return staged


def _watch(ctx: Context, child: subprocess.Popen, dirs: list[Path]) -> None:
    """Wait for the child; kill it on cancel, at the deadline, or when nothing moves on disk."""
    policy = ctx.policy
    last_size, last_move = -1, time.monotonic()
    while child.poll() is None:
        if policy.cancel.wait(0.2):
            child.kill()
            raise Cancelled("interrupted")
        now = time.monotonic()
        if now >= policy.deadline:
            child.kill()
            raise _Unavailable("the fetch time limit was reached during the Xet transfer")
        size = sum(_du(d) for d in dirs)
        if size != last_size:
            last_size, last_move = size, now
        elif now - last_move > max(policy.stall_timeout, PROBE_TIMEOUT):
            child.kill()
            raise _Unavailable(f"hf_xet made no progress for {policy.stall_timeout:g}s")


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _child(job: dict) -> None:
    """In the child process: let huggingface_hub + hf_xet write the file into the staging folder."""

    def orphaned() -> None:  # the parent was killed (kill -9): stop too
        while True:
            if os.getppid() != job["ppid"]:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=orphaned, daemon=True).start()
    from huggingface_hub import hf_hub_download

    hf_hub_download(job["repo_id"], job["path"], revision=job["commit"], local_dir=job["dir"])


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
