"""service/zygote.py: torch models' processes are forked from one process that imported
the libraries once; the others start as fresh interpreters."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from modelcache.service.engines.base import LoadSpec
from modelcache.service.models import zygote
from modelcache.service.models.worker import WorkerSpec
from tests.support.service import Service

TORCH_MODELS = ("whisper-tiny.en", "sentence-transformers/all-MiniLM-L6-v2", "google/siglip-base-patch16-224")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow  # starts `modelcache serve`
def test_torch_models_come_from_the_zygote_and_yunet_does_not(server: Service) -> None:
    health = httpx2.get(f"{server.url}/health").json()
    zygote_info = health["zygote"]
    assert zygote_info and zygote_info["memory_bytes"] > 10_000_000
    pid = zygote_info["pid"]
    assert parent_of(pid) == server.proc.pid
    assert "libtorch" in maps(pid)  # it imported torch, for its children to inherit
    models = health["models"]
    for model in TORCH_MODELS:
        assert parent_of(models[model]["pid"]) == pid, model
    yunet = models["yunet"]["pid"]
    assert parent_of(yunet) == server.proc.pid
    assert "libtorch" not in maps(yunet)  # a fresh interpreter: no torch pages for OpenCV's model
    assert "libtorch" not in maps(server.proc.pid)  # the HTTP process stays light


def spec(engine: str, path: Path) -> WorkerSpec:
    return WorkerSpec("m", "text-embedding", engine, LoadSpec("m", path, "cpu", engine), "cpu")


def test_what_the_zygote_imports_follows_the_models(tmp_path: Path) -> None:
    bert, siglip, broken = tmp_path / "bert", tmp_path / "siglip", tmp_path / "broken"
    for path, config in ((bert, {"model_type": "bert"}), (siglip, {"model_type": "siglip"}), (broken, None)):
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config) if config else "{not json")
    wanted = zygote.preload_for(
        [
            spec("transformers", bert),
            spec("transformers", siglip),
            spec("transformers", broken),
            spec("transformers", bert),
            spec("opencv-yunet", tmp_path),
        ]
    )
    assert wanted["families"] == ["bert", "siglip"]  # once each; an unreadable config adds none
    assert wanted["modules"].count("torch") == 1 and "transformers" in wanted["modules"]
    assert zygote.preload_for([spec("opencv-yunet", tmp_path), spec("faster-whisper", tmp_path)]) == {
        "modules": [],
        "families": [],
    }
    assert "whisper" in zygote.preload_for([spec("openai-whisper", tmp_path / "tiny.en.pt")])["modules"]


def test_start_methods() -> None:
    assert zygote.start_method("transformers") == zygote.start_method("openai-whisper") == "forkserver"
    assert zygote.start_method("faster-whisper") == zygote.start_method("opencv-yunet") == "spawn"


@pytest.mark.slow  # imports torch and transformers in a fresh interpreter
def test_the_preload_imports_what_it_is_told_and_skips_what_fails() -> None:
    import os
    import subprocess
    import sys

    wanted = {"modules": ["torch", "no_such_module_here"], "families": ["bert", "no-such-family"]}
    code = (
        "import sys, modelcache.service.models._preload; "
        "print(all(m in sys.modules for m in ('torch', 'transformers.models.bert.modeling_bert')))"
    )
    env = {**os.environ, zygote.ENV: json.dumps(wanted)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


@pytest.mark.slow  # starts `modelcache serve`
def test_the_zygote_ends_with_the_service(service_volume: dict, tmp_path: Path) -> None:
    from tests.support.service import start_service

    env = {**service_volume, "MODELCACHE_WHISPER": "none", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none"}
    service = start_service(env, tmp_path / "log")
    try:
        pid = httpx2.get(f"{service.url}/health").json()["zygote"]["pid"]
    finally:
        service.stop()
    assert not Path(f"/proc/{pid}").exists()  # ended and reaped by the service, not left to init
