"""Registry credentials and TLS as sites have them: the real registry over https with a
private CA's certificate and htpasswd accounts; credentials from Docker's config.json
(`auths`) or a credential helper (a real program speaking Docker's helper protocol)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, ConfigError
from modelcache.settings import Settings
from tests.conftest import Volume
from tests.support.fixtures import MirrorModels
from tests.support.registry import USERS, Registry
from tests.test_oci import tree

USER, PASSWORD = next(iter(USERS.items()))
REPO = "site/secure"


def docker_config(folder: Path, registry: Registry, *, password: str = PASSWORD, **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}, **extra}))
    return folder


def helper(folder: Path, name: str, script: str) -> Path:
    """A `docker-credential-NAME` program in ``folder`` (to be put first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / f"docker-credential-{name}"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.fixture(scope="module")
def secure_push(secure_registry: Registry, _warm_template: Path, _mirror_models: MirrorModels, tmp_path_factory) -> str:
    """The session's volume pushed over TLS with the account's password."""
    from tests.conftest import run_cli

    config = docker_config(tmp_path_factory.mktemp("docker"), secure_registry)
    env = {**_mirror_models.env(_warm_template), **secure_registry.env, "DOCKER_CONFIG": str(config)}
    proc = run_cli("push", secure_registry.ref(REPO), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["digest"]


def volume(tmp_path: Path, models: MirrorModels, registry: Registry, **env: str) -> Volume:
    root = tmp_path / "models"
    return Volume(root, {**models.env(root), **registry.env, **env})


@pytest.mark.slow
def test_fetch_over_tls_with_a_private_ca_and_basic_auth(
    secure_push: str, secure_registry: Registry, tmp_path: Path, models: MirrorModels, _warm_template: Path
) -> None:
    config = docker_config(tmp_path / "docker", secure_registry)
    v = volume(tmp_path, models, secure_registry, DOCKER_CONFIG=str(config))
    proc = v.cli("fetch", "--plain", "--from", secure_registry.ref(REPO))
    assert proc.returncode == 0, proc.stderr
    assert secure_push in proc.stderr
    assert tree(v.root) == tree(_warm_template)
    assert PASSWORD not in proc.stderr + proc.stdout


def test_without_the_ca_the_tls_failure_says_what_to_set(
    secure_registry: Registry, tmp_path: Path, models: MirrorModels
) -> None:
    config = docker_config(tmp_path / "docker", secure_registry)
    v = volume(tmp_path, models, secure_registry, DOCKER_CONFIG=str(config))
    proc = v.cli("fetch", "--from", secure_registry.ref(REPO), MODELCACHE_CA_BUNDLE="")
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert f"the TLS handshake with {secure_registry.host} failed" in proc.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr
    assert "MODELCACHE_CA_BUNDLE" in proc.stderr  # the remedy


def test_no_credentials_says_docker_login(secure_registry: Registry, tmp_path: Path, models: MirrorModels) -> None:
    v = volume(tmp_path, models, secure_registry, DOCKER_CONFIG=str(tmp_path / "empty-docker"))
    proc = v.cli("fetch", "--from", secure_registry.ref(REPO))
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "asks for credentials and there are none for it" in proc.stderr
    assert f"docker login {secure_registry.host}" in proc.stderr


def test_a_wrong_password_names_the_credential_tried_never_the_secret(
    secure_registry: Registry, tmp_path: Path, models: MirrorModels
) -> None:
    config = docker_config(tmp_path / "docker", secure_registry, password="not-the-password")
    v = volume(tmp_path, models, secure_registry, DOCKER_CONFIG=str(config))
    proc = v.cli("fetch", "--from", secure_registry.ref(REPO))
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert f"refused the credentials of user {USER!r} from the auths entry for {secure_registry.host}" in proc.stderr
    assert str(config / "config.json") in proc.stderr
    assert "not-the-password" not in proc.stderr + proc.stdout
    assert not (v.root / ".modelcache/lock.json").exists()


@pytest.mark.slow
def test_credentials_from_a_credential_helper(
    secure_push: str, secure_registry: Registry, tmp_path: Path, models: MirrorModels, _warm_template: Path
) -> None:
    bin_dir = helper(
        tmp_path / "bin",
        "site",
        'read server\n[ "$server" = "'
        + secure_registry.host
        + '" ] || { echo "credentials not found in native keychain"; exit 1; }\n'
        'printf \'{"ServerURL":"%s","Username":"' + USER + '","Secret":"' + PASSWORD + '"}\' "$server"\n',
    )
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {secure_registry.host: "site"}}))
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    v = volume(tmp_path, models, secure_registry, DOCKER_CONFIG=str(config), PATH=path)
    proc = v.cli("fetch", "--plain", "--from", secure_registry.ref(REPO))
    assert proc.returncode == 0, proc.stderr
    assert tree(v.root) == tree(_warm_template)
    # the default store (credsStore) answers too; a missing helper program is named
    (config / "config.json").write_text(json.dumps({"credsStore": "absent"}))
    missing = v.cli("fetch", "--from", secure_registry.ref(REPO, "v2"), PATH=path)
    assert missing.returncode == EXIT_CONFIG
    assert "the credential helper docker-credential-absent named in Docker's config is not installed" in missing.stderr


