"""The engine catalogue: everything the service knows about an engine, in one record each.

Adding an engine is one record here plus its engine module (which imports its library
only when its class is built, in the model's own process):

- ``name``: how the lock and the settings call it (``MODELCACHE_ASR_ENGINE``);
- ``roles``: the plan roles it serves (``asr``, ``text-embedding``, ``vision``, ``face``)
  and ``default_for``: the roles it serves when the artifact names no engine;
- ``packages`` and ``install``: the modules the start-up gate looks for (without
  importing them) and the command that installs them;
- ``preload``: what the zygote imports once for this engine's processes (``None``: its
  processes start as fresh interpreters; see ``models/zygote.py``);
- ``setup``: in the model's process, before the engine is built: resolves the device
  and applies the thread budget (``MODELCACHE_THREADS``), returns the device;
- ``classes``: for each role, ``module:Class`` of the engine, built from a :class:`LoadSpec`.

This module imports no engine library: the gate, the zygote and the HTTP process read it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelcache.plan import ONNX_ENGINES  # the text engines that run an ONNX graph (on the CPU)

if TYPE_CHECKING:  # the gate reads this module: nothing heavy (numpy) at run time
    from modelcache.service.engines.base import LoadSpec

#: what each served role does, as the API names it
TASKS = {
    "asr": "speech-to-text",
    "text-embedding": "text-embedding",
    "vision": "image-embedding",
    "face": "face-detection",
}
SERVED_ROLES = tuple(TASKS)


@dataclass(frozen=True)
class Engine:
    name: str
    roles: tuple[str, ...]
    packages: tuple[str, ...]
    install: str
    classes: dict[str, str]  # role -> "module:Class"
    setup: Callable[[LoadSpec], str]
    default_for: tuple[str, ...] = ()
    preload: tuple[str, ...] | None = None
    preload_model_code: bool = False  # also the transformers model family of each snapshot

    def build(self, role: str, spec: LoadSpec) -> object:
        """The engine object for ``role``, in the model's process (imports its library)."""
        module, _, name = self.classes[role].partition(":")
        return getattr(importlib.import_module(module), name)(spec)


# --- device and thread setup, in the model's process -------------------------------------


def _torch_setup(spec: LoadSpec) -> str:
    from modelcache.service.engines.device import resolve_device

    device = resolve_device(spec.device)
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    return device


def _ctranslate2_setup(spec: LoadSpec) -> str:
    import ctranslate2

    cuda = ctranslate2.get_cuda_device_count()
    if spec.device == "cuda" and cuda == 0:
        raise RuntimeError("MODELCACHE_DEVICE=cuda but CTranslate2 sees no CUDA device")
    return "cuda" if spec.device in ("auto", "cuda") and cuda else "cpu"


def _opencv_setup(spec: LoadSpec) -> str:
    if spec.threads:
        import cv2

        cv2.setNumThreads(spec.threads)
    return "cpu"  # OpenCV's detector runs on the CPU


def _graph_setup(spec: LoadSpec) -> str:
    if spec.device == "cuda":  # settings refuse this pairing; a lock served as-is may still ask
        raise RuntimeError(f"the {spec.engine} text engine runs on the CPU, and MODELCACHE_DEVICE=cuda")
    return "cpu"


def default_threads(engine: Engine, threads: int) -> int:
    """CTranslate2, ONNX Runtime and OpenVINO take a thread count of their own: every CPU
    this process may use unless set (torch's default)."""
    if engine.name in ("faster-whisper", *ONNX_ENGINES) and not threads:
        return len(os.sched_getaffinity(0))
    return threads


_SERVICE_EXTRA = "pip install 'modelcache[service]'"
_TORCH_BASE = (
    "torch",
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.auto.processing_auto",
)

ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            name="openai-whisper",
            roles=("asr",),
            default_for=("asr",),
            packages=("torch", "whisper"),
            install="pip install --no-deps openai-whisper==20250625 (its dependencies are in modelcache's service "
            f"extra: {_SERVICE_EXTRA})",
            preload=("torch", "whisper", "whisper.model", "whisper.decoding", "whisper.audio"),
            setup=_torch_setup,
            classes={"asr": "modelcache.service.engines.whisper_openai:OpenAIWhisper"},
        ),
        Engine(
            name="faster-whisper",
            roles=("asr",),
            packages=("faster_whisper", "ctranslate2"),
            install=_SERVICE_EXTRA,
            setup=_ctranslate2_setup,
            classes={"asr": "modelcache.service.engines.whisper_faster:FasterWhisper"},
        ),
        Engine(
            name="transformers",
            roles=("text-embedding", "vision"),
            default_for=("text-embedding", "vision"),
            packages=("torch", "transformers"),
            install=f"{_SERVICE_EXTRA} (torch from the PyTorch index of your choice first)",
            preload=_TORCH_BASE,
            preload_model_code=True,
            setup=_torch_setup,
            classes={
                "text-embedding": "modelcache.service.engines.text:TransformersTextEmbedder",
                "vision": "modelcache.service.engines.vision:VisionEmbedder",
            },
        ),
        *(
            Engine(
                name=name,
                roles=("text-embedding",),
                packages=(runtime, "tokenizers"),
                install=_SERVICE_EXTRA,
                setup=_graph_setup,
                classes={"text-embedding": f"modelcache.service.engines.text_onnx:{cls}"},
            )
            for name, runtime, cls in (
                ("onnx", "onnxruntime", "OnnxTextEmbedder"),
                ("onnx-int8", "onnxruntime", "OnnxTextEmbedder"),
                ("openvino", "openvino", "OpenVinoTextEmbedder"),
            )
        ),
        Engine(
            name="opencv-yunet",
            roles=("face",),
            default_for=("face",),
            packages=("cv2",),
            install=_SERVICE_EXTRA,
            setup=_opencv_setup,
            classes={"face": "modelcache.service.engines.faces:YuNetDetector"},
        ),
    )
}


def engine_for(role: str, named: str | None = None) -> Engine:
    """The engine that serves an artifact of ``role`` (``named``: the one the lock names)."""
    if named:
        engine = ENGINES.get(named)
        if engine is None or role not in engine.roles:
            raise KeyError(f"no engine {named!r} for {role}")
        return engine
    for engine in ENGINES.values():
        if role in engine.default_for:
            return engine
    raise KeyError(f"no engine serves {role}")
