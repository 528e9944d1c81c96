"""Model signatures (OpenSSF model signing): check them against the lock, make them for a site.

A model may carry two kinds of signature, both Sigstore bundles made by the
``model-signing`` package over the model's files:

- the publisher's: a ``model.sig`` file at the root of a Hub repo, fetched with the repo;
- the site's: ``.modelcache/signatures/<model>.sig`` in the volume, made by
  ``modelcache sign`` and carried by ``modelcache push`` as a layer of the artifact.

Checking needs no file to be read again: the bundle is verified against the trust policy
(MODELCACHE_TRUST_KEY, _CERTS or _IDENTITY), and the file digests it signs are compared
with the sha256 the lock records for every file of the model. So a registry fetch checks
signatures before any weight is transferred, and a warm fetch adds milliseconds. Files
the signer ignores (git metadata, the signature itself) need no signature; files signed but
not fetched (the configuration's patterns chose fewer) are allowed.

``model_signing`` is imported only when a signature is made or checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcache.errors import ConfigError, VerificationError
from modelcache.layout import Layout, atomic_write_text
from modelcache.settings import TrustPolicy
from modelcache.volume_lock import Lock, LockedArtifact, LockedFile

REPO_SIGNATURE = "model.sig"
SIGNATURES_DIR = "signatures"  # under .modelcache/
_GIT_PATHS = (".git", ".github", ".gitignore", ".gitattributes")  # model-signing ignores these by default


def site_signature(layout: Layout, name: str) -> Path:
    """Where the site's signature of a model lives (model names such as whisper/tiny.en flattened)."""
    return layout.state / SIGNATURES_DIR / (name.replace("/", "--") + ".sig")


@dataclass(frozen=True)
class ModelFiles:
    """The path a signature covers and the lock's files by the name the signature gives them."""

    root: Path  # a directory (Hub snapshot) or a single file
    files: dict[str, LockedFile]


def model_files(layout: Layout, artifact: LockedArtifact) -> ModelFiles:
    """Hub repos: their snapshot folder, files named relative to it; single files: the file, named '.'."""
    if artifact.commit and artifact.files:
        prefix = layout.rel(layout.snapshot(artifact.source, artifact.commit)) + "/"
        if all(f.path.startswith(prefix) for f in artifact.files):
            return ModelFiles(layout.abs(prefix), {f.path[len(prefix) :]: f for f in artifact.files})
    if len(artifact.files) == 1:
        return ModelFiles(layout.abs(artifact.files[0].path), {".": artifact.files[0]})
    parent = os.path.commonpath([f.path for f in artifact.files]) if artifact.files else ""
    return ModelFiles(layout.abs(parent), {os.path.relpath(f.path, parent): f for f in artifact.files})


@dataclass(frozen=True)
class Found:
    """A signature of a model: where it came from (for messages) and the bundle's file."""

    label: str
    path: Path


def signatures_in_volume(layout: Layout, artifact: LockedArtifact) -> list[Found]:
    found = []
    site = site_signature(layout, artifact.name)
    if site.is_file():
        found.append(Found(f"the site signature {layout.rel(site)}", site))
    repo = model_files(layout, artifact).files.get(REPO_SIGNATURE)
    if repo is not None:
        found.append(Found(f"the repo's {REPO_SIGNATURE}", layout.abs(repo.path)))
    return found


SIGSTORE_TUF = "https://tuf-repo-cdn.sigstore.dev"


class Untrusted(Exception):
    """The bundle does not verify against the trust policy (another signer, or damaged)."""


def _verifier(trust: TrustPolicy):
    from model_signing import verifying

    config = verifying.Config()
    if trust.key is not None:
        config.use_elliptic_key_verifier(public_key=trust.key)
    elif trust.certificates:
        config.use_certificate_verifier(certificate_chain=list(trust.certificates))
    elif trust.identity is not None:
        config.use_sigstore_verifier(identity=trust.identity, oidc_issuer=trust.issuer or "")
    else:
        raise ConfigError("no trust policy to check signatures with", remedy="set MODELCACHE_TRUST_KEY")
    return config


def _read_bundle(trust: TrustPolicy, path: Path):
    if trust.identity is not None:
        from model_signing._signing import sign_sigstore as bundle_format
    else:
        from model_signing._signing import sign_sigstore_pb as bundle_format  # type: ignore[no-redef]
    return bundle_format.Signature.read(path)


