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

The table has every figure with its goal and whether it is met, then the goals missed and
how much CPU other processes took meanwhile. `scripts/bench --only registry [--quick]` runs
this and replaces only its section of docs/benchmarks.md and its key in benchmarks.json.

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
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT), str(ROOT / "scripts")]

import benchlib  # noqa: E402

from modelcache.layout import Layout  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from modelcache.volume_lock import read_lock  # noqa: E402
from tests.support import fixtures  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
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
    out: dict = {"quick": quick, "cpus": os.cpu_count()}
    started, busy, own = time.perf_counter(), benchlib.busy_cpu_seconds(), benchlib.own_cpu_seconds()
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
    out["seconds"] = time.perf_counter() - started
    # CPU time the rest of the machine spent while this ran (this process and every
    # process it started and waited for are left out): what the figures shared the CPUs with
    others = (benchlib.busy_cpu_seconds() - busy) - (benchlib.own_cpu_seconds() - own)
    out["other_load_cores"] = max(0.0, others / out["seconds"])
    return out


def _speed(ours: float, theirs: float | None) -> float | None:
    """modelcache's speed over the anchor's: the anchor's time over ours."""
    return theirs / ours if theirs else None


class Row(NamedTuple):
    what: str  # empty: another anchor for the measure above
    ours: str
    anchor: str
    ratio: str
    goal: str
    met: bool | None  # None: the anchor did not run
    short: str  # the measure in a few words, for the list of goals missed


def targets(r: dict) -> list[Row]:
    """Every figure, with its goal and whether it is met."""
    mib = r["push"]["bytes"] / 2**20
    p, q, t, k, s = r["push"], r["pull"], r["three_volumes"], r["kill9"], r["signatures"]

    def secs(v: float | None) -> str:
        return f"{v:.2f} s" if v is not None else "not run"

    rows: list[Row] = []
    for what, short, side, anchors in (
        (
            f"push of the volume, {mib:.0f} MiB",
            "push",
            p,
            (("oras push", "oras_s"), ("skopeo copy from an OCI layout", "skopeo_s")),
        ),
        (
            "cold pull into an empty volume (hashes every byte)",
            "cold pull",
            q,
            (("oras pull", "oras_s"), ("skopeo copy to an OCI layout", "skopeo_s")),
        ),
    ):
        for i, (anchor, key) in enumerate(anchors):
            ratio = _speed(side["modelcache_s"], side[key])
            rows.append(
                Row(
                    what if i == 0 else "",
                    f"{secs(side['modelcache_s'])} ({mib / side['modelcache_s']:.0f} MiB/s)" if i == 0 else "",
                    f"{anchor}: {secs(side[key])}",
                    f"{ratio:.2f}x" if ratio else "-",
                    ">= 1.0x",
                    None if ratio is None else ratio >= 1.0,
                    f"{short} against {anchor.split()[0]}",
                )
            )
        if side is p:
            sent = r["second_push_bytes_sent"]
            rows.append(
                Row("second push, unchanged volume", f"{sent} bytes sent", "", "", "0 bytes", sent == 0, "second push")
            )
    hub = t["hub_bytes_first"] / t["models_bytes"]
    rows.append(
        Row(
            "three volumes, one from the Hub, two from the registry: Hub bytes",
            f"{hub:.3f}x the models' size",
            f"{t['models_bytes'] / 2**20:.0f} MiB of files; the rest is the Hub's metadata answers",
            "",
            "1x (each file once)",
            hub <= 1.01,
            "Hub bytes",
        )
    )
    second_third = t["hub_requests_second_and_third"]
    rows.append(
        Row(
            "three volumes: Hub requests from volumes 2 and 3",
            " and ".join(str(n) for n in second_third),
            "",
            "",
            "0",
            not any(second_third),
            "Hub requests from volumes 2 and 3",
        )
    )
    rows.append(
        Row(
            "kill -9 at 50 % of a blob, fetch again: bytes of it sent again",
            f"{100 * k['resent_fraction']:.0f} %",
            f"{k['blob_bytes'] / 2**20:.0f} MiB blob, {k['kept_bytes'] / 2**20:.0f} MiB on disk at the kill",
            "",
            "<= 55 %",
            k["resent_fraction"] <= 0.55,
            "kill -9 resend",
        )
    )
    added_kept = s["warm_verdict_kept_s"] - s["warm_s"]
    added_first = s["warm_first_check_s"] - s["warm_s"]
    rows.append(
        Row(
            f"signatures: time added to a warm fetch ({s['models']} models), verdict kept",
            f"{added_kept:+.3f} s",
            f"warm fetch without a trust policy: {s['warm_s']:.2f} s",
            "",
            "<= 0.2 s",
            added_kept <= 0.2,
            "signatures, verdict kept",
        )
    )
    rows.append(
        Row(
            "signatures: time added, first check after the lock, the key or a signature changed",
            f"{added_first:+.3f} s",
            "",
            "",
            "<= 0.2 s",
            added_first <= 0.2,
            "signatures, first check after a change",
        )
    )
    return rows


def report(r: dict) -> str:
    rows = targets(r)
    lines = ["| measure | modelcache | anchor / detail | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        verdict = "yes" if row.met else "**no**" if row.met is False else "anchor not run"
        lines.append(f"| {row.what} | {row.ours} | {row.anchor} | {row.ratio} | {row.goal} | {verdict} |")
    missed = [row.short for row in rows if row.met is False]
    lines.append("")
    lines.append(
        f"Goals met: {sum(1 for row in rows if row.met)} of {len(rows)}"
        + (f"; missed: {', '.join(missed)}." if missed else ".")
    )
    load = r.get("other_load_cores")
    if load is not None:
        lines.append(
            f"Other processes used {load:.2f} of the machine's {r.get('cpus', '?')} cores on average"
            f" during this run ({r.get('seconds', 0):.0f} s{', --quick' if r.get('quick') else ''})."
        )
    notes = {**r["push"].get("notes", {}), **r["pull"].get("notes", {})}
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
