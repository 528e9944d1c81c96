"""The tiny model builders produce repos that load offline and run, deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.testing.tiny_models import (
    YUNET_STRIDES,
    tiny_clip_repo,
    tiny_siglip_repo,
    write_repo,
    yunet_brightness_for_score,
    yunet_like_onnx,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXTS = ["a photo of a cat", "A face, seen from the left, in the rain at night"]


def needs_transformers() -> None:
    for module in ("torch", "transformers", "sentencepiece", "PIL"):
        pytest.importorskip(module)


@pytest.fixture(scope="module")
def siglip_files() -> dict[str, bytes]:
    needs_transformers()
    return tiny_siglip_repo()


@pytest.fixture(scope="module")
def clip_files() -> dict[str, bytes]:
    needs_transformers()
    return tiny_clip_repo()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode, also for a huggingface_hub that was imported before the variable was set."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def hub_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay ``files`` out as one snapshot of ``repo_id`` in a hub cache under ``root``."""
    repo_dir = root / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    write_repo(files, repo_dir / "snapshots" / COMMIT)
    return root


def sample_images():
    from PIL import Image

    red = Image.new("RGB", (48, 40), (220, 30, 30))
    ramp = Image.linear_gradient("L").resize((37, 53)).convert("RGB")
    return [red, ramp]


def embed(model, processor, *, padding):
    import torch

    images = processor(images=sample_images(), return_tensors="pt")
    texts = processor(text=TEXTS, padding=padding, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        image_features = model.get_image_features(pixel_values=images["pixel_values"]).pooler_output
        text_features = model.get_text_features(**texts).pooler_output
    return image_features, text_features


def check_features(model, processor, dim: int, *, padding) -> None:
    import torch

    first = embed(model, processor, padding=padding)
    second = embed(model, processor, padding=padding)
    for features, again in zip(first, second, strict=True):
        assert features.shape == (2, dim)
        assert torch.isfinite(features).all()
        assert torch.equal(features, again)
        assert not torch.allclose(features[0], features[1])  # the inputs matter


def test_siglip_repo_files(siglip_files: dict[str, bytes]) -> None:
    assert {"config.json", "model.safetensors", "spiece.model", "tokenizer_config.json"} <= set(siglip_files)
    assert {"processor_config.json", "preprocessor_config.json"} & set(siglip_files)
    assert all(isinstance(v, bytes) and v for v in siglip_files.values())


def test_siglip_loads_offline_from_hub_cache(siglip_files, tmp_path: Path, offline) -> None:
    import torch
    from transformers import AutoModel, AutoProcessor

    cache = hub_cache(tmp_path / "hub", "tiny/siglip", siglip_files)
    processor = AutoProcessor.from_pretrained("tiny/siglip", cache_dir=cache, local_files_only=True)
    model = AutoModel.from_pretrained("tiny/siglip", cache_dir=cache, local_files_only=True).eval()
    assert type(model).__name__ == "SiglipModel"
    assert type(processor).__name__ == "SiglipProcessor"
    assert type(processor.tokenizer).__name__ == "SiglipTokenizer"

    enc = processor.tokenizer(["a photo of a cat"], padding="max_length", truncation=True)
    ids = enc["input_ids"][0]
    assert len(ids) == 16 and ids[-1] == processor.tokenizer.eos_token_id
    assert processor.tokenizer.unk_token_id not in ids
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat"

    check_features(model, processor, 32, padding="max_length")

    # The same snapshot, loaded by its directory path.
    by_path = AutoModel.from_pretrained(cache / "models--tiny--siglip" / "snapshots" / COMMIT, local_files_only=True)
    with torch.inference_mode():
        pixels = processor(images=sample_images(), return_tensors="pt")["pixel_values"]
        assert torch.equal(
            model.get_image_features(pixel_values=pixels).pooler_output,
            by_path.eval().get_image_features(pixel_values=pixels).pooler_output,
        )


def test_clip_loads_offline_from_hub_cache(clip_files, tmp_path: Path, offline) -> None:
    from transformers import AutoModel, AutoProcessor

    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= set(clip_files)
    cache = hub_cache(tmp_path / "hub", "tiny/clip", clip_files)
    processor = AutoProcessor.from_pretrained("tiny/clip", cache_dir=cache, local_files_only=True)
    model = AutoModel.from_pretrained("tiny/clip", cache_dir=cache, local_files_only=True).eval()
    assert type(model).__name__ == "CLIPModel"
    assert type(processor).__name__ == "CLIPProcessor"

    tokenizer = processor.tokenizer
    ids = tokenizer("a photo of a cat")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<|startoftext|>",
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "cat</w>",
        "<|endoftext|>",
    ]
    spelt = tokenizer("Zebra!")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(spelt)[1:-1] == ["z", "e", "b", "r", "a</w>", "!</w>"]
    assert tokenizer.decode(spelt, skip_special_tokens=True) == "zebra !"

    check_features(model, processor, 16, padding=True)