class Checker:
    """One trust policy, loaded once, checking any number of bundles."""

    def __init__(self, trust: TrustPolicy) -> None:
        self.trust = trust
        try:
            self._config = _verifier(trust)
        except ImportError as exc:
            raise ConfigError(
                f"a trust policy is set ({trust.describe()}) but the model-signing package cannot be imported ({exc})",
                remedy="install the downloader's dependencies (`pip install 'modelcache[downloader]'`), or unset "
                "MODELCACHE_TRUST_* and MODELCACHE_REQUIRE_SIGNATURE",
            ) from None
        except (ValueError, OSError) as exc:
            raise ConfigError(
                f"the trust policy ({trust.describe()}) cannot be loaded: {exc}",
                remedy="MODELCACHE_TRUST_KEY takes a PEM public key (EC); MODELCACHE_TRUST_CERTS PEM certificates",
            ) from None
        except Exception as exc:  # sigstore's own errors: its trust root is fetched (TUF) from the Internet
            if trust.identity is None:
                raise
            raise ConfigError(
                f"the Sigstore trust root for {trust.describe()} cannot be loaded "
                f"({exc.__class__.__name__}: {str(exc)[:200]})",
                remedy="an identity policy checks bundles against the public Sigstore instance, whose trust root "
                f"the downloader fetches from {SIGSTORE_TUF}: let it reach that host (an HTTPS_PROXY is honoured), "
                "or, offline, sign with a key (`modelcache sign --key`) and set MODELCACHE_TRUST_KEY",
            ) from None

    def signed(self, path: Path) -> tuple[dict[str, tuple[str, str]], dict]:
        """The files the bundle signs (name -> (algorithm, hex digest)) and how they were hashed."""
        try:
            bundle = _read_bundle(self.trust, path)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise Untrusted(f"not a model-signing bundle ({exc.__class__.__name__}: {str(exc)[:160]})") from None
        try:
            manifest = self._config._verifier.verify(bundle)  # the bundle's signature, checked against the policy
        except Exception as exc:
            raise Untrusted(str(exc)[:300] or exc.__class__.__name__) from None
        files = {
            str(rd.identifier): (str(rd.digest.algorithm), str(rd.digest.digest_hex))
            for rd in manifest.resource_descriptors()
        }
        return files, dict(manifest.serialization_type)


def ignored(name: str, serialization: dict) -> bool:
    """Files a signature need not name: itself, and what the signer was told to leave out."""
    if name == REPO_SIGNATURE:  # a signature, not model content
        return True
    ignored = [str(p) for p in serialization.get("ignore_paths") or _GIT_PATHS]
    return any(name == p or name.startswith(p.rstrip("/") + "/") for p in ignored)


def differences(files: dict[str, LockedFile], signed: dict[str, tuple[str, str]], serialization: dict) -> list[str]:
    """What the lock holds that the signature does not vouch for, one line each."""
    method, algorithm = serialization.get("method"), serialization.get("hash_type")
    if method != "files" or algorithm != "sha256":
        return [
            f"signed with {method}/{algorithm} digests; modelcache checks per-file sha256 manifests "
            "(the model-signing default): sign again without --shard/--hashing options"
        ]
    lines = []
    for name, entry in sorted(files.items()):
        if ignored(name, serialization):
            continue
        digest = signed.get(name)
        if digest is None:
            lines.append(f"{name}: fetched, but not among the signed files")
        elif digest[1] != entry.sha256:
            lines.append(f"{name}: sha256 {entry.sha256[:12]}…, the signature says {digest[1][:12]}…")
    return lines


@dataclass
class Outcome:
    model: str
    verified_by: str | None  # the signature that holds, or None
    notes: list[str]


def check_artifact(checker: Checker, layout: Layout, artifact: LockedArtifact, found: Iterable[Found]) -> Outcome:
    """Accept the model if one of its signatures verifies and covers every file; a signature
    from a trusted signer whose files differ is always an error (the files were changed)."""
    files = model_files(layout, artifact).files
    outcome = Outcome(artifact.name, None, [])
    for sig in found:
        try:
            signed, serialization = checker.signed(sig.path)
        except Untrusted as exc:
            outcome.notes.append(f"{sig.label} does not verify against {checker.trust.describe()}: {exc}")
            continue
        diff = differences(files, signed, serialization)
        if diff:
            raise VerificationError(
                f"{artifact.name} ({artifact.source}): {sig.label} is valid but the files differ from what it signs; "
                "the model was refused",
                details=diff[:20],
                remedy="the files were changed after signing, or signed by another revision: fetch the signed "
                "revision, or sign again (`modelcache sign`) if this content is what your site trusts",
            )
        outcome.verified_by = sig.label
        return outcome
    return outcome


def refuse_unsigned(outcomes: list[Outcome], trust: TrustPolicy, where: str) -> None:
    missing = [o for o in outcomes if o.verified_by is None]
    if not missing:
        return
    raise VerificationError(
        f"MODELCACHE_REQUIRE_SIGNATURE=1 and {len(missing)} model(s) {where} carry no signature that verifies "
        f"against {trust.describe()}; nothing was accepted",
        details=[
            f"{o.model}: "
            + ("; ".join(o.notes) if o.notes else "no signature (neither model.sig nor a site signature)")
            for o in missing
        ],
        remedy="sign them with the site's key (`modelcache sign --key PRIVATE.pem` on the host that fetched them, "
        "then push again), or trust the key that signed them (MODELCACHE_TRUST_KEY)",
    )


MEMO = ".verified.json"  # under .modelcache/signatures/


