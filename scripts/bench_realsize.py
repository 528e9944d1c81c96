#!/usr/bin/env python3
"""Real-size benchmarks: the service with models of the real sizes, each figure side by side
with its anchor in one run.

    scripts/test --version >/dev/null       # once: makes .venv with everything installed
    .venv/bin/python scripts/bench_realsize.py [--json out.json] [--quick]

The models have the exact architectures of google/siglip-base-patch16-224 (203 M parameters)
and Whisper base.en (71.8 M; an openai-whisper checkpoint and a faster-whisper conversion of
the same weights) with random weights (modelcache.testing.realsize_models: built once, then
kept in ~/.cache/modelcache/realsize). The real downloader fills a fresh volume with them from
the project's loopback HF mirror; the real service serves them. The in-process anchors run
first, on this process's main thread, before any service starts.
Measures:
  1. image embeddings at SigLIP-base size: 16 concurrent one-image clients (dynamic batching)
     vs one in-process forward per image, and vs one in-process forward of all 16 images
  2. private memory of each model's process after loading vs its weights' file, and vs a bare
     process loading the same engine: SigLIP-base (transformers), Whisper base.en
     (openai-whisper, faster-whisper)
  3. ASR real-time factor at Whisper base size: the service (openai-whisper, faster-whisper)
     vs openai-whisper's transcribe() in-process
  4. SigLIP-base vision tower, one forward of 16 images in-process: torch vs ONNX Runtime (the
     tower exported with torch.onnx.export)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

import httpx2  # noqa: E402
from bench_service import SPEECH, bare_transcribe, random_png, transcribe  # noqa: E402
from benchlib import (  # noqa: E402  (also puts the project on sys.path)
    IMAGES,
    Conn,
    Server,
    busy_cpu_seconds,
    cli,
    cli_env,
    metric,
    multipart,
    own_cpu_seconds,
    proc_memory,
    table,
)

from modelcache.fetch import run_fetch  # noqa: E402
from modelcache.progress import PlainReporter  # noqa: E402
from modelcache.settings import Settings  # noqa: E402
from modelcache.testing import realsize_models  # noqa: E402
from modelcache.testing.hfmirror import HFMirror  # noqa: E402
from tests.support.whisper_ckpt import speak  # noqa: E402

SIGLIP = realsize_models.SIGLIP_BASE
WHISPER = "base.en"
CLIENTS = 16  # concurrent one-image clients
ONNX_BATCH = 16  # images in the in-process torch vs ONNX Runtime forward

# A process that loads one model with the service's own engine class, the heavy libraries
# imported first (the service's torch model processes get those from the zygote), and prints
# its private memory (USS, as the service measures its model processes) before and after.
BARE_LOAD = """
import json, os, sys, time
from pathlib import Path
engine, path = sys.argv[1], Path(sys.argv[2])
from modelcache.service.engines.base import LoadSpec
from modelcache.service.models.worker import memory_of
if engine == "transformers":
    import torch, transformers, transformers.models.siglip.modeling_siglip
    from modelcache.service.engines.vision import VisionEmbedder as Engine
elif engine == "openai-whisper":
    import torch, whisper
    from modelcache.service.engines.whisper_openai import OpenAIWhisper as Engine
else:
    import faster_whisper
    from modelcache.service.engines.whisper_faster import FasterWhisper as Engine
before = memory_of(os.getpid(), private=True)
started = time.perf_counter()
model = Engine(LoadSpec(name="bare", path=path, device="cpu", variant=sys.argv[3] or None))
seconds = time.perf_counter() - started
after = memory_of(os.getpid(), private=True)
if engine == "transformers":  # one call, as after the service's first requests
    from PIL import Image
    model.embed_images([Image.new("RGB", (224, 224), (90, 140, 200))])
else:
    import numpy as np
    model.transcribe(np.zeros(16000 * 5, dtype=np.float32))
