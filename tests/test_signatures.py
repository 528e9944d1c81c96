"""Model signatures (OpenSSF model signing): `modelcache sign`, a trust policy, and the checks
of the Hub fetch, the warm fetch and the registry fetch. Keys are made here; all offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, EXIT_VERIFY, ConfigError
from modelcache.settings import Settings
from modelcache.signatures import REPO_SIGNATURE
from tests.conftest import Volume
from tests.support.fixtures import MirrorModels, noise
from tests.support.registry import Registry

pytest.importorskip("model_signing")


def make_key(folder: Path, name: str) -> tuple[Path, Path]:
    """An EC P-256 key pair as PEM files: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {"site": make_key(folder, "site"), "other": make_key(folder, "other")}


def trusting(public: Path, require: bool = True) -> dict[str, str]:
    return {"MODELCACHE_TRUST_KEY": str(public), "MODELCACHE_REQUIRE_SIGNATURE": "1" if require else "0"}


# --- settings -------------------------------------------------------------------------------


def test_the_trust_policy_is_read_and_bad_ones_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    policy = Settings.from_env({"MODELCACHE_TRUST_KEY": str(key), "MODELCACHE_REQUIRE_SIGNATURE": "1"}).trust
    assert policy.require and policy.key == key and policy.configured
    assert not Settings.from_env({}).trust.configured
    bad = [
        ({"MODELCACHE_REQUIRE_SIGNATURE": "1"}, "no trust policy"),
        ({"MODELCACHE_TRUST_KEY": str(tmp_path / "missing.pem")}, "is not a readable file"),
        ({"MODELCACHE_TRUST_KEY": str(key), "MODELCACHE_TRUST_CERTS": str(key)}, "are both set"),
        ({"MODELCACHE_TRUST_IDENTITY": "ci@example.org"}, "go together"),
        ({"MODELCACHE_REQUIRE_SIGNATURE": "maybe"}, "MODELCACHE_REQUIRE_SIGNATURE"),
    ]
    for env, says in bad:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env)
        assert says in caught.value.message, (env, caught.value.message)


# --- sign, then the warm fetch checks -----------------------------------------------------


@pytest.fixture
def signed(warm: Volume, keys: dict) -> Volume:
    proc = warm.cli("sign", "--key", str(keys["site"][0]), "--json")
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)
    assert len(made) == 5 and all((warm.root / m["signature"]).is_file() for m in made)
    return warm


def test_a_signed_volume_passes_a_fetch_that_requires_signatures(signed: Volume, keys: dict) -> None:
    proc = signed.cli("fetch", "--plain", **trusting(keys["site"][1]))
    assert proc.returncode == 0, proc.stderr
    assert "signatures: 5/5 model(s) verified" in proc.stderr
    assert "nothing to fetch" in proc.stderr


def test_a_warm_fetch_reuses_the_verdict_until_a_signature_or_the_key_changes(
    signed: Volume, keys: dict, tmp_path: Path
) -> None:
    assert signed.cli("fetch", "--plain", **trusting(keys["site"][1])).returncode == 0
    # the verdict is kept: a second warm fetch does not even load the signing library
    blocker = tmp_path / "no-signing"
    (blocker / "model_signing").mkdir(parents=True)
    (blocker / "model_signing/__init__.py").write_text("raise ImportError('model_signing was imported')\n")
    path = f"{blocker}:{Path(__file__).resolve().parents[1] / 'services'}"
    again = signed.cli("fetch", "--plain", PYTHONPATH=path, **trusting(keys["site"][1]))
    assert again.returncode == 0, again.stderr
    assert "signatures: 5/5 model(s) verified" in again.stderr
    # --deep checks afresh (and so needs the library)
    deep = signed.cli("fetch", "--plain", "--deep", PYTHONPATH=path, **trusting(keys["site"][1]))
    assert deep.returncode == EXIT_CONFIG and "model_signing was imported" in deep.stderr
    # another key, or other signature bytes: checked afresh, and refused
    assert signed.cli("fetch", "--plain", **trusting(keys["other"][1])).returncode == EXIT_VERIFY
    sigs = sorted((signed.root / ".modelcache/signatures").glob("*.sig"))
    shutil.copyfile(sigs[0], sigs[1])
    assert signed.cli("fetch", "--plain", **trusting(keys["site"][1])).returncode == EXIT_VERIFY


def test_an_unsigned_volume_is_refused_naming_every_model(warm: Volume, keys: dict) -> None:
    proc = warm.cli("fetch", "--plain", **trusting(keys["site"][1]))
    assert proc.returncode == EXIT_VERIFY
    assert "MODELCACHE_REQUIRE_SIGNATURE=1 and 5 model(s)" in proc.stderr
    assert "no signature (neither model.sig nor a site signature)" in proc.stderr
    assert "modelcache sign" in proc.stderr  # the remedy
    # not required: the same volume is fine, and the log says what was not signed
    relaxed = warm.cli("fetch", "--plain", **trusting(keys["site"][1], require=False))
    assert relaxed.returncode == 0, relaxed.stderr
    assert "signatures: 0/5 model(s) verified" in relaxed.stderr


