"""The real-size benchmark models have the real architectures, exactly, and the service's own
engines load and run them offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # 15-20 s, building the models into an empty cache included

for _module in ("torch", "transformers", "sentencepiece", "PIL", "safetensors", "whisper", "faster_whisper"):
    pytest.importorskip(_module)

from modelcache.service.engines.base import LoadSpec  # noqa: E402
from modelcache.testing import realsize_models  # noqa: E402

#: openai-whisper's ``base`` checkpoint holds this many parameters (its published 74 M counts
#: the tied output projection twice); ``base.en`` has one token, 512 weights, fewer.
WHISPER_BASE_PARAMETERS = 71_825_920
#: transformers' SiglipModel with google/siglip-base-patch16-224's configuration.
SIGLIP_BASE_PARAMETERS = 203_155_970


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, also for a huggingface_hub that was imported before the variable was set."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors file's header, without reading the weights."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


def numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def test_siglip_base_has_the_real_architecture() -> None:
    import torch
    from transformers import AutoConfig, SiglipConfig, SiglipModel

    repo = realsize_models.siglip_base_repo()
    assert sorted(p.name for p in repo.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "spiece.model",
        "tokenizer_config.json",
    ]
    # transformers documents SiglipConfig's defaults as google/siglip-base-patch16-224's: an
    # independent statement of the real sizes, checked against the constant and the file.
    reference = SiglipConfig()
    ours = AutoConfig.from_pretrained(repo, local_files_only=True)
    for tower in ("text_config", "vision_config"):
        for key, value in realsize_models.SIGLIP_BASE_CONFIG[tower].items():
            assert getattr(getattr(reference, tower), key) == value, (tower, key)
            assert getattr(getattr(ours, tower), key) == value, (tower, key)
    with torch.device("meta"):
        real = SiglipModel(reference)
    expected = {name: tuple(t.shape) for name, t in real.state_dict().items()}
    shapes = safetensors_shapes(repo / "model.safetensors")
    assert shapes == expected
    assert sum(numel(s) for s in shapes.values()) == sum(p.numel() for p in real.parameters())
    assert sum(p.numel() for p in real.parameters()) == SIGLIP_BASE_PARAMETERS
    assert json.loads((repo / "preprocessor_config.json").read_text())["size"] == {"height": 224, "width": 224}


def test_whisper_base_has_the_real_architecture() -> None:
    import torch
    from whisper.model import ModelDimensions, Whisper

    real = Whisper(ModelDimensions(**realsize_models.whisper_base_dims("base")))
    assert sum(p.numel() for p in real.parameters()) == WHISPER_BASE_PARAMETERS

    checkpoint = torch.load(realsize_models.whisper_base_checkpoint("base.en"), map_location="cpu", weights_only=True)
    assert checkpoint["dims"] == {**realsize_models.WHISPER_BASE_DIMS, "n_vocab": 51864}
    english = Whisper(ModelDimensions(**checkpoint["dims"]))
    state = checkpoint["model_state_dict"]
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in english.state_dict().items()}
    english.load_state_dict(state)  # strict: every tensor (the encoder's positions are a buffer, not a parameter)
    assert sum(p.numel() for p in english.parameters()) == WHISPER_BASE_PARAMETERS - 512
    assert {v.dtype for v in state.values()} == {torch.float16}  # as openai's own checkpoints


def test_faster_whisper_base_en_holds_the_same_weights(tmp_path: Path) -> None:
    """Rebuilt from model.bin into openai-whisper's names, every tensor equals the checkpoint's."""
    import torch

    from tests.support.whisper_ckpt import convert_to_openai_whisper

    repo = realsize_models.faster_whisper_base_en_repo()
    assert {"config.json", "model.bin", "tokenizer.json"} <= {p.name for p in repo.iterdir()}
    config = json.loads((repo / "config.json").read_text())
    assert config["alignment_heads"] == [[3, 3], [4, 7], [5, 1], [5, 5], [5, 7]]  # openai-whisper's base.en
    convert_to_openai_whisper(repo, tmp_path / "back.pt", name="base.en")
    back = torch.load(tmp_path / "back.pt", map_location="cpu", weights_only=True)
    original = torch.load(realsize_models.whisper_base_checkpoint("base.en"), map_location="cpu", weights_only=True)
    assert back["dims"] == original["dims"]
    assert back["model_state_dict"].keys() == original["model_state_dict"].keys()
    for name, tensor in original["model_state_dict"].items():
        assert torch.equal(back["model_state_dict"][name], tensor), name


def test_the_service_engines_load_and_run_them(offline: None) -> None:
    import numpy as np
    from PIL import Image

    from modelcache.service.engines.vision import VisionEmbedder
    from modelcache.service.engines.whisper_faster import FasterWhisper
    from modelcache.service.engines.whisper_openai import OpenAIWhisper

    vision = VisionEmbedder(LoadSpec(name="siglip", path=realsize_models.siglip_base_repo(), device="cpu"))
    assert vision.dimensions == 768
    images = vision.embed_images([Image.new("RGB", (320, 200), (200, 30, 30)), Image.new("RGB", (64, 64), "white")])
    assert images.shape == (2, 768)
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(images[0], images[1])
    texts, tokens = vision.embed(["a photo of a cat", "a dog"])
    assert texts.shape == (2, 768) and all(0 < t <= 64 for t in tokens)

    audio = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32) * 0.1
    checkpoint = realsize_models.whisper_base_checkpoint("base.en")
    openai = OpenAIWhisper(LoadSpec(name="whisper-1", path=checkpoint, device="cpu", variant="base.en"))
    assert sum(p.numel() for p in openai.model.parameters()) == WHISPER_BASE_PARAMETERS - 512
    assert not openai.multilingual
    assert openai.transcribe(audio).text == ""  # random weights made to stop at once

    faster = FasterWhisper(
        LoadSpec(name="whisper-1", path=realsize_models.faster_whisper_base_en_repo(), device="cpu", threads=2)
    )
    assert not faster.multilingual
    assert faster.transcribe(audio).text == ""


def test_cached_and_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two caches built apart hold the same bytes; a second call returns the kept file as it is."""
    sums = []
    for name in ("a", "b"):
        monkeypatch.setenv("MODELCACHE_REALSIZE_CACHE", str(tmp_path / name))
        path = realsize_models.whisper_base_checkpoint("base")
        assert path == tmp_path / name / realsize_models.VERSION / "whisper-base" / "base.pt"
        sums.append(hashlib.sha256(path.read_bytes()).hexdigest())
        stamp = path.stat().st_mtime_ns
        assert realsize_models.whisper_base_checkpoint("base") == path
        assert path.stat().st_mtime_ns == stamp
        assert [p.name for p in path.parent.parent.iterdir()] == ["whisper-base"]  # no partial folder left
    assert sums[0] == sums[1]
    with pytest.raises(ValueError, match="not a Whisper base name"):
        realsize_models.whisper_base_dims("small")
