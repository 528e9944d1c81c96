#!/usr/bin/env python3
"""Benchmarks of models through an OCI registry (issue 18), each side by side in one run.

A real registry (CNCF distribution, Debian's `docker-registry`) on 127.0.0.1 and the
project's HF-compatible mirror, with the same test volume as the downloader benchmarks
(real all-MiniLM-L6-v2, faster-whisper tiny.en, small stand-ins), about 160 MiB.

  1. push: `modelcache push` vs `oras push` (ORAS Python SDK, the same files, one layer
     each) vs `skopeo copy` of the same artifact from an OCI layout; each into a fresh
     registry. Then a second `modelcache push` of the unchanged volume: bytes sent.
  2. cold pull into an empty volume: `modelcache fetch --from` (hashes every byte, writes
     the HF cache layout and the lock) vs `oras pull` vs `skopeo copy` to an OCI layout.
  3. three volumes, one from the Hub mirror and two from the registry: bytes the Hub
     served, and requests the Hub got from the second and third.
  4. kill -9 of `fetch --from` at 50 % of the largest blob (throttled to 40 MB/s by a proxy),
     then the re-run: bytes of that blob sent again.
  5. signatures: a warm `fetch` with MODELCACHE_TRUST_KEY and MODELCACHE_REQUIRE_SIGNATURE=1
     vs without, the first check (the library is loaded) and the later ones (the verdict kept).

    .venv/bin/python scripts/bench_registry.py [--quick] [--json out.json]

Needs `docker-registry` and `skopeo` (apt-get install docker-registry skopeo) and the ORAS
SDK (`pip install oras`); a missing anchor leaves its row empty, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from modelcache.layout import Layout  # noqa: E402
from modelcache.volume_lock import read_lock  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
from tests.support.hfmirror import HFMirror  # noqa: E402
from tests.support.registry import Registry, start_registry  # noqa: E402

MODELCACHE = [sys.executable, "-m", "modelcache"]


def _env(models: fixtures.MirrorModels, root: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELCACHE_", "HF_"))}
    return {**base, **models.env(root), "PYTHONPATH": str(ROOT / "services"), **extra}


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… failed: {(done.stderr or done.stdout)[-800:]}")
    return time.perf_counter() - started


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _stop(reg: Registry) -> None:
    reg.process.terminate()
    reg.process.wait(10)


def _oras_push(host: str, repo: str, root: Path, paths: list[str]) -> float:
    code = (
        "import sys, oras.client\n"
        "c = oras.client.OrasClient(insecure=True)\n"
        f"c.push(target={f'{host}/{repo}:v1'!r}, files=sys.argv[1:], disable_path_validation=True)\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *paths], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - started


def _oras_pull(host: str, repo: str, out: Path) -> float:
    code = (
        "import sys, oras.client\n"
        "c = oras.client.OrasClient(insecure=True)\n"
        f"c.pull(target={f'{host}/{repo}:v1'!r}, outdir=sys.argv[1])\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True)
    return time.perf_counter() - started


def _skopeo(*args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-300:])
    return time.perf_counter() - started


def _side_by_side(size: int, ours: list[float], oras: list[float], skopeo: list[float], notes: dict) -> dict:
    return {
        "bytes": size,
        "modelcache_s": _median(ours),
        "oras_s": _median(oras) if oras else None,
        "skopeo_s": _median(skopeo) if skopeo else None,
        "notes": {k: v for k, v in notes.items() if v},
    }


def _anchor(fn, *args) -> tuple[float | None, str]:
    try:
        return fn(*args), ""
    except FileNotFoundError as exc:
        return None, f"not installed ({exc.filename})"
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return None, (detail.decode() if isinstance(detail, bytes) else str(detail)).strip()[-200:]


def bench(quick: bool) -> dict:
    repeat = 1 if quick else 3
    work = Path(tempfile.mkdtemp(prefix="mc-bench-registry-"))
    out: dict = {}
    try:
        with HFMirror(cdn=True, xet=True) as mirror:
            models = fixtures.fill_mirror(mirror, work)
            # -- 3 (first part): volume A from the Hub mirror --------------------------------
            vol_a = work / "a" / "models"
            mirror.reset_log()
            _run([*MODELCACHE, "fetch", "--plain"], _env(models, vol_a))
            hub_bytes_a = mirror.bytes_served("*")
            lock = read_lock(Layout(vol_a))
            assert lock is not None
            size = sum(f.size for f in lock.files)
            # the volume's distinct file contents, as paths relative to the volume root
            contents = sorted({f.blob or f.path for f in lock.files})

            # -- 1. push ----------------------------------------------------------------------
            ours, oras, skopeo = [], [], []
            notes: dict[str, str] = {}
            layout_dir = work / "oci-layout"
            for i in range(repeat):
                reg = start_registry(work / f"push-ours-{i}")
                env = _env(models, vol_a, MODELCACHE_INSECURE_REGISTRIES=reg.host)
                ours.append(_run([*MODELCACHE, "push", f"oci://{reg.host}/bench/models:v1"], env))
                if i == 0:  # the OCI layout skopeo copies from, made once, untimed
                    _anchor(
                        _skopeo,
                        "copy",
                        "--src-tls-verify=false",
                        f"docker://{reg.host}/bench/models:v1",
                        f"oci:{layout_dir}:v1",
                    )
                second = subprocess.run(
                    [*MODELCACHE, "push", f"oci://{reg.host}/bench/models:v1", "--json"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                out["second_push_bytes_sent"] = json.loads(second.stdout)["bytes_sent"]
                _stop(reg)
                reg = start_registry(work / f"push-oras-{i}")
                t, why = _anchor(_oras_push, reg.host, "bench/oras", vol_a, contents)
                if t is not None:
                    oras.append(t)
                notes["oras_push"] = why
                _stop(reg)
                reg = start_registry(work / f"push-skopeo-{i}")
                t, why = _anchor(
                    _skopeo,
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{layout_dir}:v1",
                    f"docker://{reg.host}/bench/skopeo:v1",
                )
                if t is not None:
                    skopeo.append(t)
                notes["skopeo_push"] = why
                _stop(reg)
            out["push"] = _side_by_side(size, ours, oras, skopeo, notes)

            # -- 2. cold pull, and 3. two more volumes ------------------------------------------
            reg = start_registry(work / "pull")
            try:
                env = _env(models, vol_a, MODELCACHE_INSECURE_REGISTRIES=reg.host)
                ref = f"oci://{reg.host}/bench/models:v1"
                _run([*MODELCACHE, "push", ref], env)
                _anchor(_oras_push, reg.host, "bench/oras", vol_a, contents)
                ours, oras, skopeo, hub_requests = [], [], [], []
                notes = {}
                for i in range(max(repeat, 2)):
                    target = work / f"pulled-{i}" / "models"
                    mirror.reset_log()
                    ours.append(
                        _run(
                            [*MODELCACHE, "fetch", "--plain", "--from", ref],
                            _env(models, target, MODELCACHE_INSECURE_REGISTRIES=reg.host),
                        )
                    )
                    hub_requests.append(len(mirror.requests))
                    t, why = _anchor(_oras_pull, reg.host, "bench/oras", work / f"oras-pull-{i}")
                    if t is not None:
                        oras.append(t)
                    notes["oras_pull"] = why
                    t, why = _anchor(
                        _skopeo,
                        "copy",
                        "--src-tls-verify=false",
                        f"docker://{reg.host}/bench/models:v1",
                        f"oci:{work / f'skopeo-pull-{i}'}:v1",
                    )
                    if t is not None:
                        skopeo.append(t)
                    notes["skopeo_pull"] = why
                out["pull"] = _side_by_side(size, ours, oras, skopeo, notes)
                out["three_volumes"] = {
                    "models_bytes": size,
                    "hub_bytes_first": hub_bytes_a,
                    "hub_requests_second_and_third": hub_requests[:2],
                }

                # -- 4. kill -9 at 50 % of the largest blob -----------------------------------
                big = max(lock.files, key=lambda f: f.size)
                proxy = FaultProxy(f"http://{reg.host}", rate_bps=40_000_000).start()
                target = work / "killed" / "models"
                env_k = _env(
                    models, target, MODELCACHE_INSECURE_REGISTRIES=f"{proxy.host},{reg.host}", MODELCACHE_WORKERS="1"
                )
                part = Layout(target).partial / f"{big.sha256}.part"
                proc = subprocess.Popen(
                    [*MODELCACHE, "fetch", "--plain", "--from", f"oci://{proxy.host}/bench/models:v1"],
                    env=env_k,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                deadline = time.monotonic() + 120
                while not (part.exists() and part.stat().st_size >= big.size // 2):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        proc.kill()
                        raise RuntimeError("the fetch never reached 50 % of the largest blob")
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proxy.stop()
                kept = part.stat().st_size
                mark = reg.mark()
                _run([*MODELCACHE, "fetch", "--plain", "--from", ref], env_k)
                resent = sum(r.bytes for r in reg.requests(mark) if r.method == "GET" and big.sha256 in r.path)
                out["kill9"] = {
                    "blob_bytes": big.size,
                    "kept_bytes": kept,
                    "resent_bytes": resent,
                    "resent_fraction": resent / big.size,
                }
            finally:
                _stop(reg)

            # -- 5. signatures on a warm fetch ---------------------------------------------------
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec

            key = ec.generate_private_key(ec.SECP256R1())
            private, public = work / "site.pem", work / "site.pub.pem"
            private.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            public.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            env = _env(models, vol_a)
            _run([*MODELCACHE, "sign", "--key", str(private)], env)
            trusted = {**env, "MODELCACHE_TRUST_KEY": str(public), "MODELCACHE_REQUIRE_SIGNATURE": "1"}
            memo = Layout(vol_a).state / "signatures" / ".verified.json"
            plain, first, kept_verdict = [], [], []
            for _ in range(3 if quick else 7):
                plain.append(_run([*MODELCACHE, "fetch", "--plain"], env))
                memo.unlink(missing_ok=True)
                first.append(_run([*MODELCACHE, "fetch", "--plain"], trusted))
                kept_verdict.append(_run([*MODELCACHE, "fetch", "--plain"], trusted))
            out["signatures"] = {
                "models": len(lock.artifacts),
                "warm_s": _median(plain),
                "warm_first_check_s": _median(first),
                "warm_verdict_kept_s": _median(kept_verdict),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _ratio(ours: float, theirs: float | None) -> str:
    return f"{theirs / ours:.2f}x" if theirs else "—"


def report(r: dict) -> str:
    mib = r["push"]["bytes"] / 2**20
    p, q, t, k, s = r["push"], r["pull"], r["three_volumes"], r["kill9"], r["signatures"]

    def secs(v: float | None) -> str:
        return f"{v:.2f} s" if v is not None else "—"

    added_first = s["warm_first_check_s"] - s["warm_s"]
    added_kept = s["warm_verdict_kept_s"] - s["warm_s"]
    rows = [
        (
            "push of the volume",
            f"{secs(p['modelcache_s'])} ({mib / p['modelcache_s']:.0f} MiB/s)",
            f"oras push {secs(p['oras_s'])}, skopeo copy {secs(p['skopeo_s'])}",
            f"{_ratio(p['modelcache_s'], p['oras_s'])} oras, {_ratio(p['modelcache_s'], p['skopeo_s'])} skopeo (goal ≥1.0x)",
        ),
        ("second push, unchanged volume", f"{r['second_push_bytes_sent']} bytes sent", "", "goal 0 bytes"),
        (
            "cold pull (hashes every byte)",
            f"{secs(q['modelcache_s'])} ({mib / q['modelcache_s']:.0f} MiB/s)",
            f"oras pull {secs(q['oras_s'])}, skopeo copy {secs(q['skopeo_s'])}",
            f"{_ratio(q['modelcache_s'], q['oras_s'])} oras, {_ratio(q['modelcache_s'], q['skopeo_s'])} skopeo (goal ≥1.0x)",
        ),
        (
            "three volumes: Hub bytes",
            f"{t['hub_bytes_first'] / t['models_bytes']:.2f}x the models' size",
            f"Hub requests from volumes 2 and 3: {t['hub_requests_second_and_third']}",
            "goal 1x and 0 requests",
        ),
        (
            "kill -9 at 50 % of a blob",
            f"{100 * k['resent_fraction']:.0f} % sent again",
            f"{k['blob_bytes'] / 2**20:.0f} MiB blob, {k['kept_bytes'] / 2**20:.0f} MiB kept",
            "goal ≤55 %",
        ),
        (
            f"signatures, warm fetch ({s['models']} models)",
            f"{added_kept:+.3f} s (verdict kept)",
            f"first check after a change: {added_first:+.3f} s; warm fetch alone {s['warm_s']:.2f} s",
            "goal ≤0.2 s",
        ),
    ]
    lines = ["| What | modelcache | Anchor / detail | Ratio or goal |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    notes = {**p.get("notes", {}), **q.get("notes", {})}
    for name, why in notes.items():
        lines.append(f"\n{name}: {why}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = bench(args.quick)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(report(result))


if __name__ == "__main__":
    main()