def test_a_failing_helper_is_named_and_its_secret_never_shown(
    secure_registry: Registry, tmp_path: Path, models: MirrorModels
) -> None:
    bin_dir = helper(tmp_path / "bin", "broken", "echo 'keychain locked' >&2; exit 3\n")
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "broken"}))
    v = volume(
        tmp_path, models, secure_registry, DOCKER_CONFIG=str(config), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    )
    proc = v.cli("fetch", "--from", secure_registry.ref(REPO))
    assert proc.returncode == EXIT_CONFIG
    assert "the credential helper docker-credential-broken failed" in proc.stderr and "keychain locked" in proc.stderr


def test_the_ca_bundle_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"MODELCACHE_CA_BUNDLE": str(tmp_path / "none.pem")})
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        Settings.from_env({"MODELCACHE_CA_BUNDLE": str(junk)})


def test_an_empty_docker_config_means_no_credentials(tmp_path: Path) -> None:
    """Compose mounts /dev/null when no registry login is configured."""
    from modelcache.fetch.registry import docker_credentials

    (tmp_path / "config.json").write_text("")
    assert docker_credentials("registry.lan:5000", {"DOCKER_CONFIG": str(tmp_path)}) is None
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read as Docker's config file"):
        docker_credentials("registry.lan:5000", {"DOCKER_CONFIG": str(tmp_path)})


def test_a_refused_helper_secret_names_the_helper_never_the_secret(
    secure_registry: Registry, tmp_path: Path, models: MirrorModels
) -> None:
    secret = "helper-says-wrong-pa55"
    bin_dir = helper(
        tmp_path / "bin",
        "site",
        f'read server\nprintf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{secret}"}}\' "$server"\n',
    )
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {secure_registry.host: "site"}}))
    v = volume(
        tmp_path, models, secure_registry, DOCKER_CONFIG=str(config), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    )
    proc = v.cli("fetch", "--from", secure_registry.ref(REPO))
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert (
        f"{secure_registry.host} refused the credentials of user {USER!r} from the credential helper "
        "docker-credential-site" in proc.stderr
    )
    assert f"docker login {secure_registry.host}" in proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert not (v.root / ".modelcache/lock.json").exists()


def test_the_helper_protocol_and_the_order_docker_reads_credentials_in(tmp_path: Path) -> None:
    """credHelpers[host] first, then credsStore, then auths; a helper gets `get` and the host on
    stdin; "credentials not found" from the default store leaves the auths entry to answer."""
    from modelcache.fetch.registry import docker_credentials

    calls = tmp_path / "calls"
    bin_dir = helper(
        tmp_path / "bin",
        "store",
        f'read server\necho "$1 $server" >> {calls}\n'
        '[ "$server" = "mine.lan:5000" ] || { echo "credentials not found in native keychain"; exit 1; }\n'
        'printf \'{"ServerURL":"%s","Username":"from-store","Secret":"s"}\' "$server"\n',
    )
    helper(bin_dir, "pinned", 'read server\nprintf \'{"ServerURL":"%s","Username":"from-pinned","Secret":"p"}\' x\n')
    auth = base64.b64encode(b"from-auths:a").decode()
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "credHelpers": {"pinned.lan": "pinned"},
                "credsStore": "store",
                "auths": {"other.lan": {"auth": auth}, "pinned.lan": {"auth": auth}},
            }
        )
    )
    env = {"DOCKER_CONFIG": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    found = {host: docker_credentials(host, env) for host in ("mine.lan:5000", "other.lan", "pinned.lan", "none.lan")}
    assert {h: c and (c.username, c.source) for h, c in found.items()} == {
        "mine.lan:5000": ("from-store", "the credential helper docker-credential-store"),
        "other.lan": ("from-auths", f"the auths entry for other.lan in {tmp_path / 'config.json'}"),
        "pinned.lan": ("from-pinned", "the credential helper docker-credential-pinned"),
        "none.lan": None,
    }
    assert calls.read_text().splitlines() == ["get mine.lan:5000", "get other.lan", "get none.lan"]


def test_a_helper_that_hangs_is_stopped_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from modelcache.fetch import registry

    monkeypatch.setattr(registry, "HELPER_TIMEOUT", 1.0)
    bin_dir = helper(tmp_path / "bin", "stuck", "exec sleep 60\n")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "stuck"}))
    env = {"DOCKER_CONFIG": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        registry.docker_credentials("reg.lan", env)
    assert time.monotonic() - started < 10
    assert info.value.message == "the credential helper docker-credential-stuck did not answer within 1s"
    assert "docker-credential-stuck" in info.value.remedy