used = memory_of(os.getpid(), private=True)
print(json.dumps({"before": before, "after": after, "after_call": used, "load_s": seconds}))
"""


def build_models() -> dict[str, Path]:
    return {
        "siglip": realsize_models.siglip_base_repo(),
        "checkpoint": realsize_models.whisper_base_checkpoint(WHISPER),
        "faster-whisper": realsize_models.faster_whisper_base_en_repo(),
    }


def fill_volumes(models: dict[str, Path], work: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Two volumes filled by the real downloader from the loopback mirror: SigLIP-base with
    openai-whisper base.en, and faster-whisper base.en alone; the services' environments."""
    common = {
        "MODELCACHE_TEXT_EMBEDDING": "none",
        "MODELCACHE_FACE": "none",
        "MODELCACHE_MLX": "",
        "MODELCACHE_WHISPER": WHISPER,
        "MODELCACHE_HF_TOKEN_FILE": str(work / "no-token"),
        "MODELCACHE_REQUEST_TIMEOUT": "900",  # a slow run must measure slowly, not answer 504
    }
    with HFMirror() as mirror:
        mirror.add_repo(SIGLIP, models["siglip"])
        mirror.add_repo(realsize_models.FASTER_WHISPER_BASE_EN, models["faster-whisper"])
        digest = hashlib.sha256()
        with models["checkpoint"].open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        url = mirror.add_file(f"whisper/models/{digest.hexdigest()}/{WHISPER}.pt", models["checkpoint"])
        env = {
            **common,
            "HF_ENDPOINT": mirror.url,
            "MODELCACHE_DIR": str(work / "vol" / "models"),
            "MODELCACHE_VISION": SIGLIP,
            "MODELCACHE_ASR_ENGINE": "openai-whisper",
            "MODELCACHE_WHISPER_URL": url,
        }
        fw_env = {
            **common,
            "HF_ENDPOINT": mirror.url,
            "MODELCACHE_DIR": str(work / "fw" / "models"),
            "MODELCACHE_VISION": "none",
            "MODELCACHE_ASR_ENGINE": "faster-whisper",
        }
        for settings in (env, fw_env):
            run_fetch(Settings.from_env(settings), reporter=PlainReporter(open(os.devnull, "w")))
    return env, fw_env


# --- in-process anchors (this process's main thread) ---------------------------------------


class ImageAnchor:
    """SigLIP-base in this process, loaded once: decode + preprocess + image tower + normalise
    (what the service's engine does), one image per forward as bench_service.raw_image_forward
    does it, and all the clients' images in one forward."""

    def __init__(self, siglip: Path) -> None:
        from transformers import AutoModel, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(siglip, local_files_only=True)
        self.model = AutoModel.from_pretrained(siglip, local_files_only=True).eval()

    def embed(self, pngs: list[bytes]) -> None:
        import torch
        from PIL import Image

        images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        output = self.model.get_image_features(pixel_values=pixels)
        features = output if hasattr(output, "shape") else output.pooler_output
        torch.nn.functional.normalize(features, dim=1)

    def rates(self, pngs: list[bytes], singles: int) -> tuple[float, float]:
        """Images per second: ``singles`` one-image forwards, then one forward of every image in
        ``pngs``; after a warm-up of one of each."""
        import torch

        with torch.inference_mode():
            self.embed(pngs[:1])
            self.embed(pngs)
            started = time.perf_counter()
            for i in range(singles):
                self.embed([pngs[i % len(pngs)]])
            single = singles / (time.perf_counter() - started)
            started = time.perf_counter()
            self.embed(pngs)
            batched = len(pngs) / (time.perf_counter() - started)
        return single, batched


