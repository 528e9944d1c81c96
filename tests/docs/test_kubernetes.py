"""The Kubernetes example manifests are valid (strict schema validation, offline) and say
what the docs promise: a read-only models mount for the service, probes on the health
endpoints, the same settings for both containers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")  # the dev extra

FOLDER = Path(__file__).resolve().parents[2] / "docs" / "kubernetes"
MANIFESTS = sorted(FOLDER.rglob("*.yaml"))
VERSION = "1.36.0"


def documents(paths: list[Path] = MANIFESTS) -> list[dict]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(
    "doc",
    [(p, d) for p in MANIFESTS for d in documents([p])],
    ids=lambda pd: f"{pd[0].relative_to(FOLDER)}:{pd[1]['kind']}/{pd[1]['metadata']['name']}",
)
def test_manifest_is_valid(doc: tuple[Path, dict]) -> None:
    kubernetes_validate.validate(doc[1], VERSION, strict=True)


def test_the_image_volume_variant_mounts_the_models_image_read_only_without_downloader() -> None:
    docs = documents(sorted((FOLDER / "image-volume").glob("*.yaml")))
    spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in spec  # nothing downloads
    models = next(v for v in spec["volumes"] if v["name"] == "models")
    assert set(models) == {"name", "image"} and models["image"]["reference"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert not any("persistentVolumeClaim" in v for v in spec["volumes"])
    assert models["image"]["pullPolicy"] == "IfNotPresent"
    # the same settings as the other variants: the service checks the image against them
    assert spec["containers"][0]["envFrom"] == [{"configMapRef": {"name": "modelcache"}}]


def test_the_validation_sees_the_image_volume_field() -> None:
    """A control for the strict validation above: the 1.30 schemas, from before image
    volumes (ImageVolumeSource came in 1.31), reject the variant C Deployment."""
    deployment = next(
        d for d in documents(sorted((FOLDER / "image-volume").glob("*.yaml"))) if d["kind"] == "Deployment"
    )
    with pytest.raises(kubernetes_validate.ValidationError, match="'image' was unexpected"):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


def test_every_manifest_is_in_the_docs_table() -> None:
    text = (FOLDER.parent / "kubernetes.md").read_text()
    missing = [str(p.relative_to(FOLDER)) for p in MANIFESTS if f"`{p.relative_to(FOLDER)}`" not in text]
    assert not missing, f"docs/kubernetes.md does not list {missing}"


def test_service_mounts_the_volume_read_only_with_probes() -> None:
    deployment = next(d for d in documents(sorted(FOLDER.glob("*.yaml"))) if d["kind"] == "Deployment")
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


def test_both_deployments_roll_without_losing_capacity_and_probe_alike() -> None:
    deployments = [d for d in documents() if d["kind"] == "Deployment"]
    assert len(deployments) == 2
    for d in deployments:
        assert d["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    probes = [
        {k: c[k] for k in ("readinessProbe", "livenessProbe", "startupProbe") if k in c}
        for d in deployments
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert probes[0] == probes[1] and "readinessProbe" in probes[0]
