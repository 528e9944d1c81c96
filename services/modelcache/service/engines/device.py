"""Pick the device: auto -> cuda when torch sees one, else cpu. Half precision on GPU."""

from __future__ import annotations


def resolve_device(wanted: str) -> str:
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MODELCACHE_DEVICE=cuda but torch sees no CUDA device")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def torch_dtype(device: str):
    import torch

    return torch.float16 if device == "cuda" else torch.float32
