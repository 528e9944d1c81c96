"""Whether the tests that need a real Docker engine can run here."""

from __future__ import annotations

import shutil
import subprocess


def docker_unavailable(images: tuple[str, ...] = ()) -> str | None:
    """Why a Docker engine with Compose v2 (and the given images) cannot be used, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine is running"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return "no docker compose v2 plugin"
    for image in images:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            return f"image {image} is not built (scripts/build-images)"
    return None