def test_builds_are_byte_identical(siglip_files, clip_files) -> None:
    pytest.importorskip("onnx")
    again = tiny_siglip_repo()
    assert again["model.safetensors"] == siglip_files["model.safetensors"]
    assert again == siglip_files
    assert tiny_clip_repo() == clip_files
    assert yunet_like_onnx() == yunet_like_onnx()
    assert yunet_like_onnx(None) == yunet_like_onnx(None)


# --------------------------------------------------------------------------------------------
# YuNet-like ONNX in cv2.FaceDetectorYN
# --------------------------------------------------------------------------------------------

SCORE_THRESHOLD = 0.9


def test_yunet_like_io() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(yunet_like_onnx((640, 480)))

    def dims(value):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]

    (inp,) = model.graph.input
    assert inp.name == "input" and dims(inp) == [1, 3, 480, 640]
    heads = (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
    assert {o.name: dims(o) for o in model.graph.output} == {
        f"{head}_{s}": [1, (480 // s) * (640 // s), width] for head, width in heads for s in YUNET_STRIDES
    }
    (dynamic,) = onnx.load_from_string(yunet_like_onnx(None)).graph.input
    assert dims(dynamic) == [1, 3, "height", "width"]
    with pytest.raises(ValueError):
        yunet_like_onnx((300, 300))


@pytest.mark.parametrize("declared", [(320, 320), None], ids=["static-320", "symbolic"])
def test_yunet_like_detects_bright_squares(declared, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")

    path = tmp_path / "face_detection_yunet_2023mar.onnx"
    path.write_bytes(yunet_like_onnx(declared))
    detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), SCORE_THRESHOLD, 0.3, 5000)

    def detect(image):
        detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = detector.detect(image)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    threshold_brightness = yunet_brightness_for_score(SCORE_THRESHOLD)
    for width, height in [(320, 320), (200, 150)]:  # the second is padded to 224 x 160 by OpenCV
        black = np.zeros((height, width, 3), np.uint8)
        assert len(detect(black)) == 0

        square = black.copy()
        square[64:128, 96:160] = 255
        faces = detect(square)
        assert faces.shape[1] == 15
        assert len(faces) >= 1 and (faces[:, 14] >= SCORE_THRESHOLD).all()
        x, y, w, h = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
        assert ((x >= 96) & (y >= 64) & (x + w <= 160) & (y + h <= 128)).all()  # every box inside the square
        marks_x, marks_y = faces[:, 4:14:2], faces[:, 5:14:2]
        assert ((marks_x >= x[:, None]) & (marks_x <= (x + w)[:, None])).all()
        assert ((marks_y >= y[:, None]) & (marks_y <= (y + h)[:, None])).all()
        # The grid-aligned 64 x 64 square is 2 x 2 cells of 32 pixels, 4 x 4 of 16, 8 x 8 of 8;
        # NMS keeps them all (same-stride cells do not overlap, nested ones have IoU <= 0.25).
        sizes, counts = np.unique(w, return_counts=True)
        assert dict(zip(sizes.tolist(), counts.tolist(), strict=True)) == {8.0: 64, 16.0: 16, 32.0: 4}
        assert [96.0, 64.0, 32.0, 32.0] in faces[:, :4].tolist()

        # Brightness decides: just below the threshold's brightness nothing, just above, faces.
        dim = black.copy()
        dim[64:128, 96:160] = int(threshold_brightness) - 2
        assert len(detect(dim)) == 0
        bright = black.copy()
        bright[64:128, 96:160] = int(threshold_brightness) + 3
        assert len(detect(bright)) == 84


def test_tiny_bert_with_its_own_tokenizer_loads_in_sentence_transformers(tmp_path: Path) -> None:
    needs_transformers()
    from sentence_transformers import SentenceTransformer

    from modelcache.testing.tiny_models import tiny_bert_repo

    files = tiny_bert_repo(None)
    assert files == tiny_bert_repo(None)  # deterministic
    model = SentenceTransformer(str(write_repo(files, tmp_path / "bert")), device="cpu", local_files_only=True)
    vectors = model.encode(TEXTS, normalize_embeddings=False)
    assert vectors.shape == (2, 64)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-4  # the repo's Normalize module ran
    pieces = model.tokenizer.tokenize("A photo of a cat, zebra!")
    assert "[UNK]" not in pieces and "photo" in pieces  # corpus words whole, others spelt out


def test_tiny_whisper_checkpoint_loads_and_answers_at_once() -> None:
    needs_transformers()
    whisper = pytest.importorskip("whisper")
    import io

    import numpy as np
    import torch
    from whisper.model import ModelDimensions, Whisper

    from modelcache.testing.tiny_models import tiny_whisper_checkpoint

    data = tiny_whisper_checkpoint()
    assert data == tiny_whisper_checkpoint()
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])  # strict: every tensor, right shapes
    model.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"])
    assert not model.is_multilingual
    audio = np.random.default_rng(0).standard_normal(16000 * 35).astype(np.float32) * 0.1
    result = whisper.transcribe(model.float(), audio, fp16=False)
    assert result["text"] == ""
    assert [s["temperature"] for s in result["segments"]] == [0.0, 0.0]  # no fallback decoding