def _memo_key(lock: Lock, trust: TrustPolicy, found: dict[str, list[Found]]) -> str:
    """What a verdict depends on: the lock, the trust policy's material, every signature's bytes."""
    h = hashlib.sha256()
    for part in (trust.describe(), trust.require, trust.identity, trust.issuer, lock.to_json()):
        h.update(repr(part).encode() + b"\0")
    for path in [p for p in (trust.key, *trust.certificates) if p is not None]:
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for name in sorted(found):
        for sig in found[name]:
            h.update(f"{name}\0{sig.label}\0".encode() + hashlib.sha256(sig.path.read_bytes()).digest())
    return h.hexdigest()


def check_volume(
    layout: Layout,
    lock: Lock,
    trust: TrustPolicy,
    extra: dict[str, list[Found]] | None = None,
    *,
    memo: bool = False,
) -> list[Outcome]:
    """Every model of the lock against the trust policy; raises when one is refused.

    ``extra``: signatures not (yet) in the volume, by model name (a registry fetch checks the
    bundles it received before the files come). ``memo``: reuse the verdict of an earlier
    check of exactly the same lock, policy and signature bytes (kept in the volume, as the
    lock is), so that a warm fetch does not load the signing library again; ``--deep``
    checks afresh.
    """
    if not trust.configured:
        return []
    found = {a.name: signatures_in_volume(layout, a) + list((extra or {}).get(a.name, [])) for a in lock.artifacts}
    memo_file = layout.state / SIGNATURES_DIR / MEMO
    key = _memo_key(lock, trust, found) if memo and not extra else None
    if key is not None:
        try:
            kept = json.loads(memo_file.read_text(encoding="utf-8"))
            if kept.get("key") == key:
                return [Outcome(o["model"], o["verified_by"], list(o["notes"])) for o in kept["outcomes"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    checker = Checker(trust)
    outcomes = [check_artifact(checker, layout, a, found[a.name]) for a in lock.artifacts]
    if trust.require:
        refuse_unsigned(outcomes, trust, "in the volume")
    if key is not None:
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(memo_file, json.dumps({"key": key, "outcomes": [asdict(o) for o in outcomes]}))
        except OSError:
            pass  # a read-only volume: check afresh next time
    return outcomes


def enforce(
    layout: Layout,
    lock: Lock,
    trust: TrustPolicy,
    note,
    extra: dict[str, list[Found]] | None = None,
    *,
    memo: bool = False,
) -> list[Outcome]:
    """check_volume, with one line of outcome for the log (nothing when no trust policy is set)."""
    outcomes = check_volume(layout, lock, trust, extra, memo=memo)
    if outcomes:
        ok = sum(1 for o in outcomes if o.verified_by)
        unsigned = [o.model for o in outcomes if not o.verified_by]
        note(
            f"signatures: {ok}/{len(outcomes)} model(s) verified against {trust.describe()}"
            + (f"; not signed by a trusted signer: {', '.join(unsigned)}" if unsigned else "")
        )
        for o in outcomes:
            for line in o.notes:
                note(f"{o.model}: {line}")
    return outcomes


# --- making signatures ----------------------------------------------------------------------


def sign_artifact(layout: Layout, artifact: LockedArtifact, private_key: Path) -> Path:
    """Sign a model's files as they are in the volume (hashing every byte) with a private key.

    The signed digests are compared with the lock before the signature is kept: a volume
    whose files changed is not signed.
    """
    from model_signing import hashing, signing

    if not private_key.is_file():
        raise ConfigError(f"--key: {private_key} is not a readable file", remedy="give the PEM private key (EC)")
    target = site_signature(layout, artifact.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    mf = model_files(layout, artifact)
    hashing_config = hashing.Config().set_allow_symlinks(True)
    if mf.root.is_dir():
        hashing_config.add_ignored_paths(model_path=mf.root, paths=[REPO_SIGNATURE])
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            signing.Config().use_elliptic_key_signer(private_key=private_key).set_hashing_config(hashing_config).sign(
                mf.root, Path(tmp)
            )
        except ValueError as exc:
            raise ConfigError(
                f"cannot sign {artifact.name} with {private_key}: {exc}", remedy="give an EC private key in PEM"
            ) from None
        manifest_files = _payload_files(Path(tmp))
        wrong = [
            name
            for name, entry in mf.files.items()
            if name != REPO_SIGNATURE and manifest_files.get(name) not in (None, entry.sha256)
        ]
        absent = [name for name in mf.files if name != REPO_SIGNATURE and name not in manifest_files and not _git(name)]
        if wrong or absent:
            raise VerificationError(
                f"{artifact.name}: the files on disk differ from the lock; nothing was signed",
                details=[f"{n}: changed on disk" for n in wrong] + [f"{n}: missing" for n in absent],
                remedy="run `modelcache fetch --deep` to repair the volume, then sign again",
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _git(name: str) -> bool:
    return any(name == p or name.startswith(p + "/") for p in _GIT_PATHS)


def _payload_files(bundle: Path) -> dict[str, str]:
    """The signed file digests of a bundle this process just made (no trust check needed)."""
    import base64
    import json

    data = json.loads(bundle.read_text(encoding="utf-8"))
    statement = json.loads(base64.b64decode(data["dsseEnvelope"]["payload"]))
    return {r["name"]: r["digest"] for r in statement["predicate"]["resources"] if r.get("algorithm") == "sha256"}