def test_a_signature_by_another_key_is_refused(signed: Volume, keys: dict) -> None:
    proc = signed.cli("fetch", "--plain", **trusting(keys["other"][1]))
    assert proc.returncode == EXIT_VERIFY
    assert "does not verify against the public key" in proc.stderr
    assert "Key mismatch" in proc.stderr


def test_a_signature_over_other_files_is_refused(signed: Volume, keys: dict) -> None:
    """A valid signature of the site whose files differ from the lock's: always refused."""
    sigs = signed.root / ".modelcache/signatures"
    names = sorted(p.name for p in sigs.glob("*.sig"))
    shutil.copyfile(sigs / names[0], sigs / names[1])  # one model's signature put beside another
    proc = signed.cli("fetch", "--plain", **trusting(keys["site"][1], require=False))
    assert proc.returncode == EXIT_VERIFY
    assert "is valid but the files differ from what it signs" in proc.stderr
    assert "not among the signed files" in proc.stderr or "the signature says" in proc.stderr


def test_sign_refuses_a_volume_whose_files_changed(warm: Volume, keys: dict) -> None:
    blob = next(p for p in (warm.root / "huggingface/hub").rglob("blobs/*") if p.stat().st_size > 1000)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    proc = warm.cli("sign", "--key", str(keys["site"][0]))
    assert proc.returncode == EXIT_VERIFY
    assert "the files on disk differ from the lock; nothing was signed" in proc.stderr
    assert "changed on disk" in proc.stderr


def test_sign_needs_a_complete_volume_and_a_key(tmp_path: Path, models: MirrorModels, keys: dict) -> None:
    empty = Volume(tmp_path / "models", models.env(tmp_path / "models"))
    assert empty.cli("sign", "--key", str(keys["site"][0])).returncode == EXIT_VERIFY


# --- a publisher's model.sig in a Hub repo ------------------------------------------------