def onnx_vs_torch(siglip: Path, work: Path, reps: int) -> dict:
    """One forward of ``ONNX_BATCH`` preprocessed images through SigLIP's image tower and the
    normalisation (what the service's engine runs per batch after preprocessing), in torch and
    in ONNX Runtime on an export of the same module; medians of ``reps`` after a warm-up."""
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(siglip, local_files_only=True).eval()

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            output = self.model.get_image_features(pixel_values=pixel_values)
            features = output if hasattr(output, "shape") else output.pooler_output
            return torch.nn.functional.normalize(features, dim=1)

    tower = Tower().eval()
    pixels = torch.rand(ONNX_BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    graph = work / "siglip-vision.onnx"
    started = time.perf_counter()
    with torch.inference_mode():
        torch.onnx.export(
            tower,
            (pixels[:1],),
            str(graph),
            input_names=["pixel_values"],
            output_names=["embeddings"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript
        )
    export_s = time.perf_counter() - started
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    feed = {"pixel_values": pixels.numpy()}

    with torch.inference_mode():
        torch_out = tower(pixels).numpy()  # warm-up, both
        ort_out = session.run(None, feed)[0]
        torch_times, ort_times = [], []
        for _ in range(reps):  # in turns: a busy moment of the machine slows both alike
            started = time.perf_counter()
            tower(pixels)
            torch_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            session.run(None, feed)
            ort_times.append(time.perf_counter() - started)
    torch_s, ort_s = statistics.median(torch_times), statistics.median(ort_times)
    return {
        "batch": ONNX_BATCH,
        "torch_s": torch_s,
        "onnxruntime_s": ort_s,
        "max_abs_diff": float(np.abs(torch_out - ort_out).max()),
        "export_s": export_s,
        "graph_bytes": graph.stat().st_size + sum(p.stat().st_size for p in work.glob("*.data")),
        "threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
    }


def bare_loads(models: dict[str, Path]) -> dict[str, dict]:
    """Each engine loaded in a bare process of its own (all three at once: only memory counts)."""
    jobs = {
        "transformers": (models["siglip"], ""),
        "openai-whisper": (models["checkpoint"], WHISPER),
        "faster-whisper": (models["faster-whisper"], ""),
    }
    procs = {
        engine: subprocess.Popen(
            [sys.executable, "-c", BARE_LOAD, engine, str(path), variant],
            env=cli_env({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for engine, (path, variant) in jobs.items()
    }
    results = {}
    for engine, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"bare load of {engine} failed:\n{err[-3000:]}")
        results[engine] = json.loads(out.strip().splitlines()[-1])
    return results


# --- against a running service ---------------------------------------------------------------


def model_memory(server: Server) -> dict[str, dict]:
    """Each model's process: its private memory after loading and its peak while answering (as
    the process measured them, from /health), and its resident set now."""
    health = httpx2.get(f"{server.url}/health", timeout=30).json()
    return {
        model: {
            "load_bytes": entry["load_bytes"],
            "now_bytes": entry["memory_bytes"],
            "peak_bytes": entry["peak_bytes"],
            "rss_bytes": proc_memory(entry["pid"])[0],
        }
        for model, entry in health["models"].items()
    }


def image_load(server: Server, bodies: list[bytes], content_type: str, seconds: float) -> dict:
    """One client per body, each on a keep-alive connection of its own, posting its image back
    to back; none starts a request after ``seconds``, and the requests already sent are
    answered and counted, over the time until the last answer. (Counting only the answers
    within the window, as bench_service.load does, would lose about half a batch's latency per
    client at each end, which is a second here.) From /metrics: images per forward and the
    model process's time per forward."""
    import threading

    ready = threading.Barrier(len(bodies) + 1, timeout=120)
    counts = [0] * len(bodies)
    failures: list[str] = []
    stop = [0.0]

    def client(i: int) -> None:
        conn = Conn(server.url)
        conn.connect()
        ready.wait()
        while time.perf_counter() < stop[0]:
            status, data = conn.post(IMAGES, bodies[i], content_type)
            if status == 200:
                counts[i] += 1
            else:
                failures.append(f"{status} {data[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    before = server.metrics()
    started = time.perf_counter()
    stop[0] = started + seconds
    ready.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = server.metrics()

    def delta(name: str) -> float:
        return metric(after, name, model=SIGLIP) - metric(before, name, model=SIGLIP)

    calls = delta("modelcache_batch_size_count")
    return {
        "ok": sum(counts),
        "seconds": elapsed,
        "ok_per_s": sum(counts) / elapsed,
        "failed": len(failures),
        "failures": failures[:5],
        "calls": calls,
        "inputs": delta("modelcache_batch_size_sum"),
        "model_s": delta("modelcache_model_seconds_sum"),
    }


def model_seconds(before: str, after: str) -> float:
    """The time the model's process spent on the calls between two readings of /metrics."""
    return metric(after, "modelcache_model_seconds_sum") - metric(before, "modelcache_model_seconds_sum")


def bench(quick: bool) -> dict:
    reps = 2 if quick else 3  # timed repetitions (transcriptions, ONNX/torch forwards)
    window = 6.0 if quick else 12.0  # seconds of the 16-client image load, in two halves
    n_images = 12 if quick else 24  # in-process one-image forwards, in two halves
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, no GPU",
        "quick": quick,
        "repetitions": reps,
    }
    started, busy_before, own_before = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    work = Path(tempfile.mkdtemp(prefix="mc-bench-realsize-"))
    try:
        build_started = time.perf_counter()
        models = build_models()
        results["build_s"] = time.perf_counter() - build_started  # ~0 when cached
        fetch_started = time.perf_counter()
        env, fw_env = fill_volumes(models, work)
        results["fetch_s"] = time.perf_counter() - fetch_started
        weights = {
            "transformers": (models["siglip"] / "model.safetensors").stat().st_size,
            "openai-whisper": models["checkpoint"].stat().st_size,
            "faster-whisper": (models["faster-whisper"] / "model.bin").stat().st_size,
        }

        import soundfile

        wav = speak(SPEECH, work / "speech.wav")
        duration = soundfile.info(str(wav)).duration
        audio = wav.read_bytes()
        pngs = [random_png(224, seed) for seed in range(CLIENTS)]
        bodies = [multipart("file", "i.png", png, {"model": SIGLIP}) for png in pngs]
        content_type = bodies[0][1]

        # in-process only, before any service starts ----------------------------------------
        results["onnx_vs_torch"] = onnx_vs_torch(models["siglip"], work, reps)
        results["bare_load"] = bare_loads(models)
        anchor = ImageAnchor(models["siglip"])

        # the service with SigLIP-base and openai-whisper base.en. Each anchor runs in turns
        # with its service measurement (on this process's main thread, the service idle), so
        # that other load on the machine weighs on both alike.
        server = Server(env, work / "server.log")
        try:
            results["ready_s"] = {"siglip+openai-whisper": server.ready_seconds}
            after_load = model_memory(server)
            image_load(server, [b for b, _ in bodies], content_type, 2.0)  # warm-up
            image_runs, anchor_rates = [], []
            for _ in range(2):
                anchor_rates.append(anchor.rates(pngs, n_images // 2))
                image_runs.append(image_load(server, [b for b, _ in bodies], content_type, window / 2))
            transcribe(server.url, audio)  # warm-up
            openai_runs, in_process, inside = [], [], []
            for _ in range(reps):
                in_process.append(bare_transcribe(models["checkpoint"], wav, 1))
                before = server.metrics()
                openai_runs.append(transcribe(server.url, audio))
                inside.append(model_seconds(before, server.metrics()))
            after_use = model_memory(server)
        finally:
            server.stop()
        fw_server = Server(fw_env, work / "fw-server.log")
        try:
            results["ready_s"]["faster-whisper"] = fw_server.ready_seconds
            compute_type = httpx2.get(f"{fw_server.url}/v1/models/whisper-1", timeout=30).json()["compute_type"]
            fw_after_load = model_memory(fw_server)
            transcribe(fw_server.url, audio)  # warm-up
            fw_runs, fw_inside = [], []
            for _ in range(reps):
                before = fw_server.metrics()
                fw_runs.append(transcribe(fw_server.url, audio))
                fw_inside.append(model_seconds(before, fw_server.metrics()))
            fw_after_use = model_memory(fw_server)
        finally:
            fw_server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ok, elapsed = sum(run["ok"] for run in image_runs), sum(run["seconds"] for run in image_runs)
    calls, inputs = sum(run["calls"] for run in image_runs), sum(run["inputs"] for run in image_runs)
    model_s = sum(run["model_s"] for run in image_runs)
    results["image_embeddings"] = {
        "clients": CLIENTS,
        "seconds": elapsed,
        "ok": ok,
        "ok_per_s": ok / elapsed,
        "failed": sum(run["failed"] for run in image_runs),
        "inputs_per_call": inputs / calls if calls else None,
        "model_images_per_s": inputs / model_s if model_s else None,  # inside the model's process
        "model_busy_share": model_s / elapsed,
        "one_forward_per_image_per_s": statistics.mean(single for single, _ in anchor_rates),
        "one_forward_of_all_per_s": statistics.mean(batched for _, batched in anchor_rates),
        "runs": image_runs,
        "anchor_rates": anchor_rates,
    }
    (whisper_id,) = (m for m in after_load if m != SIGLIP)
    (fw_id,) = fw_after_load

    def memory(loaded: dict, used: dict) -> dict:
        return {
            **loaded,
            "now_bytes": used["now_bytes"],
            "peak_bytes": used["peak_bytes"],
            "rss_bytes": used["rss_bytes"],
        }

    results["memory"] = {
        "transformers": memory(after_load[SIGLIP], after_use[SIGLIP]),
        "openai-whisper": memory(after_load[whisper_id], after_use[whisper_id]),
        "faster-whisper": memory(fw_after_load[fw_id], fw_after_use[fw_id]),
        "weight_file_bytes": weights,
    }
    results["asr"] = {
        "audio_s": duration,
        "rtf": {
            "openai-whisper": statistics.median(t for t, _ in openai_runs) / duration,
            "faster-whisper": statistics.median(t for t, _ in fw_runs) / duration,
        },
        "in_process_rtf": statistics.median(run["seconds"] for run in in_process) / duration,
        "model_process_rtf": {
            "openai-whisper": statistics.median(inside) / duration,
            "faster-whisper": statistics.median(fw_inside) / duration,
        },
        "faster_whisper_compute_type": compute_type,
        "texts": {
            "openai-whisper": openai_runs[-1][1],
            "faster-whisper": fw_runs[-1][1],
            "in-process": in_process[-1]["text"],
        },
    }
    results["wall_s"] = time.perf_counter() - started
    others = (busy_cpu_seconds() - busy_before) - (own_cpu_seconds() - own_before)
    results["other_processes_cpu_share"] = max(0.0, others) / (results["wall_s"] * (os.cpu_count() or 1))
    return results


def report(r: dict) -> str:
    im, onnx, m, a, bare = r["image_embeddings"], r["onnx_vs_torch"], r["memory"], r["asr"], r["bare_load"]
    mib = 2**20
    one, batched = im["one_forward_per_image_per_s"], im["one_forward_of_all_per_s"]
    per_call = (
        f"; {im['inputs_per_call']:.1f} images per forward, {im['model_images_per_s']:.2f} images/s "
        f"in the model's process, busy {im['model_busy_share']:.0%} of the time"
        if im["inputs_per_call"]
        else ""
    )
    rows = [
        (
            f"image embeddings, SigLIP-base, {im['clients']} concurrent clients, one 224x224 PNG each (goal >= 2x)",
            f"{im['ok_per_s']:.2f} images/s{per_call}",
            f"in-process, one forward per image: {one:.2f} images/s; all {im['clients']} in one forward: {batched:.2f} images/s",
            f"{im['ok_per_s'] / one:.2f}x ({im['ok_per_s'] / batched:.2f}x the one forward of {im['clients']})",
        ),
        (
            f"SigLIP-base vision tower, one forward of {onnx['batch']} images in-process: ONNX Runtime vs torch",
            f"ONNX Runtime {onnx['onnxruntime']}: {onnx['onnxruntime_s']:.2f} s "
            f"({onnx['batch'] / onnx['onnxruntime_s']:.1f} images/s; max abs diff {onnx['max_abs_diff']:.1e})",
            f"torch: {onnx['torch_s']:.2f} s ({onnx['batch'] / onnx['torch_s']:.1f} images/s)",
            f"{onnx['torch_s'] / onnx['onnxruntime_s']:.2f}x (torch time / ORT time)",
        ),
    ]
    labels = {
        "transformers": "SigLIP-base (transformers, float32)",
        "openai-whisper": "Whisper base.en (openai-whisper, float32)",
        "faster-whisper": f"Whisper base.en (faster-whisper, {a['faster_whisper_compute_type']})",
    }
    for engine, label in labels.items():
        ours, file_bytes, alone = m[engine], m["weight_file_bytes"][engine], bare[engine]
        peak = f", peak {ours['peak_bytes'] / mib:.0f}" if ours["peak_bytes"] else ""
        rows.append(
            (
                f"private memory of the model's process, {label}: after loading; after answering",
                f"{ours['load_bytes'] / mib:.0f} MiB; {ours['now_bytes'] / mib:.0f} MiB{peak} (RSS {ours['rss_bytes'] / mib:.0f} MiB)",
                f"weights file {file_bytes / mib:.0f} MiB; a bare process loading it: "
                f"+{(alone['after'] - alone['before']) / mib:.0f} MiB; "
                f"+{(alone['after_call'] - alone['before']) / mib:.0f} MiB after one call",
                f"{ours['load_bytes'] / file_bytes:.2f}x; {ours['now_bytes'] / file_bytes:.2f}x the file",
            )
        )
    for engine in ("openai-whisper", "faster-whisper"):
        label = engine if engine == "openai-whisper" else f"faster-whisper {a['faster_whisper_compute_type']}"
        rows.append(
            (
                f"ASR real-time factor, Whisper base.en, {label} ({a['audio_s']:.1f} s of speech)",
                f"{a['rtf'][engine]:.3f} (in the model's process: {a['model_process_rtf'][engine]:.3f})",
                f"openai-whisper transcribe() in-process: {a['in_process_rtf']:.3f}",
                f"{a['rtf'][engine] / a['in_process_rtf']:.2f}x",
            )
        )
    machine = f"machine: {r['machine']}"
    if r.get("other_processes_cpu_share", 0) > 0.05:
        machine += f"; other processes kept {r['other_processes_cpu_share']:.0%} of its CPU time busy during this run"
    return f"{machine}\n\n{table(rows)}"


def section(r: dict) -> str:
    """This part's section of docs/benchmarks.md (scripts/bench --only realsize)."""
    if not r:
        return "## Real-size models\n\nnot measured in this run (`scripts/bench --only realsize`)\n"
    im, onnx = r["image_embeddings"], r["onnx_vs_torch"]
    return f"""## Real-size models

{report(r)}

- *models*: random weights with the exact architectures of google/siglip-base-patch16-224
  (203 M parameters, float32 safetensors as on the Hub) and Whisper base.en (71.8 M; openai-whisper's
  float16 checkpoint, and its faster-whisper float16 conversion holding the same weights), built by
  `modelcache.testing.realsize_models` and kept in `~/.cache/modelcache/realsize`. The real
  downloader fills the volumes from the loopback mirror; the real service serves them. Random
  Whisper weights transcribe every clip to the empty text, so an ASR request costs the encoder's
  full forward over each 30 s window and a decode of a few tokens: real speech adds about one
  decoder step per token to both sides of the comparison.
- *image embeddings*: {im["clients"]} clients, one thread and one keep-alive connection each, post one
  random 224x224 PNG (multipart) back to back, {im["seconds"]:.0f} s in all after a 2 s warm-up; the
  clients share the machine's CPUs with the service. The requests sent before the end are
  answered and counted (a batch takes about a second here). *In the model's process*: the images
  over the time the model's process spent on its calls (decoding, preprocessing and the
  forward; from `/metrics`). Anchors, in this process: decode + preprocess + image tower +
  normalise of one image at a time, and of the {im["clients"]} clients' images in one forward. The service
  and the anchors run in turns, half of each at a time, the service idle while the anchors run:
  other load on the machine weighs on both alike. At this size the model is compute-bound on
  {r["machine"].split(", ")[1]}: one forward of {im["clients"]} images embeds {im["one_forward_of_all_per_s"] / im["one_forward_per_image_per_s"]:.2f}x as many images per second as one
  image at a time: about the most that batching these clients' requests can gain over the first
  anchor here.
- *ONNX Runtime vs torch*: the image tower and the normalisation as one module, exported with
  `torch.onnx.export` (TorchScript exporter, opset 17, dynamic batch) and run by ONNX Runtime's
  CPU provider with {onnx["threads"]} threads, against the same module in torch; one forward of
  {onnx["batch"]} preprocessed images, medians of {r["repetitions"]} in turns after a warm-up. A figure only: the
  service has no ONNX vision engine.
- *memory*: the private memory (USS: what ending the process gives back) of each model's
  process, as the service measures it: after loading (`load_bytes` in `/health`), after the
  image load or the transcriptions (`memory_bytes`) and its peak while answering (`peak_bytes`);
  its resident set at the end. Anchors: the weights' file, and the same engine class loading the
  same files in a bare process, the libraries imported first (private memory before and after
  the load, and after one call: one image, 5 s of silence). transformers maps the safetensors
  file, so weights count once a forward has touched them; the float32 Whisper engines hold the
  float16 files at twice their size.
- *ASR*: one request with {r["asr"]["audio_s"]:.1f} s of espeak-ng speech (the service part's text), median of
  {r["repetitions"]} after a warm-up; the anchor loads the checkpoint as the service does and calls
  openai-whisper's `transcribe` with the same options (beam 5, best of 5, temperature fallback, fp32),
  in turns with the openai-whisper service's requests.
- Wall time of this part: {r["wall_s"]:.0f} s (building the models, when not cached: {r["build_s"]:.0f} s in
  this run; filling the volumes: {r["fetch_s"]:.0f} s). `scripts/bench --only realsize` measures it
  again; `scripts/bench_realsize.py` alone prints the table.
"""


def main() -> None:
    cli(__doc__, bench, report)


if __name__ == "__main__":
    main()
