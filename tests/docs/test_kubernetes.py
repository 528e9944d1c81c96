"""The Kubernetes example manifests are valid (strict schema validation, offline) and say
what the docs promise: a read-only models mount for the service, probes on the health
endpoints, the same settings for both containers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")  # the dev extra

MANIFESTS = sorted((Path(__file__).resolve().parents[2] / "docs" / "kubernetes").glob("*.yaml"))
VERSION = "1.31.0"


def documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid(doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_service_mounts_the_volume_read_only_with_probes() -> None:
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    service = spec["containers"][0]
    models = next(m for m in service["volumeMounts"] if m["name"] == "models")
    assert models["readOnly"] is True
    assert service["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert service["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert service["livenessProbe"]["httpGet"]["path"] == "/health/live"
    downloader = spec["initContainers"][0]
    assert downloader["envFrom"] == service["envFrom"]  # one plan for both
    assert service["securityContext"]["readOnlyRootFilesystem"] is True
