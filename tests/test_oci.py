"""`modelcache push` and `fetch --from oci://...`: against a real registry (CNCF distribution)."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

import httpx2
import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_VERIFY, ConfigError
from modelcache.fetch import oci
from modelcache.fetch.policy import Policy
from modelcache.fetch.registry import Registry as Client
from modelcache.fetch.registry import docker_credentials
from modelcache.layout import Layout
from modelcache.settings import OciReference, Settings, parse_oci_reference
from modelcache.volume_lock import read_lock
from tests.conftest import Volume, run_cli
from tests.support.fixtures import MirrorModels
from tests.support.registry import Registry

REPO = "site/models"
TAG = "v1"


# --- the artifact ---------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every file and link of a volume (its bookkeeping left out but the lock), with its content or target."""
    out: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".modelcache") and rel != ".modelcache/lock.json":
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def get_json(registry: Registry, path: str, accept: str = "application/vnd.oci.image.manifest.v1+json") -> dict:
    request = urllib.request.Request(registry.url(path), headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get_bytes(registry: Registry, path: str) -> bytes:
    with urllib.request.urlopen(registry.url(path), timeout=10) as response:
        return response.read()


def put_manifest(registry: Registry, repo: str, tag: str, manifest: dict) -> None:
    raw = json.dumps(manifest).encode()
    response = httpx2.put(
        registry.url(f"/v2/{repo}/manifests/{tag}"),
        content=raw,
        headers={"Content-Type": manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")},
    )
    assert response.status_code == 201, response.text


def upload_blob(registry: Registry, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = httpx2.post(registry.url(f"/v2/{repo}/blobs/uploads/"))
    assert started.status_code == 202
    location = httpx2.URL(registry.url("/")).join(started.headers["location"])
    done = httpx2.put(str(location.copy_merge_params({"digest": digest})), content=data)
    assert done.status_code == 201, done.text
    return digest


@pytest.fixture(scope="module")
def pushed(registry: Registry, _warm_template: Path, _mirror_models: MirrorModels) -> dict:
    """The session's complete volume, pushed once: `push --json`'s answer."""
    proc = run_cli(
        "push", registry.ref(REPO, TAG), "--json", env={**_mirror_models.env(_warm_template), **registry.env}
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def empty(tmp_path: Path, models: MirrorModels, registry: Registry) -> Volume:
    """An empty volume configured like the pushed one, that may reach the registry."""
    root = tmp_path / "models"
    return Volume(root, {**models.env(root), **registry.env})


@pytest.mark.slow
def test_push_publishes_one_uncompressed_layer_per_file(pushed: dict, registry: Registry, _warm_template: Path) -> None:
    lock = read_lock(Layout(_warm_template))
    assert lock is not None
    assert pushed["reference"] == registry.ref(REPO, TAG)
    unique = {f.sha256: f.size for f in lock.files}
    lock_bytes = (_warm_template / ".modelcache/lock.json").read_bytes()
    assert pushed["bytes_sent"] + pushed["bytes_skipped"] == sum(unique.values()) + len(lock_bytes) + _config_size(
        registry
    )
    assert pushed["blobs"] == len(unique) + 2
    manifest = get_json(registry, f"/v2/{REPO}/manifests/{TAG}")
    assert hashlib.sha256(get_bytes_manifest(registry)).hexdigest() == pushed["digest"].removeprefix("sha256:")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    layers = manifest["layers"]
    paths = [layer["annotations"]["org.cncf.model.filepath"] for layer in layers]
    assert paths == sorted(paths)
    by_path = {layer["annotations"]["org.cncf.model.filepath"]: layer for layer in layers}
    assert set(by_path) == {f.path for f in lock.files} | {".modelcache/lock.json"}
    for f in lock.files:
        assert by_path[f.path]["digest"] == "sha256:" + f.sha256 and by_path[f.path]["size"] == f.size
    types = {p: layer["mediaType"] for p, layer in by_path.items()}
    assert types[".modelcache/lock.json"] == "application/vnd.modelcache.lock.v1+json"
    assert (
        next(t for p, t in types.items() if p.endswith("model.safetensors"))
        == "application/vnd.cncf.model.weight.v1.raw"
    )
    assert types["whisper/tiny.en.pt"] == "application/vnd.cncf.model.weight.v1.raw"
    assert (
        next(t for p, t in types.items() if p.endswith("/config.json"))
        == "application/vnd.cncf.model.weight.config.v1.raw"
    )
    assert next(t for p, t in types.items() if p.endswith("/README.md")) == "application/vnd.cncf.model.doc.v1.raw"
    # the lock layer is the volume's lock, byte for byte; the blobs are the files' bytes, uncompressed
    lock_layer = by_path[".modelcache/lock.json"]
    assert (
        get_bytes(registry, f"/v2/{REPO}/blobs/{lock_layer['digest']}")
        == (_warm_template / ".modelcache/lock.json").read_bytes()
    )
    readme = next(p for p in by_path if p.endswith("/README.md"))
    assert (
        get_bytes(registry, f"/v2/{REPO}/blobs/{by_path[readme]['digest']}") == (_warm_template / readme).read_bytes()
    )
    # the ModelPack config: descriptor, config, and the layers' digests in order
    config = json.loads(get_bytes(registry, f"/v2/{REPO}/blobs/{manifest['config']['digest']}"))
    assert set(config) == {"descriptor", "config", "modelfs"}
    assert config["modelfs"] == {"type": "layers", "diffIds": [layer["digest"] for layer in layers]}
    models = json.loads(manifest["annotations"]["io.modelcache.models"])
    assert {m["source"] for m in models} == {a.source for a in lock.artifacts}
    assert all(m["commit"] == a.commit for m, a in zip(models, lock.artifacts, strict=True))


def _config_size(registry: Registry) -> int:
    return get_json(registry, f"/v2/{REPO}/manifests/{TAG}")["config"]["size"]


def get_bytes_manifest(registry: Registry) -> bytes:
    request = urllib.request.Request(
        registry.url(f"/v2/{REPO}/manifests/{TAG}"), headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


@pytest.mark.slow
def test_push_again_gives_the_same_digest_and_sends_nothing(pushed: dict, registry: Registry, warm: Volume) -> None:
    mark = registry.mark()
    proc = warm.cli("push", registry.ref(REPO, "again"), "--json", **registry.env)  # a copy: other inodes, mtimes
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["digest"] == pushed["digest"]
    assert again["bytes_sent"] == 0 and again["blobs_sent"] == 0
    assert again["bytes_skipped"] == pushed["bytes_sent"] + pushed["bytes_skipped"]
    sent = registry.requests(mark)
    assert not [r for r in sent if r.method in ("POST", "PATCH") or "/blobs/uploads/" in r.path]
    assert [r.method for r in sent if "/manifests/" in r.path] == ["PUT"]
    plain = warm.cli("push", registry.ref(REPO, "again"), **registry.env)
    assert plain.returncode == 0 and pushed["digest"] in plain.stdout and "skipped" in plain.stdout


@pytest.mark.slow
def test_push_to_another_repository_mounts_the_blobs_instead_of_sending_them(
    pushed: dict, registry: Registry, warm: Volume, empty: Volume, _warm_template: Path
) -> None:
    mark = registry.mark()
    proc = warm.cli("push", registry.ref("team-b/models", TAG), "--mount-from", REPO, "--json", **registry.env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["digest"] == pushed["digest"]
    assert result["bytes_sent"] == 0 and result["blobs_mounted"] == result["blobs"]
    posts = [r for r in registry.requests(mark) if r.method == "POST"]
    assert posts and all("mount=sha256" in r.path and r.status == 201 for r in posts)
    assert not [r for r in registry.requests(mark) if r.method in ("PUT", "PATCH") and "/blobs/" in r.path]
    # the mounted artifact is complete: a fetch from it gives the same volume
    fetched = empty.cli("fetch", "--plain", "--from", registry.ref("team-b/models", TAG))
    assert fetched.returncode == 0, fetched.stderr
    assert tree(empty.root) == tree(_warm_template)
    # a source that does not hold them: the blobs are sent as usual
    other = warm.cli(
        "push", registry.ref("team-c/models", TAG), "--mount-from", "nobody/here", "--json", **registry.env
    )
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["blobs_mounted"] == 0
    assert json.loads(other.stdout)["bytes_sent"] == pushed["bytes_sent"] + pushed["bytes_skipped"]


@pytest.mark.slow
def test_push_image_is_a_container_image_docker_pulls_and_whose_tree_verifies(
    registry: Registry, warm: Volume, tmp_path: Path, _warm_template: Path
) -> None:
    """`push --image`: one uncompressed tar layer with the volume's tree, the lock included
    (what image volumes and modelcars mount). A real runtime (Docker) pulls and unpacks it."""
    import subprocess
    import uuid

    from tests.support.docker import docker_unavailable

    ref = registry.ref("site/models-image", TAG)
    first = warm.cli("push", "--image", ref, "--json", **registry.env)
    assert first.returncode == 0, first.stderr
    digest = json.loads(first.stdout)["digest"]
    again = warm.cli("push", "--image", ref, "--json", **registry.env)
    assert json.loads(again.stdout)["digest"] == digest and json.loads(again.stdout)["bytes_sent"] == 0
    manifest = get_json(registry, f"/v2/site/models-image/manifests/{TAG}")
    assert "artifactType" not in manifest
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar"]
    # fetch --from reads only the ModelPack form, and says so
    refused = warm.cli("fetch", "--from", ref, **registry.env)
    assert refused.returncode == EXIT_CONFIG and "is not a model artifact" in refused.stderr
    reason = docker_unavailable()
    if reason:
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"required here but cannot run: {reason}")
        pytest.skip(reason)
    image = f"{registry.host}/site/models-image:{TAG}"
    name = f"mc-image-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["docker", "pull", "-q", image], check=True, capture_output=True, timeout=300)
        subprocess.run(["docker", "create", "--name", name, image, "/none"], check=True, capture_output=True)
        out = tmp_path / "unpacked"
        out.mkdir()
        exported = subprocess.run(["docker", "export", name], check=True, capture_output=True, timeout=300).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=exported, check=True)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
    made_by_docker = (".dockerenv", "dev/", "etc/", "proc/", "sys/")
    unpacked = {k: v for k, v in tree(out).items() if not k.startswith(made_by_docker)}
    assert unpacked == tree(_warm_template)
    verified = run_cli("verify", "--deep", env={**warm.env, "MODELCACHE_DIR": str(out)})
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.slow
def test_push_refuses_a_volume_that_does_not_verify(warm: Volume, registry: Registry) -> None:
    lock = read_lock(Layout(warm.root))
    assert lock is not None
    victim = warm.root / next(f.path for f in lock.files if f.path.endswith("whisper/tiny.en.pt"))
    with open(victim, "r+b") as fh:
        fh.truncate(1000)
    mark = registry.mark()
    proc = warm.cli("push", registry.ref(REPO, "broken"), **registry.env)
    assert proc.returncode == EXIT_VERIFY
    assert "does not verify against its lock" in proc.stderr and "whisper/tiny.en.pt: size" in proc.stderr
    assert registry.requests(mark) == []  # refused before a single request


def test_push_needs_a_lock(tmp_path: Path, registry: Registry) -> None:
    proc = run_cli(
        "push",
        registry.ref(REPO, "none"),
        env={"MODELCACHE_DIR": str(tmp_path / "models"), **registry.env},
    )
    assert proc.returncode == EXIT_VERIFY and "nothing to push" in proc.stderr


# --- fetch --from ---------------------------------------------------------------------------


@pytest.mark.slow
def test_fetch_from_registry_is_byte_identical_and_asks_the_hub_nothing(
    pushed: dict, registry: Registry, empty: Volume, models: MirrorModels, _warm_template: Path
) -> None:
    models.mirror.reset_log()
    proc = empty.cli("fetch", "--plain", "--from", registry.ref(REPO, TAG))
    assert proc.returncode == 0, proc.stderr
    assert models.mirror.requests == []  # not one request to the Hub
    assert pushed["digest"] in proc.stderr  # the tag resolved to a digest, logged
    assert tree(empty.root) == tree(_warm_template)
    assert (empty.root / ".modelcache/lock.json").read_bytes() == (
        _warm_template / ".modelcache/lock.json"
    ).read_bytes()
    verified = empty.cli("verify", "--deep")
    assert verified.returncode == 0 and "OK" in verified.stdout
    assert not list((empty.root / ".modelcache/partial").iterdir())


@pytest.mark.slow
def test_fetch_by_digest_then_a_warm_fetch_makes_no_blob_request(
    pushed: dict, registry: Registry, empty: Volume, _warm_template: Path
) -> None:
    by_digest = f"oci://{registry.host}/{REPO}@{pushed['digest']}"
    first = empty.cli("fetch", "--plain", MODELCACHE_FROM=by_digest)
    assert first.returncode == 0, first.stderr
    assert tree(empty.root) == tree(_warm_template)
    mark = registry.mark()
    second = empty.cli("fetch", "--plain", MODELCACHE_FROM=registry.ref(REPO, TAG))
    assert second.returncode == 0, second.stderr
    assert "nothing to fetch" in second.stderr
    sent = registry.requests(mark)
    assert [r.method for r in sent if "/manifests/" in r.path] == ["GET"]  # resolved once
    assert [r for r in sent if "/blobs/" in r.path] == []


def test_fetch_from_an_unknown_tag_is_refused(registry: Registry, empty: Volume) -> None:
    proc = empty.cli("fetch", "--from", registry.ref("site/nothing-here", "v9"))
    assert proc.returncode == EXIT_CONFIG
    assert "has no such tag" in proc.stderr and "remedy:" in proc.stderr
    assert not (empty.root / ".modelcache/lock.json").exists()


def test_fetch_from_a_bad_reference_is_a_configuration_error(empty: Volume) -> None:
    proc = empty.cli("fetch", MODELCACHE_FROM="registry.lan/models:v1")
    assert proc.returncode == EXIT_CONFIG
    assert "MODELCACHE_FROM: 'registry.lan/models:v1' is not an oci:// reference" in proc.stderr


def test_fetch_from_another_artifact_type_is_refused(registry: Registry, empty: Volume) -> None:
    config = upload_blob(registry, "site/image", b"{}")
    put_manifest(
        registry,
        "site/image",
        "latest",
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [],
        },
    )
    mark = registry.mark()
    proc = empty.cli("fetch", "--from", registry.ref("site/image", "latest"))
    assert proc.returncode == EXIT_CONFIG
    assert "is not a model artifact" in proc.stderr and "application/vnd.oci.image.config.v1+json" in proc.stderr
    assert [r for r in registry.requests(mark) if "/blobs/" in r.path] == []
    assert not (empty.root / ".modelcache/lock.json").exists()


@pytest.mark.slow
def test_fetch_refuses_a_lock_layer_that_disagrees_with_the_file_layers(
    pushed: dict, registry: Registry, empty: Volume
) -> None:
    manifest = get_json(registry, f"/v2/{REPO}/manifests/{TAG}")
    dropped = next(
        layer for layer in manifest["layers"] if layer["annotations"]["org.cncf.model.filepath"].endswith("README.md")
    )
    manifest["layers"] = [layer for layer in manifest["layers"] if layer is not dropped]
    put_manifest(registry, REPO, "short", manifest)
    proc = empty.cli("fetch", "--from", registry.ref(REPO, "short"))
    assert proc.returncode == EXIT_VERIFY
    assert "its lock layer disagrees with its file layers" in proc.stderr
    assert f"{dropped['annotations']['org.cncf.model.filepath']}: in the lock, no layer" in proc.stderr
    assert not (empty.root / "huggingface").exists()  # nothing fetched


@pytest.mark.slow
def test_fetch_refuses_a_blob_whose_bytes_do_not_match_its_digest(
    pushed: dict, registry: Registry, empty: Volume
) -> None:
    manifest = get_json(registry, f"/v2/{REPO}/manifests/{TAG}")
    layer = next(
        layer for layer in manifest["layers"] if layer["annotations"]["org.cncf.model.filepath"].endswith("README.md")
    )
    data = registry.blob_data(layer["digest"])
    original = data.read_bytes()
    try:
        data.write_bytes(bytes(b ^ 0xFF for b in original))  # same size, other bytes: the registry serves them
        proc = empty.cli("fetch", "--plain", "--from", registry.ref(REPO, TAG), MODELCACHE_RETRIES="1")
    finally:
        data.write_bytes(original)
    assert proc.returncode == EXIT_VERIFY, proc.stderr
    assert (
        "the server sent the same bytes twice" in proc.stderr
        and f"the manifest of {registry.ref(REPO, TAG)}" in proc.stderr
    )
    assert "storage is damaged" in proc.stderr
    lock = read_lock(Layout(empty.root))
    assert lock is None
    wrong = hashlib.sha256(bytes(b ^ 0xFF for b in original)).hexdigest()
    visible = [p for p in empty.root.rglob("*") if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == wrong]
    assert visible == []  # the wrong bytes never became visible


@pytest.mark.slow
def test_fetch_refuses_an_artifact_with_a_missing_blob(pushed: dict, registry: Registry, empty: Volume) -> None:
    manifest = get_json(registry, f"/v2/{REPO}/manifests/{TAG}")
    layer = next(
        layer for layer in manifest["layers"] if layer["annotations"]["org.cncf.model.filepath"].endswith("config.json")
    )
    data = registry.blob_data(layer["digest"])
    moved = data.with_name("data.away")
    data.rename(moved)
    try:
        proc = empty.cli("fetch", "--from", registry.ref(REPO, TAG))
    finally:
        moved.rename(data)
    assert proc.returncode == EXIT_VERIFY, proc.stderr
    assert "the registry lacks 1 blob(s) the manifest names; nothing was fetched" in proc.stderr
    assert layer["digest"] in proc.stderr and "push it again" in proc.stderr
    assert not (empty.root / ".modelcache/lock.json").exists()


@pytest.mark.slow
def test_an_interrupted_fetch_resumes_with_a_range_request(
    pushed: dict, registry: Registry, empty: Volume, _warm_template: Path
) -> None:
    lock = read_lock(Layout(_warm_template))
    assert lock is not None
    biggest = max(lock.files, key=lambda f: f.size)
    half = biggest.size // 2
    partial = empty.root / ".modelcache/partial" / f"{biggest.sha256}.part"
    partial.parent.mkdir(parents=True)
    with open(_warm_template / biggest.path, "rb") as fh:
        partial.write_bytes(fh.read(half))  # what a killed fetch leaves behind
    mark = registry.mark()
    proc = empty.cli("fetch", "--plain", "--from", registry.ref(REPO, TAG))
    assert proc.returncode == 0, proc.stderr
    gets = [r for r in registry.requests(mark) if r.method == "GET" and biggest.sha256 in r.path]
    assert [(r.status, r.bytes) for r in gets] == [(206, biggest.size - half)]
    assert tree(empty.root) == tree(_warm_template)


def _size(path: Path) -> int:
    """A partial file's size; 0 once it was published (renamed away) between listing and stat."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_a_killed_fetch_resumes(pushed: dict, registry: Registry, empty: Volume, _warm_template: Path) -> None:
    import signal
    import time

    proc = empty.popen("fetch", "--plain", "--from", registry.ref(REPO, TAG), MODELCACHE_WORKERS="1")
    partial = empty.root / ".modelcache/partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_dir() and any(_size(p) > 0 for p in partial.glob("*.part")):
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.skip("the fetch finished before it could be killed (a fast machine)")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (empty.root / ".modelcache/lock.json").exists()
    mark = registry.mark()
    again = empty.cli("fetch", "--plain", "--from", registry.ref(REPO, TAG))
    assert again.returncode == 0, again.stderr
    assert tree(empty.root) == tree(_warm_template)
    sent = sum(r.bytes for r in registry.requests(mark) if r.method == "GET" and "/blobs/" in r.path)
    assert sent < pushed["bytes_sent"] + pushed["bytes_skipped"]  # what the killed run kept was not sent again


@pytest.mark.slow
def test_a_lockfile_can_name_the_registry_artifact_to_fill_from(
    registry: Registry, warm: Volume, tmp_path: Path, models: MirrorModels
) -> None:
    """`lock --registry oci://…@sha256:…` records where the pinned bytes come from: a host with
    that lockfile fills its volume from the registry without MODELCACHE_FROM and asks the Hub
    nothing."""
    lockfile = tmp_path / "models.lock"
    made = warm.cli("lock", "--lockfile", str(lockfile))
    assert made.returncode == 0, made.stderr
    pinned = warm.cli("fetch", "--plain", MODELCACHE_LOCKFILE=str(lockfile))  # the pushing host, pinned
    assert pinned.returncode == 0, pinned.stderr
    pushed = warm.cli("push", registry.ref("site/pinned"), "--json", **registry.env)
    assert pushed.returncode == 0, pushed.stderr
    digest = json.loads(pushed.stdout)["digest"]
    by_digest = f"oci://{registry.host}/site/pinned@{digest}"
    tagged = warm.cli("lock", "--lockfile", str(lockfile), "--registry", registry.ref("site/pinned"))
    assert tagged.returncode == EXIT_CONFIG and "by digest, not by tag" in tagged.stderr
    named = warm.cli("lock", "--lockfile", str(lockfile), "--registry", by_digest)
    assert named.returncode == 0, named.stderr
    assert f'registry = "{by_digest}"' in lockfile.read_text()
    again = warm.cli("lock", "--lockfile", str(lockfile))  # kept when the pins are written again
    assert again.returncode == 0 and f'registry = "{by_digest}"' in lockfile.read_text()

    root = tmp_path / "other-host" / "models"
    other = Volume(root, {**models.env(root), **registry.env, "MODELCACHE_LOCKFILE": str(lockfile)})
    models.mirror.reset_log()
    proc = other.cli("fetch", "--plain")
    assert proc.returncode == 0, proc.stderr
    assert f"names {by_digest}: filling the volume from that registry" in proc.stderr
    assert models.mirror.requests == []
    assert tree(root) == tree(warm.root)

    lockfile.write_text(lockfile.read_text().replace(by_digest, registry.ref("site/pinned")))
    bad = other.cli("fetch")
    assert bad.returncode == EXIT_CONFIG and "names a tag" in bad.stderr


# --- units ------------------------------------------------------------------------------------


def test_references_parse_and_bad_ones_name_the_problem() -> None:
    ref = parse_oci_reference("oci://Registry.lan:5000/site/models:2024-06", where="--from")
    assert ref == OciReference("registry.lan:5000", "site/models", "2024-06", None)
    digest = "sha256:" + "a" * 64
    assert parse_oci_reference(f"oci://r/m@{digest}", where="x").reference == digest
    for bad, words in [
        ("https://r/m:v1", "is not an oci:// reference"),
        ("oci://r/m", "names no tag or digest"),
        ("oci://r/Models:v1", "is not a valid repository name"),
        ("oci://r/m:-v1", "is not a valid tag"),
        ("oci://r/m@sha256:abc", "is not a sha256 digest"),
        ("oci://r:0/m:v1", "does not start with a registry host"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_oci_reference(bad, where="MODELCACHE_FROM")
        assert words in info.value.message and info.value.message.startswith("MODELCACHE_FROM: ")
    with pytest.raises(ConfigError, match="a push needs a tag"):
        parse_oci_reference(f"oci://r/m@{digest}", where="push", tag_only=True)


def test_settings_read_the_source_and_the_insecure_registries() -> None:
    settings = Settings.from_env(
        {"MODELCACHE_FROM": "oci://127.0.0.1:5000/m:v1", "MODELCACHE_INSECURE_REGISTRIES": "127.0.0.1:5000, reg.lan"}
    )
    assert settings.from_ref == OciReference("127.0.0.1:5000", "m", "v1")
    assert settings.insecure_registries == ("127.0.0.1:5000", "reg.lan")
    assert Settings.from_env({}).from_ref is None
    with pytest.raises(ConfigError, match="MODELCACHE_INSECURE_REGISTRIES: 'http://x' is not HOST or HOST:PORT"):
        Settings.from_env({"MODELCACHE_INSECURE_REGISTRIES": "http://x"})


def test_layer_media_types() -> None:
    assert oci.media_type("huggingface/hub/models--a--b/snapshots/c/model.safetensors") == oci.WEIGHT_TYPE
    assert oci.media_type("whisper/base.pt") == oci.WEIGHT_TYPE
    assert oci.media_type("x/tokenizer.json") == oci.WEIGHT_CONFIG_TYPE
    assert oci.media_type("x/vocab.txt") == oci.WEIGHT_CONFIG_TYPE
    assert oci.media_type("x/README.md") == oci.DOC_TYPE
    assert oci.media_type("x/LICENSE") == oci.DOC_TYPE


def test_docker_config_credentials(tmp_path: Path) -> None:
    import base64

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "https://reg.lan:5000": {"auth": base64.b64encode(b"alice:s3cret").decode()},
                    "other.io": {"username": "bob", "password": "pw"},
                }
            }
        )
    )
    env = {"DOCKER_CONFIG": str(tmp_path)}
    found = docker_credentials("reg.lan:5000", env)
    assert found is not None and (found.username, found.password) == ("alice", "s3cret")
    assert "s3cret" not in repr(found)
    other = docker_credentials("other.io", env)
    assert other is not None and other.username == "bob"
    assert docker_credentials("nowhere:1", env) is None


def test_token_challenge_gets_a_token_with_basic_credentials_and_retries(tmp_path: Path) -> None:
    import base64

    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"reg.lan": {"auth": base64.b64encode(b"alice:s3cret").decode()}}})
    )
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.host == "auth.lan":
            assert request.headers["authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
            assert request.url.params["scope"] == "repository:site/models:pull"
            assert request.url.params["service"] == "reg"
            return httpx2.Response(200, json={"token": "tok-123"})
        if request.headers.get("authorization") != "Bearer tok-123":
            return httpx2.Response(
                401,
                headers={
                    "www-authenticate": 'Bearer realm="https://auth.lan/token",service="reg",scope="repository:site/models:pull"'
                },
            )
        return httpx2.Response(200, content=b'{"schemaVersion":2}')

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as client:
        registry = Client(
            client,
            OciReference("reg.lan", "site/models", "v1"),
            Policy(retries=0),
            env={"DOCKER_CONFIG": str(tmp_path)},
        )
        manifest = registry.get_manifest()
    assert manifest.data == {"schemaVersion": 2}
    assert [r.url.host for r in seen] == ["reg.lan", "auth.lan", "reg.lan"]
    assert str(seen[0].url).startswith("https://")  # not listed as insecure: https
    assert registry.auth_headers() == {"Authorization": "Bearer tok-123"}


def test_a_registry_that_wants_credentials_says_how_without_printing_any(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(401, headers={"www-authenticate": 'Basic realm="reg"'})

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as client:
        registry = Client(
            client, OciReference("reg.lan", "m", "v1"), Policy(retries=0), env={"DOCKER_CONFIG": str(tmp_path)}
        )
        with pytest.raises(ConfigError) as info:
            registry.get_manifest()
    assert "asks for credentials and there are none for it" in info.value.message
    assert "docker login reg.lan" in info.value.remedy


@pytest.mark.slow
def test_fetch_refuses_an_artifact_without_the_configured_models(
    pushed: dict, registry: Registry, empty: Volume
) -> None:
    proc = empty.cli("fetch", "--from", registry.ref(REPO, TAG), MODELCACHE_TEXT_EMBEDDING="acme/tiny-bert-embedder")
    assert proc.returncode == EXIT_VERIFY
    assert "does not hold what this configuration asks for; nothing was fetched" in proc.stderr
    assert "acme/tiny-bert-embedder" in proc.stderr
    assert not (empty.root / "huggingface").exists()