def _publish_signed(
    models: MirrorModels, tmp_path: Path, repo: str, private: Path, *, tamper: bool, change: str | None = None
) -> None:
    """A repo whose model.sig its publisher made over its files; ``tamper``: the weights changed
    since, ``change``: that file changed since."""
    from model_signing import signing

    folder = tmp_path / repo.replace("/", "--")
    folder.mkdir(parents=True)
    files = {
        "config.json": b'{"hidden_size": 8}\n',
        "model.safetensors": noise(300_000, 71),
        "tokenizer.json": b'{"version": "1.0"}\n',
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    signing.Config().use_elliptic_key_signer(private_key=private).sign(folder, tmp_path / "model.sig")
    if tamper:
        files["model.safetensors"] = noise(300_000, 72)
    if change:
        files[change] = files[change].replace(b"}", b', "changed": true}')
    models.mirror.add_repo(repo, {**files, REPO_SIGNATURE: (tmp_path / "model.sig").read_bytes()})


def test_a_hub_repo_signature_is_fetched_and_verified(tmp_path: Path, models: MirrorModels, keys: dict) -> None:
    _publish_signed(models, tmp_path, "signed/ok-model", keys["other"][0], tamper=False)
    root = tmp_path / "models"
    volume = Volume(root, models.env(root, MODELCACHE_TEXT_EMBEDDING="signed/ok-model", MODELCACHE_MLX=""))
    proc = volume.cli("fetch", "--plain", **trusting(keys["other"][1], require=False))
    assert proc.returncode == 0, proc.stderr
    assert "signatures: 1/4 model(s) verified" in proc.stderr
    assert list(root.rglob(f"snapshots/*/{REPO_SIGNATURE}"))  # kept beside the files it signs


def test_a_hub_repo_whose_file_changed_after_signing_is_refused(
    tmp_path: Path, models: MirrorModels, keys: dict
) -> None:
    _publish_signed(models, tmp_path, "signed/tampered-model", keys["other"][0], tamper=True)
    root = tmp_path / "models"
    volume = Volume(root, models.env(root, MODELCACHE_TEXT_EMBEDDING="signed/tampered-model", MODELCACHE_MLX=""))
    proc = volume.cli("fetch", "--plain", **trusting(keys["other"][1], require=False))
    assert proc.returncode == EXIT_VERIFY
    assert "is valid but the files differ from what it signs; the model was refused before any file was fetched" in (
        proc.stderr
    )
    assert "model.safetensors: the Hub lists sha256" in proc.stderr
    assert not (root / ".modelcache/lock.json").exists()  # the service will not start on it
    in_snapshot = {p.name for p in root.rglob("*") if "signed--tampered-model" in str(p) and "snapshots" in p.parts}
    assert "model.safetensors" not in in_snapshot and "config.json" not in in_snapshot


def test_a_small_file_changed_after_signing_is_refused_by_the_transfer(
    tmp_path: Path, models: MirrorModels, keys: dict
) -> None:
    """A non-LFS file (the Hub lists only its git id): held to the signed sha256 while it arrives."""
    _publish_signed(models, tmp_path, "signed/small-change", keys["other"][0], tamper=False, change="config.json")
    root = tmp_path / "models"
    volume = Volume(root, models.env(root, MODELCACHE_TEXT_EMBEDDING="signed/small-change", MODELCACHE_MLX=""))
    proc = volume.cli("fetch", "--plain", **trusting(keys["other"][1], require=False))
    assert proc.returncode == EXIT_VERIFY, proc.stderr
    assert "config.json" in proc.stderr and "signed digest" in proc.stderr
    assert not [p for p in root.rglob("config.json") if "signed--small-change" in str(p)]


# --- through the registry -----------------------------------------------------------------


@pytest.fixture
def pushed_signed(signed: Volume, registry: Registry) -> str:
    ref = registry.ref("site/signed", "v1")
    proc = signed.cli("push", ref, "--json", **registry.env)
    assert proc.returncode == 0, proc.stderr
    return ref


def _empty(tmp_path: Path, models: MirrorModels, registry: Registry) -> Volume:
    root = tmp_path / "pulled"
    return Volume(root, {**models.env(root), **registry.env})


@pytest.mark.slow
def test_signatures_travel_with_the_artifact_and_are_checked_on_arrival(
    pushed_signed: str, registry: Registry, tmp_path: Path, models: MirrorModels, keys: dict, signed: Volume
) -> None:
    empty = _empty(tmp_path, models, registry)
    proc = empty.cli("fetch", "--plain", "--from", pushed_signed, **trusting(keys["site"][1]))
    assert proc.returncode == 0, proc.stderr
    assert "signatures: 5/5 model(s) verified" in proc.stderr
    for sig in (signed.root / ".modelcache/signatures").iterdir():
        assert (empty.root / ".modelcache/signatures" / sig.name).read_bytes() == sig.read_bytes()
    # warm: checked again from the volume's own signatures, no blob requested
    mark = registry.mark()
    again = empty.cli("fetch", "--plain", "--from", pushed_signed, **trusting(keys["site"][1]))
    assert again.returncode == 0 and "nothing to fetch" in again.stderr
    assert [r for r in registry.requests(mark) if "/blobs/" in r.path] == []


@pytest.mark.slow
def test_a_registry_fetch_refuses_untrusted_signatures_before_any_weight_moves(
    pushed_signed: str, registry: Registry, tmp_path: Path, models: MirrorModels, keys: dict
) -> None:
    empty = _empty(tmp_path, models, registry)
    mark = registry.mark()
    proc = empty.cli("fetch", "--plain", "--from", pushed_signed, **trusting(keys["other"][1]))
    assert proc.returncode == EXIT_VERIFY
    assert "carry no signature that verifies" in proc.stderr
    blob_gets = [r for r in registry.requests(mark) if r.method == "GET" and "/blobs/" in r.path]
    assert len(blob_gets) == 5 + 1  # the five signatures and the lock layer, not one weight
    assert not [p for p in empty.root.rglob("*") if "snapshots" in p.parts]  # nothing visible
    assert not (empty.root / ".modelcache/lock.json").exists()


@pytest.mark.slow
def test_unsigned_artifact_is_refused_when_signatures_are_required(
    registry: Registry, tmp_path: Path, models: MirrorModels, keys: dict, warm: Volume
) -> None:
    ref = registry.ref("site/unsigned", "v1")
    assert warm.cli("push", ref, **registry.env).returncode == 0
    empty = _empty(tmp_path, models, registry)
    proc = empty.cli("fetch", "--from", ref, **trusting(keys["site"][1]))
    assert proc.returncode == EXIT_VERIFY
    assert "no signature (neither model.sig nor a site signature)" in proc.stderr


def test_a_bad_trust_key_file_is_a_configuration_error(warm: Volume, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key\n")
    proc = warm.cli("fetch", **trusting(bogus, require=True))
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "bogus.pem" in proc.stderr and "cannot be loaded" in proc.stderr


def test_an_identity_policy_without_the_sigstore_trust_root_is_a_configuration_error(
    warm: Volume, tmp_path: Path
) -> None:
    """The Sigstore trust root comes from the Internet (TUF); where it cannot, the fetch stops
    with the way out. Here every request goes to a proxy on loopback that refuses it, and the
    TUF cache is empty: the proxy sees which host the downloader wanted, nothing leaves."""
    import socket
    import threading

    asked: list[str] = []
    proxy = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        while True:
            try:
                conn, _ = proxy.accept()
            except OSError:
                return
            with conn:
                asked.append(conn.recv(4096).decode("latin-1").split("\r\n")[0])
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    threading.Thread(target=refuse, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    home = tmp_path / "home"
    env = {
        "MODELCACHE_REQUIRE_SIGNATURE": "1",
        "MODELCACHE_TRUST_IDENTITY": "release@example.org",
        "MODELCACHE_TRUST_ISSUER": "https://accounts.example.org",
        **dict.fromkeys(("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"), url),
        "NO_PROXY": "",
        "no_proxy": "",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    try:
        proc = warm.cli("fetch", **env)
    finally:
        proxy.close()
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "the Sigstore trust root for the Sigstore identity release@example.org" in proc.stderr
    assert "MODELCACHE_TRUST_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert asked and all(line.startswith("CONNECT tuf-repo-cdn.sigstore.dev:443 ") for line in asked), asked
