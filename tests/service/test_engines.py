"""Engines on their own (no HTTP): pooling as declared, CLIP as well as SigLIP, audio decoding."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from modelcache.service.engines.audio import decode_audio
from modelcache.service.engines.base import InputError, LoadSpec
from modelcache.service.engines.text import POOLING_MODES, Pooling, UnsupportedModel, pool, read_pooling
from modelcache.service.engines.vision import VisionEmbedder
from modelcache.testing import tiny_models


def test_pooling_modes_follow_the_declared_order() -> None:
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])  # the third token is padding

    def pooled(*modes: str, normalize: bool = False) -> list[list[float]]:
        return pool(hidden, mask, Pooling(modes, normalize, None)).tolist()

    assert pooled("cls_token") == [[1.0, 2.0]]
    assert pooled("mean_tokens") == [[2.0, 3.0]]
    assert pooled("max_tokens") == [[3.0, 4.0]]
    assert pooled("lasttoken") == [[3.0, 4.0]]
    assert np.allclose(pooled("mean_sqrt_len_tokens"), [[4 / 2**0.5, 6 / 2**0.5]])
    assert pooled("cls_token", "mean_tokens") == [[1.0, 2.0, 2.0, 3.0]]
    assert np.allclose(pooled("mean_tokens", normalize=True), [[2 / 13**0.5, 3 / 13**0.5]])


def _st_repo(tmp_path: Path, pooling: dict, modules: list[dict]) -> Path:
    (tmp_path / "1_Pooling").mkdir(parents=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    return tmp_path


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def test_read_pooling_from_sentence_transformers_config(tmp_path: Path) -> None:
    repo = _st_repo(tmp_path, {"pooling_mode_cls_token": True}, [TRANSFORMER, POOLING])
    assert read_pooling(repo).modes == ("cls_token",) and read_pooling(repo).normalize is False
    repo = _st_repo(tmp_path / "b", {"pooling_mode_mean_tokens": True}, [TRANSFORMER, POOLING, NORMALIZE])
    assert read_pooling(repo).modes == ("mean_tokens",) and read_pooling(repo).normalize is True
    assert read_pooling(tmp_path / "plain").modes == ("mean_tokens",)  # no modules.json: mean + normalise
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    with pytest.raises(UnsupportedModel, match="Dense"):
        read_pooling(_st_repo(tmp_path / "c", {"pooling_mode_mean_tokens": True}, [TRANSFORMER, POOLING, dense]))
    assert set(POOLING_MODES) >= {"cls_token", "mean_tokens"}


def test_clip_embeds_images_and_text_in_one_space(tmp_path: Path) -> None:
    path = tiny_models.write_repo(tiny_models.tiny_clip_repo(), tmp_path / "clip")
    engine = VisionEmbedder(LoadSpec("clip", path, "cpu"))
    from PIL import Image

    images = [Image.fromarray(np.full((30, 30, 3), v, np.uint8)) for v in (0, 200)]
    vectors = engine.embed_images(images)
    texts, tokens = engine.embed(["a photo of a cat", "a dog"])
    assert vectors.shape == (2, engine.dimensions) == texts.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1]) and tokens[0] > tokens[1]
    assert np.array_equal(engine.embed_images(images), vectors)  # deterministic


def test_decode_audio_rejects_what_is_not_audio() -> None:
    with pytest.raises(InputError) as empty:
        decode_audio(b"")
    assert not empty.value.unsupported_media
    with pytest.raises(InputError) as junk:
        decode_audio(b"definitely not audio" * 100)
    assert junk.value.unsupported_media


def test_decode_audio_resamples_to_16k_mono() -> None:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=44100, layout="stereo")
        samples = (np.sin(np.linspace(0, 440 * 2 * np.pi, 44100)) * 20000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([samples, samples]).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    audio = decode_audio(out.getvalue())
    assert audio.dtype == np.float32 and abs(len(audio) - 16000) < 200
    assert 0.5 < np.abs(audio).max() <= 1.0
