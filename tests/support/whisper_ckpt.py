"""Whisper checkpoints for tests: read a CTranslate2 ``model.bin``, rebuild an openai-whisper checkpoint.

The faster-whisper conversion of a Whisper model (CTranslate2 ``WhisperSpec``) holds the same weights
as the original openai-whisper checkpoint, only under other names and with the attention projections
fused. ``convert_to_openai_whisper`` undoes that so one set of weights can be exercised by both
runtimes, with no download.

``model.bin`` layout (all integers little-endian, no padding), as ``ModelSpec._serialize`` writes it::

    u32 binary_version                      (6 today)
    str spec_name                           ("WhisperSpec")
    u32 spec_revision
    u32 n_variables
    n_variables x:
        str name
        u8  rank
        u32 dim[rank]
        u8  dtype_id                        (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16)
        u32 n_bytes
        n_bytes raw data, C order
    u32 n_aliases
    n_aliases x: str alias, str target

where ``str`` is ``u16 length`` (byte count including a trailing NUL), then the UTF-8 bytes and the NUL.

Also here: ``speak`` (espeak-ng + sox, 16 kHz mono WAV) and ``wer`` (jiwer, case and punctuation
insensitive) for transcription checks.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "convert_to_openai_whisper",
    "normalise_text",
    "read_ct2_model",
    "set_alignment_heads",
    "speak",
    "wer",
]

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h). bfloat16 has no numpy type:
# it is read as uint16 and widened to float32 below.
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BF16 = 5

_HEAD_DIM = 64  # every released Whisper size uses 64-dim attention heads


class CT2FormatError(ValueError):
    """model.bin is not a CTranslate2 model file this reader understands."""


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CT2FormatError(f"truncated model.bin: wanted {n} bytes at offset {f.tell() - len(data)}, got {len(data)}")
    return data


def _read_u8(f: BinaryIO) -> int:
    return struct.unpack("<B", _read_exact(f, 1))[0]


def _read_u16(f: BinaryIO) -> int:
    return struct.unpack("<H", _read_exact(f, 2))[0]


def _read_u32(f: BinaryIO) -> int:
    return struct.unpack("<I", _read_exact(f, 4))[0]


def _read_str(f: BinaryIO) -> str:
    n = _read_u16(f)
    raw = _read_exact(f, n)
    if not raw or raw[-1] != 0:
        raise CT2FormatError(f"string without trailing NUL near offset {f.tell()}")
    return raw[:-1].decode("utf-8")


def read_ct2_model(path: str | Path, *, with_meta: bool = False):
    """Every variable of a CTranslate2 ``model.bin`` as a numpy array, aliases resolved.

    ``path`` is the model.bin file or the model directory. Arrays keep their stored dtype
    (float16/float32/int8/int16/int32); bfloat16 is widened to float32. Scalars come back as
    0-d arrays. With ``with_meta=True`` returns ``(variables, {"version", "spec", "revision",
    "aliases"})`` instead.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    variables: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    with open(path, "rb") as f:
        version = _read_u32(f)
        if version < 5 or version > 6:
            # 5 and 6 share this layout; older files spell names and specs differently.
            raise CT2FormatError(f"{path}: unsupported CTranslate2 binary version {version}")
        spec = _read_str(f)
        revision = _read_u32(f)
        count = _read_u32(f)
        for _ in range(count):
            name = _read_str(f)
            rank = _read_u8(f)
            shape = tuple(_read_u32(f) for _ in range(rank))
            type_id = _read_u8(f)
            if type_id not in _CT2_DTYPES:
                raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
            dtype = _CT2_DTYPES[type_id]
            n_bytes = _read_u32(f)
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if n_bytes != expected:
                raise CT2FormatError(
                    f"{path}: {name!r} shape {shape} {dtype} needs {expected} bytes, header says {n_bytes}"
                )
            array = np.frombuffer(_read_exact(f, n_bytes), dtype=dtype).reshape(shape)
            if type_id == _BF16:
                array = (array.astype(np.uint32) << 16).view(np.float32)
            variables[name] = array.copy() if type_id != _BF16 else array
        n_aliases = _read_u32(f)
        for _ in range(n_aliases):
            alias = _read_str(f)
            aliases[alias] = _read_str(f)
        trailing = f.read(1)
        if trailing:
            raise CT2FormatError(f"{path}: unexpected data after the alias table at offset {f.tell() - 1}")
    for alias, target in aliases.items():
        # An alias points at a stored variable (the alphabetically first of equal ones).
        seen = set()
        while target in aliases and target not in variables:
            if target in seen:
                raise CT2FormatError(f"{path}: alias cycle at {alias!r}")
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise CT2FormatError(f"{path}: alias {alias!r} points at missing variable {target!r}")
        variables[alias] = variables[target]
    if with_meta:
        return variables, {"version": version, "spec": spec, "revision": revision, "aliases": aliases}
    return variables


