"""Text embeddings with transformers, pooled the way the model declares.

A sentence-transformers repo says how to pool in ``modules.json`` and its Pooling module's
``config.json``, and whether to L2-normalise (a Normalize module). A plain transformers
repo gets mean pooling and normalisation.

An input is a text, or token ids in the model's own vocabulary (used as given: no special
tokens are added). Either is cut to the model's limit (``max_seq_length``, else the
tokenizer's and the position embeddings' limit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelcache.service.engines.base import LoadSpec
from modelcache.service.faults import InputError, UnsupportedModel

#: a text, or token ids in the model's vocabulary
TextInput = str | list[int]


def first_unknown(ids: list[int], vocab_size: int) -> int | None:
    """Where the first token id the vocabulary does not hold is, or None: the one check of
    token ids, made by the route (a 400 naming the place), the batch (that request alone
    fails) and the engine (a bug if reached)."""
    return next((j for j, v in enumerate(ids) if not 0 <= v < vocab_size), None)


def unknown_id(where: str, token: int, vocab_size: int) -> str:
    return f"{where}: token id {token} is outside this model's vocabulary (0..{vocab_size - 1})"


# the order sentence-transformers concatenates pooling modes in
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "lasttoken")


@dataclass(frozen=True)
class Pooling:
    modes: tuple[str, ...]
    normalize: bool
    max_length: int | None


def read_pooling(path: Path) -> Pooling:
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return Pooling(("mean_tokens",), True, None)
    modules = json.loads(modules_file.read_text())
    modes: tuple[str, ...] = ("mean_tokens",)
    normalize = False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            config = json.loads((path / module["path"] / "config.json").read_text())
            modes = tuple(m for m in POOLING_MODES if config.get(f"pooling_mode_{m}"))
            if config.get("pooling_mode_weightedmean_tokens"):
                raise UnsupportedModel("weighted-mean pooling is not supported")
            if not modes:
                raise UnsupportedModel(f"{module['path']}/config.json enables no pooling mode")
        elif kind.endswith(".Normalize"):
            normalize = True
        elif not kind.endswith(".Transformer"):
            raise UnsupportedModel(f"sentence-transformers module {kind!r} is not supported")
    max_length = None
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        max_length = json.loads(st_config.read_text()).get("max_seq_length")
    return Pooling(modes, normalize, max_length)


def pool(hidden, mask, modes: tuple[str, ...]):
    import torch

    mask_f = mask.unsqueeze(-1).to(hidden.dtype)
    parts = []
    for mode in modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(hidden.masked_fill(mask_f == 0, torch.finfo(hidden.dtype).min).max(dim=1).values)
        elif mode in ("mean_tokens", "mean_sqrt_len_tokens"):
            summed = (hidden * mask_f).sum(dim=1)
            counts = mask_f.sum(dim=1).clamp(min=1e-9)
            parts.append(summed / (counts if mode == "mean_tokens" else counts.sqrt()))
        elif mode == "lasttoken":
            last = mask.sum(dim=1) - 1
            parts.append(hidden[torch.arange(hidden.shape[0]), last])
    return torch.cat(parts, dim=-1)


class TransformersTextEmbedder:
    def __init__(self, spec: LoadSpec) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from modelcache.service.engines.device import torch_dtype

        self.pooling = read_pooling(spec.path)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(spec.path, local_files_only=True, dtype=torch_dtype(spec.device))
        self.model.to(spec.device).eval()
        self.device = spec.device
        limit = self.pooling.max_length or self.tokenizer.model_max_length
        positions = getattr(self.model.config, "max_position_embeddings", None) or limit
        self.max_length = int(min(limit, positions, 8192))
        self.vocab_size = len(self.tokenizer)
        self.normalized = self.pooling.normalize
        with torch.inference_mode():
            self.dimensions = int(self.embed(["dimension probe"])[0].shape[1])
        declared = read_matryoshka(spec.path)  # [] when any size is fine: every size below its own
        self.matryoshka_dimensions = declared or (None if declared is None else list(range(1, self.dimensions)))

    def embed(self, texts: list[TextInput]) -> tuple[np.ndarray, list[int]]:
        import torch

        if all(isinstance(t, str) for t in texts):
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        else:  # token ids among the texts: both as ids, cut to the limit, padded together
            enc = self.tokenizer.pad({"input_ids": self._ids(texts)}, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            vectors = pool(hidden, enc["attention_mask"], self.pooling.modes)
            if self.pooling.normalize:
                vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=1)
        tokens = enc["attention_mask"].sum(dim=1).tolist()
        return vectors.float().cpu().numpy(), [int(t) for t in tokens]

    def _ids(self, texts: list[TextInput]) -> list[list[int]]:
        strings = [t for t in texts if isinstance(t, str)]
        encoded = iter(
            self.tokenizer(strings, truncation=True, max_length=self.max_length)["input_ids"] if strings else []
        )
        out = []
        for i, t in enumerate(texts):
            if isinstance(t, str):
                out.append(next(encoded))
                continue
            bad = first_unknown(t, self.vocab_size)
            if bad is not None:  # the HTTP layer checks first; a bug if reached from there
                raise InputError(unknown_id(f"input[{i}][{bad}]", t[bad], self.vocab_size))
            out.append(list(t[: self.max_length]))
        return out


def read_matryoshka(path: Path) -> list[int] | None:
    """The smaller sizes the model was trained to give (Matryoshka representation learning),
    as ``config.json`` declares them, with vLLM's keys: ``matryoshka_dimensions`` (these
    sizes), else ``is_matryoshka: true`` (any size: an empty list); None when it declares
    neither."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    dims = config.get("matryoshka_dimensions")
    if isinstance(dims, list) and dims and all(isinstance(d, int) and d > 0 for d in dims):
        return sorted(set(dims))
    return [] if config.get("is_matryoshka") is True else None


def shorten(vectors: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """Matryoshka vectors cut to their first ``dimensions`` values, L2-normalised again if the
    model's vectors are."""
    cut = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        cut = cut / np.maximum(norms, 1e-12)
    return cut
