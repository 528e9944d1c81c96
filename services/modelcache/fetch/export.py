"""Files the downloader derives from a fetched repo for the text engines that run an ONNX
graph (``MODELCACHE_TEXT_ENGINE=onnx|onnx-int8|openvino``):

- ``model.onnx``: the model exported with ``torch.onnx`` when the repo ships no
  ``onnx/model.onnx`` (needs torch and transformers: the ``export`` extra);
- ``model_int8.onnx``, when the repo ships no int8 graph of its own: the fp32 graph (the
  repo's or the export) with int8 weights, by ONNX Runtime's dynamic quantization
  (per-channel int8 weights, uint8 activations quantized at run time; needs onnx and
  onnxruntime, also in the ``export`` extra).

Both go to ``exports/<repo folder>/<commit>/`` (``Layout.export_dir``). Each is written in
the partial folder, checked (an export must give the torch model's vectors), hashed, and
only then moved to its final path; the lock records it like any fetched file, so the
service loads it strictly from the volume and verification covers it. A later fetch
keeps a derived file the previous lock holds while it still checks out.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from modelcache.errors import ConfigError, VerificationError
from modelcache.fetch.context import Context
from modelcache.fetch.hub import RemoteFile
from modelcache.fetch.jobs import ArtifactState
from modelcache.hashing import sha256_file
from modelcache.layout import Layout, fsync_dir
from modelcache.plan import (
    EXPORTED_GRAPH,
    ONNX_ENGINES,
    QUANTIZED_GRAPH,
    REPO_GRAPH,
    REPO_QUANTIZED,
    TORCH_WEIGHTS,
    Artifact,
    graph_file,
)
from modelcache.verify import check_file
from modelcache.volume_lock import LockedFile

#: the ``export`` extra: torch's exporter, and ONNX Runtime to check what it made
EXPORT_PACKAGES = ("torch", "transformers", "onnxruntime")
QUANTIZE_PACKAGES = ("onnx", "onnxruntime", "tokenizers")
#: one protobuf file holds at most 2 GiB: bigger models need a repo graph with external data
EXPORT_LIMIT = 2 * 1024**3
#: an export must give the vectors the torch model gives (mean-pooled, per probe text)
EXPORT_MIN_COSINE = 0.9999
#: int8 weights cost some accuracy (measured in docs/benchmarks.md); below this it is broken
QUANTIZED_MIN_COSINE = 0.95
PROBES = (
    "The quick brown fox jumps over the lazy dog.",
    "ONNX Runtime runs the exported graph on the CPU",
    "a",
)


def require(artifact: Artifact, files: list[RemoteFile]) -> None:
    """Before any byte is fetched: this downloader can make what the engine needs, or a
    ConfigError that says what to install or change."""
    if artifact.engine not in ONNX_ENGINES:
        return
    paths = {f.path for f in files}
    if artifact.engine == "onnx-int8" and REPO_QUANTIZED in paths:
        return  # the repo's own int8 graph: nothing to make
    needed = []
    if REPO_GRAPH not in paths:
        weights = sum(f.size for f in files if _torch_weight(f.path))
        if weights == 0:
            raise ConfigError(
                f"{artifact.describe()}: MODELCACHE_TEXT_ENGINE={artifact.engine} needs an ONNX graph, and the repo "
                f"has neither {REPO_GRAPH} nor safetensors/PyTorch weights to export one from",
                remedy="use MODELCACHE_TEXT_ENGINE=torch for this model, or a repo that ships onnx/model.onnx",
            )
        if weights > EXPORT_LIMIT:
            raise ConfigError(
                f"{artifact.describe()}: the repo ships no {REPO_GRAPH}, and its weights "
                f"({weights / 1024**3:.1f} GiB) are too big for one exported ONNX file (2 GiB)",
                remedy="use MODELCACHE_TEXT_ENGINE=torch for this model, or a repo that ships its own ONNX graph",
            )
        needed += [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if artifact.engine == "onnx-int8":
        needed += [m for m in QUANTIZE_PACKAGES if importlib.util.find_spec(m) is None]
    if needed:
        what = "export the model to ONNX" if REPO_GRAPH not in paths else "quantize its ONNX graph"
        raise ConfigError(
            f"{artifact.describe()}: MODELCACHE_TEXT_ENGINE={artifact.engine} needs the downloader to {what}, "
            f"and it lacks {', '.join(sorted(set(needed)))}; nothing was fetched",
            remedy="build the downloader image with the export extra (docker compose build --build-arg "
            "DOWNLOADER_EXTRAS=downloader,export model-downloader; docs/configuration.md), or use "
            f"MODELCACHE_TEXT_ENGINE=torch, or a repo that ships {REPO_GRAPH}"
            + (f" or {REPO_QUANTIZED}" if artifact.engine == "onnx-int8" else ""),
        )


def derive(ctx: Context, state: ArtifactState, note: Callable[[str], None]) -> None:
    """Add the artifact's derived graphs to its lock entries (made, or kept from the
    previous lock). Its fetched files are all in place."""
    artifact = state.artifact
    if artifact.engine not in ONNX_ENGINES or state.commit is None:
        return
    layout = ctx.layout
    out = layout.export_dir(artifact.source, state.commit)
    snapshot = layout.snapshot(artifact.source, state.commit)
    paths = [e.path for e in state.entries]
    if graph_file(artifact.engine, paths) is not None:
        return  # the repo's own graph for this engine
    fp32 = graph_file("onnx", paths)
    if fp32 is None:
        entry = _kept(ctx, artifact, out / EXPORTED_GRAPH) or _make(
            layout, out / EXPORTED_GRAPH, lambda tmp: export_text_graph(snapshot, tmp), note, "exported"
        )
        state.entries.append(entry)
        fp32 = entry.path
    if artifact.engine == "onnx-int8":
        source = layout.abs(fp32)
        state.entries.append(
            _kept(ctx, artifact, out / QUANTIZED_GRAPH)
            or _make(
                layout, out / QUANTIZED_GRAPH, lambda tmp: quantize_graph(source, tmp, snapshot), note, "quantized"
            )
        )


def _torch_weight(path: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(path, pattern) for pattern in TORCH_WEIGHTS)


def _kept(ctx: Context, artifact: Artifact, path: Path) -> LockedFile | None:
    """The previous lock's entry for this derived file, if it still checks out."""
    held = ctx.previous.get(artifact.name) if ctx.previous else None
    if held is None or held.spec != artifact.spec:
        return None
    rel = ctx.layout.rel(path)
    entry = next((f for f in held.files if f.path == rel), None)
    if entry is None or check_file(ctx.layout, entry, deep=ctx.deep) is not None:
        return None
    return entry


