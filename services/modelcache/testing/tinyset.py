"""The offline tiny model set: random weights of real architectures, served by a local Hub.

``python tinyset.py --root DIR --port 8080`` (run by :class:`modelcache.testing.ModelCacheStack`
inside the service image, which has torch, transformers and sentencepiece) builds

- ``modelcache-tiny/bert-embedder``: a BERT text-embedding repo (hidden 64, 2 layers, its own
  WordPiece tokenizer, mean pooling + normalise as sentence-transformers declares them);
- ``modelcache-tiny/siglip``: a SigLIP image/text repo (hidden 32, 2 layers, 32x32 images);
- ``tiny.en.pt``: an openai-whisper checkpoint with tiny.en's vocabulary and 4x6 text heads;

under ``DIR/models/<org>/<name>/`` and ``DIR/files/whisper/models/<sha256>/tiny.en.pt``, prints
one line ``modelcache-tinyset: {json}`` (the settings that point the downloader at it), then
serves them with :mod:`modelcache.testing.hfmirror` on ``0.0.0.0:PORT`` until SIGTERM.

The downloader fetches and verifies them like any Hub repo (sha256 against the mirror's
``X-Linked-Etag``, whisper against the sha256 in its URL) and writes a real lock; the service
verifies the volume and loads them as it would real models. About 6.5 MB in all; building
takes a few seconds (mostly importing torch). The same library versions give byte-identical
files, so a kept volume stays valid across runs.

Standard library only at import time (besides the two sibling modules it is shipped with),
so it can be copied into a container with ``tiny_models.py`` and ``hfmirror.py`` and run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

if __package__:
    from modelcache.testing import hfmirror, tiny_models
else:  # run as a script next to its siblings (inside a container)
    import hfmirror  # type: ignore[no-redef]
    import tiny_models  # type: ignore[no-redef]

#: The host name the tiny Hub answers to on the stack's network.
HUB_HOST = "modelcache-tiny-hub"
HUB_PORT = 8080
TEXT_EMBEDDING = "modelcache-tiny/bert-embedder"  # = modelcache.testing.TINY_TEXT_EMBEDDING
VISION = "modelcache-tiny/siglip"  # = modelcache.testing.TINY_VISION
WHISPER = "tiny.en"
#: What the line printed once the set is served starts with.
READY_PREFIX = "modelcache-tinyset: "


def settings(whisper_sha256: str, hub: str = f"http://{HUB_HOST}:{HUB_PORT}") -> dict[str, str]:
    """The downloader's (and service's) settings for the tiny set served at ``hub``."""
    return {
        "HF_ENDPOINT": hub,
        "MODELCACHE_WHISPER": WHISPER,
        "MODELCACHE_ASR_ENGINE": "openai-whisper",
        "MODELCACHE_WHISPER_URL": f"{hub}/whisper/models/{whisper_sha256}/{WHISPER}.pt",
        "MODELCACHE_TEXT_EMBEDDING": TEXT_EMBEDDING,
        "MODELCACHE_VISION": VISION,
        "MODELCACHE_FACE": "none",
        "MODELCACHE_MLX": "",
    }


def build(root: Path) -> str:
    """Write the tiny set under ``root`` (hfmirror's ``--root`` layout); return whisper's sha256."""
    repos = {
        TEXT_EMBEDDING: tiny_models.tiny_bert_repo(None),
        VISION: {**tiny_models.tiny_siglip_repo(), "README.md": b"# modelcache tiny SigLIP (random weights)\n"},
    }
    repos[TEXT_EMBEDDING]["README.md"] = b"# modelcache tiny BERT embedder (random weights)\n"
    for repo, files in repos.items():
        tiny_models.write_repo(files, root / "models" / repo)
    checkpoint = tiny_models.tiny_whisper_checkpoint()
    sha = hashlib.sha256(checkpoint).hexdigest()
    target = root / "files" / "whisper" / "models" / sha / f"{WHISPER}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(checkpoint)
    return sha


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinyset", description="build the tiny model set and serve it")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=HUB_PORT)
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args(argv)
    sha = build(args.root)
    print(READY_PREFIX + json.dumps({"whisper_sha256": sha}), flush=True)
    return hfmirror.main(["--host", args.host, "--port", str(args.port), "--root", str(args.root)])


if __name__ == "__main__":
    sys.exit(main())