def _count_layers(names, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"_(\d+)/")
    found = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    n = len(found)
    if found != set(range(n)):
        raise CT2FormatError(f"layer indices under {prefix!r} are not 0..{n - 1}: {sorted(found)}")
    return n


def _heads(ct2: dict[str, np.ndarray], key: str, config: dict, config_key: str, state: int) -> int:
    if key in ct2 and ct2[key].ndim == 0:
        return int(ct2[key])
    if config_key in config:
        return int(config[config_key])
    if state % _HEAD_DIM:
        raise CT2FormatError(f"cannot infer the head count for width {state}")
    return state // _HEAD_DIM


def convert_to_openai_whisper(ct2_dir: str | Path, out_path: str | Path, name: str = "tiny.en") -> dict:
    """Rebuild an openai-whisper checkpoint from a faster-whisper (CTranslate2) model directory.

    Writes ``{"dims": {...}, "model_state_dict": {...}}`` with ``torch.save`` to ``out_path``,
    loadable with ``torch.load(out_path, weights_only=True)`` and ``whisper.load_model(str(out_path))``.
    Tensors keep the dtype stored in model.bin (float16 for the usual conversions; openai-whisper's
    own checkpoints are float16 too and ``load_model`` upcasts). ``name`` is used only for messages
    and for the ``.en`` vocabulary check. Returns dims (plain ints).
    """
    import torch
    import whisper.model as wm

    ct2_dir = Path(ct2_dir)
    out_path = Path(out_path)
    ct2, meta = read_ct2_model(ct2_dir / "model.bin", with_meta=True)
    if meta["spec"] != "WhisperSpec":
        raise CT2FormatError(f"{ct2_dir}: spec is {meta['spec']!r}, not WhisperSpec")
    config_path = ct2_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}

    for key, value in ct2.items():
        if value.dtype.kind == "i" and value.ndim > 0 and key.endswith("weight"):
            raise CT2FormatError(f"{ct2_dir}: {key} is quantized ({value.dtype}); convert from a float model")

    names = list(ct2)
    n_audio_layer = _count_layers(names, "encoder/layer")
    n_text_layer = _count_layers(names, "decoder/layer")
    conv1 = ct2["encoder/conv1/weight"]  # (n_audio_state, n_mels, 3)
    n_audio_state, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    n_audio_ctx = int(ct2["encoder/position_encodings/encodings"].shape[0])
    n_vocab, n_text_state = (int(d) for d in ct2["decoder/embeddings/weight"].shape)
    n_text_ctx = int(ct2["decoder/position_encodings/encodings"].shape[0])
    dims = {
        "n_mels": n_mels,
        "n_audio_ctx": n_audio_ctx,
        "n_audio_state": n_audio_state,
        "n_audio_head": _heads(ct2, "encoder/num_heads", config, "num_encoder_heads", n_audio_state),
        "n_audio_layer": n_audio_layer,
        "n_vocab": n_vocab,
        "n_text_ctx": n_text_ctx,
        "n_text_state": n_text_state,
        "n_text_head": _heads(ct2, "decoder/num_heads", config, "num_decoder_heads", n_text_state),
        "n_text_layer": n_text_layer,
    }
    if name.endswith(".en") and n_vocab != 51864:
        raise CT2FormatError(f"{name}: English-only Whisper has 51864 tokens, model.bin has {n_vocab}")

    state: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return ct2[key]

    def layer_norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"] = take(f"{src}/gamma")
        state[f"{dst}.bias"] = take(f"{src}/beta")

    def linear(dst: str, src: str, *, bias: bool = True) -> None:
        state[f"{dst}.weight"] = take(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = take(f"{src}/bias")

    def split_proj(dst: str, src: str, parts: tuple[str, ...], width: int) -> None:
        # CT2 stacks [query; key; value] rows (or [key; value] for cross-attention's memory side);
        # Whisper's key projection has no bias, so CT2 stored zeros there. Drop them, after checking.
        weight, bias = take(f"{src}/weight"), take(f"{src}/bias")
        if weight.shape != (width * len(parts), width) or bias.shape != (width * len(parts),):
            raise CT2FormatError(f"{src}: fused projection has shape {weight.shape}/{bias.shape}")
        for i, part in enumerate(parts):
            state[f"{dst}.{part}.weight"] = weight[i * width : (i + 1) * width]
            b = bias[i * width : (i + 1) * width]
            if part == "key":
                if np.any(b != 0):
                    raise CT2FormatError(f"{src}: key bias is not zero; openai-whisper's key has no bias")
            else:
                state[f"{dst}.{part}.bias"] = b

    def attention(dst: str, src: str, width: int, *, cross: bool) -> None:
        if cross:
            split_proj(dst, f"{src}/linear_0", ("query",), width)
            split_proj(dst, f"{src}/linear_1", ("key", "value"), width)
            linear(f"{dst}.out", f"{src}/linear_2")
        else:
            split_proj(dst, f"{src}/linear_0", ("query", "key", "value"), width)
            linear(f"{dst}.out", f"{src}/linear_1")
        layer_norm(f"{dst}_ln", f"{src}/layer_norm")

    def mlp(dst: str, src: str) -> None:
        linear(f"{dst}.0", f"{src}/linear_0")
        linear(f"{dst}.2", f"{src}/linear_1")
        layer_norm(f"{dst}_ln", f"{src}/layer_norm")

    # Encoder.
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    state["encoder.positional_embedding"] = take("encoder/position_encodings/encodings")
    for i in range(n_audio_layer):
        attention(f"encoder.blocks.{i}.attn", f"encoder/layer_{i}/self_attention", n_audio_state, cross=False)
        mlp(f"encoder.blocks.{i}.mlp", f"encoder/layer_{i}/ffn")
    layer_norm("encoder.ln_post", "encoder/layer_norm")

    # Decoder.
    state["decoder.token_embedding.weight"] = take("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = take("decoder/position_encodings/encodings")
    for i in range(n_text_layer):
        attention(f"decoder.blocks.{i}.attn", f"decoder/layer_{i}/self_attention", n_text_state, cross=False)
        attention(f"decoder.blocks.{i}.cross_attn", f"decoder/layer_{i}/attention", n_text_state, cross=True)
        mlp(f"decoder.blocks.{i}.mlp", f"decoder/layer_{i}/ffn")
    layer_norm("decoder.ln", "decoder/layer_norm")

    # Whisper ties the output projection to the token embedding; CT2 keeps it as an alias (or a copy).
    proj = take("decoder/projection/weight")
    if not np.array_equal(proj, state["decoder.token_embedding.weight"]):
        raise CT2FormatError("decoder/projection/weight differs from the token embedding; Whisper ties them")
    if "decoder/projection/bias" in ct2 and np.any(take("decoder/projection/bias") != 0):
        raise CT2FormatError("decoder/projection/bias is not zero; Whisper's logits have no bias")

    # Every float tensor must have been mapped; the rest are scalars / flags (num_heads, activation, ...).
    left = [k for k, v in ct2.items() if k not in used and v.ndim > 0 and v.dtype.kind == "f"]
    if left:
        raise CT2FormatError(f"{ct2_dir}: CT2 tensors with no openai-whisper home: {left}")

    model = wm.Whisper(wm.ModelDimensions(**dims))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CT2FormatError(f"state_dict mismatch: missing {missing}, unexpected {extra}")
    bad = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise CT2FormatError(f"shape mismatch (name, got, want): {bad}")

    tensors = {k: torch.from_numpy(np.ascontiguousarray(state[k])) for k in expected}
    result = model.load_state_dict(tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    dims = {k: int(v) for k, v in dims.items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    torch.save({"dims": dims, "model_state_dict": tensors}, tmp)
    tmp.replace(out_path)
    return dims


def set_alignment_heads(model, ct2_dir: str | Path) -> int:
    """Give a loaded openai-whisper ``model`` the alignment heads listed in the CT2 ``config.json``.

    ``whisper.load_model`` only knows alignment heads for its own model names; loaded by path it
    falls back to "every head of the last half of the decoder", which makes word timestamps
    worse. The heads are a non-persistent buffer, so they cannot travel in the checkpoint's
    state_dict (a strict load would reject them); call this after loading instead.
    Returns the number of heads set (0 when config.json lists none, and the model is left alone).
    """
    import torch

    config_path = Path(ct2_dir) / "config.json"
    heads = json.loads(config_path.read_text()).get("alignment_heads") if config_path.is_file() else None
    if not heads:
        return 0
    dims = model.dims
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[int(layer), int(head)] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return len(heads)


def speak(text: str, out_wav: str | Path, rate: int = 16000) -> Path:
    """Synthesize ``text`` with espeak-ng (en-us, 150 wpm) into a mono 16-bit ``rate`` Hz WAV."""
    out_wav = Path(out_wav)
    espeak = shutil.which("espeak-ng")
    sox = shutil.which("sox")
    if not espeak or not sox:
        raise RuntimeError("speak() needs espeak-ng and sox on PATH")
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        raw = Path(tmpdir) / "espeak.wav"
        subprocess.run(
            [espeak, "-v", "en-us", "-s", "150", "-w", str(raw), "--", text], check=True, capture_output=True
        )
        subprocess.run(
            [sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(out_wav)],
            check=True,
            capture_output=True,
        )
    return out_wav


_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def normalise_text(text: str) -> str:
    """Lowercase, drop punctuation (keeping in-word apostrophes), collapse whitespace."""
    text = _PUNCT.sub(" ", text.lower().replace("\u2019", "'"))
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference``, ignoring case and punctuation."""
    import jiwer

    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))
