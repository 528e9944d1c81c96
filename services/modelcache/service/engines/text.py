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


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """Token vectors [n, t, d] pooled as the model declares (padding, where ``mask`` is 0,
    left out), then L2-normalised if it says so: float32 [n, d * modes]. One function for
    every engine, so that they differ only in how they run the transformer."""
    hidden = hidden.astype(np.float32, copy=False)
    mask_f = mask[..., None].astype(np.float32)
    parts = []
    for mode in pooling.modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(np.where(mask_f > 0, hidden, np.finfo(np.float32).min).max(axis=1))
        elif mode in ("mean_tokens", "mean_sqrt_len_tokens"):
            counts = np.maximum(mask_f.sum(axis=1), 1e-9)
            parts.append((hidden * mask_f).sum(axis=1) / (counts if mode == "mean_tokens" else np.sqrt(counts)))
        elif mode == "lasttoken":
            parts.append(hidden[np.arange(hidden.shape[0]), mask.sum(axis=1) - 1])
    vectors = np.concatenate(parts, axis=-1)
    if pooling.normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


class TextEngine:
    """What every text engine shares once it has its tokenizer and its transformer: the
    limits, the check and cut of token-id inputs, the probe of its output size and the
    Matryoshka sizes. Subclasses set ``pooling``, ``max_length`` and ``vocab_size``, and
    give ``_encode`` (texts to ids, cut to the limit) and ``_hidden`` (padded ids to token
    vectors)."""

    pooling: Pooling
    max_length: int
    vocab_size: int
    pad_id: int = 0

    def _finish(self, path: Path) -> None:
        self.normalized = self.pooling.normalize
        self.dimensions = int(self.embed(["dimension probe"])[0].shape[1])
        declared = read_matryoshka(path)  # [] when any size is fine: every size below its own
        self.matryoshka_dimensions = declared or (None if declared is None else list(range(1, self.dimensions)))

    def embed(self, texts: list[TextInput]) -> tuple[np.ndarray, list[int]]:
        ids = self._ids(texts)
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):  # right padding, as the tokenizers pad
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        hidden = self._hidden(input_ids, mask)
        return pool(hidden, mask, self.pooling), [len(row) for row in ids]

    def _ids(self, texts: list[TextInput]) -> list[list[int]]:
        strings = [t for t in texts if isinstance(t, str)]
        encoded = iter(self._encode(strings) if strings else [])
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

    def _encode(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def _hidden(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def length_limit(pooling: Pooling, tokenizer_limit: int | None, positions: int | None) -> int:
    """How many tokens an input keeps: the sentence-transformers limit, else the
    tokenizer's, never past the position embeddings (nor 8192)."""
    limit = pooling.max_length or tokenizer_limit or 8192
    return int(min(limit, positions or limit, 8192))


class TransformersTextEmbedder(TextEngine):
    def __init__(self, spec: LoadSpec) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from modelcache.service.engines.device import torch_dtype

        self.pooling = read_pooling(spec.path)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(spec.path, local_files_only=True, dtype=torch_dtype(spec.device))
        self.model.to(spec.device).eval()
        self.device = spec.device
        positions = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = length_limit(self.pooling, self.tokenizer.model_max_length, positions)
        self.vocab_size = len(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._types = "token_type_ids" in self.tokenizer.model_input_names
        with torch.inference_mode():
            self._finish(spec.path)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def _hidden(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        feeds = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if self._types:
            feeds["token_type_ids"] = torch.zeros_like(feeds["input_ids"])
        with torch.inference_mode():
            hidden = self.model(**{k: v.to(self.device) for k, v in feeds.items()}).last_hidden_state
            return hidden.float().cpu().numpy()


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