def _make(
    layout: Layout, final: Path, build: Callable[[Path], None], note: Callable[[str], None], verb: str
) -> LockedFile:
    """Build the file in the partial folder, hash it, then publish it at ``final``."""
    import time

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="export-", dir=layout.partial))
    try:
        tmp = work / final.name
        build(tmp)
        size = tmp.stat().st_size
        digest = sha256_file(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    note(
        f"{verb} {layout.rel(final)} ({size / 1e6:.1f} MB, sha256 {digest[:12]}…) in {time.monotonic() - started:.1f}s"
    )
    return LockedFile(layout.rel(final), size, digest)


# --- the work itself (imports torch / onnxruntime only here) ------------------------------


def export_text_graph(snapshot: Path, out: Path) -> None:
    """The transformers model in ``snapshot`` as an ONNX graph (inputs ``input_ids``,
    ``attention_mask`` and, when the model takes them, ``token_type_ids``; output
    ``last_hidden_state``; batch and sequence dynamic), checked against torch."""
    import inspect

    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(snapshot, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(snapshot, local_files_only=True)
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors, strict=True))).last_hidden_state

    # export() puts the module back in the mode it found it in: eval, or dropout runs later
    encoder = Encoder().eval()
    probe = tokenizer(list(PROBES), padding=True, return_tensors="pt")  # padded: the mask path is traced
    inputs = tuple(probe[n] if n in probe else torch.zeros_like(probe["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on a graph the check below judges
        torch.onnx.export(
            encoder,
            inputs,
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
        expected = encoder(*inputs).numpy()
    mask = probe["attention_mask"].numpy()
    _check(out, {n: t.numpy() for n, t in zip(names, inputs, strict=True)}, expected, mask, EXPORT_MIN_COSINE)


def quantize_graph(source: Path, out: Path, snapshot: Path) -> None:
    """``source`` with int8 weights (per channel), checked against ``source``."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice on static quantization, to the root logger
    try:
        quantize_dynamic(source, out, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    feeds, mask = _probe_feeds(source, snapshot)
    expected = _run(source, feeds)
    _check(out, feeds, expected, mask, QUANTIZED_MIN_COSINE)


def _probe_feeds(graph: Path, snapshot: Path):
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding()
    encoded = tokenizer.encode_batch(list(PROBES))
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    names = [i.name for i in onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).get_inputs()]
    columns = {"input_ids": ids, "attention_mask": mask}
    return {n: columns.get(n, np.zeros_like(ids)) for n in names}, mask


def _run(graph: Path, feeds):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _check(graph: Path, feeds, expected, mask, minimum: float) -> None:
    import numpy as np

    got = _run(graph, feeds)
    weights = mask[..., None].astype(np.float32)

    def pooled(hidden):
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)

    a, b = pooled(got), pooled(expected)
    cosine = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    if got.shape != expected.shape or float(cosine.min()) < minimum:
        raise VerificationError(
            f"{graph.name}: the ONNX graph does not reproduce the model (cosine {float(cosine.min()):.5f}, "
            f"needed ≥ {minimum}); it was not kept",
            remedy="use MODELCACHE_TEXT_ENGINE=torch for this model, and report its architecture",
        )
