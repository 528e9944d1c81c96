"""Turn each planned artifact into the list of files still to transfer.

A file already present and intact costs no transfer: Hub blobs are named by their hash
and only ever appear after verification, so a blob with the right size is reused (and
re-hashed in deep mode); a whisper/URL file is checked against its pinned sha256.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2

from modelcache import signatures
from modelcache.errors import VerificationError
from modelcache.fetch import export, hub, xet
from modelcache.fetch.context import Context
from modelcache.fetch.jobs import ArtifactState, Job, Progress
from modelcache.fetch.transfer import Expected, download, publish
from modelcache.hashing import hash_file
from modelcache.layout import Layout, link_snapshot_file
from modelcache.models_lock import Pin
from modelcache.plan import Artifact
from modelcache.settings import Settings
from modelcache.volume_lock import Lock, LockedFile

# --- Hub repos ----------------------------------------------------------------------------


def plan_repo(
    ctx: Context, artifact: Artifact, *, refresh: bool, pin: Pin | None = None
) -> tuple[ArtifactState, list[Job]]:
    """The files of a repo still to transfer: listed by the Hub, or by the lockfile's pin (no request)."""
    if pin is not None:
        resolved = hub.from_pin(ctx.layout, artifact, pin)
    else:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=ctx.settings.hf_endpoint, token=ctx.token, user_agent="modelcache")
        resolved = hub.resolve(api, ctx.layout, artifact, ctx.policy, refresh=refresh)
    export.require(artifact, list(resolved.files))
    state = ArtifactState(artifact, resolved.commit)
    jobs: list[Job] = []
    signed = _signed_first(ctx, artifact, resolved, state, pinned=pin is not None)
    for remote in resolved.files:
        if remote.path == signatures.REPO_SIGNATURE and signed is not None:
            continue  # fetched and checked already
        entry = _present_hub_file(ctx, artifact.source, resolved.commit, remote)
        if entry is not None:
            state.entries.append(entry)
        else:
            jobs.append(_hub_job(ctx, artifact.source, resolved.commit, remote, pinned=pin is not None, signed=signed))
    return state, jobs


def _signed_first(
    ctx: Context, artifact: Artifact, resolved: hub.ResolvedRepo, state: ArtifactState, *, pinned: bool
) -> dict[str, str] | None:
    """A repo carrying the publisher's model.sig, with a trust policy set: bring the signature
    first and check it, so that every file is held to its signed sha256 before it becomes
    visible (a file the signature does not name is not fetched at all). None when there is no
    signature or it is not from a trusted signer (the check before the lock then decides)."""
    remote = next((f for f in resolved.files if f.path == signatures.REPO_SIGNATURE), None)
    if remote is None or not ctx.settings.trust.configured:
        return None
    entry = _present_hub_file(ctx, artifact.source, resolved.commit, remote)
    if entry is None:
        entry, _ = _hub_job(ctx, artifact.source, resolved.commit, remote, pinned=pinned).run(lambda _n: None)
    state.entries.append(entry)
    try:
        files, serialization = signatures.Checker(ctx.settings.trust).signed(ctx.layout.abs(entry.path))
    except signatures.Untrusted:
        return None
    digests = {name: digest for name, (algorithm, digest) in files.items() if algorithm == "sha256"}
    unsigned = [
        f.path for f in resolved.files if not signatures.ignored(f.path, serialization) and f.path not in digests
    ]
    differ = [
        f"{f.path}: the Hub lists sha256 {f.sha256[:12]}…, the signature says {digests[f.path][:12]}…"
        for f in resolved.files
        if f.sha256 and f.path in digests and digests[f.path] != f.sha256
    ]
    if unsigned or differ:
        raise VerificationError(
            f"{artifact.name} ({artifact.source}@{resolved.commit[:12]}): its {signatures.REPO_SIGNATURE} is valid "
            "but the files differ from what it signs; the model was refused before any file was fetched",
            details=(differ + [f"{p}: in the repo, but not among the signed files" for p in unsigned])[:20],
            remedy="the repo changed after it was signed: pin the signed revision, or ask the publisher to sign again",
        )
    return digests


def _pointer(layout: Layout, repo_id: str, commit: str, remote: hub.RemoteFile) -> Path:
    return layout.snapshot(repo_id, commit) / remote.path


def _entry(layout: Layout, repo_id: str, commit: str, remote: hub.RemoteFile, sha256: str) -> LockedFile:
    return LockedFile(
        path=layout.rel(_pointer(layout, repo_id, commit, remote)),
        size=remote.size,
        sha256=sha256,
        blob=layout.rel(layout.blob(repo_id, remote.oid)),
    )


def _present_hub_file(ctx: Context, repo_id: str, commit: str, remote: hub.RemoteFile) -> LockedFile | None:
    """The lock entry of an intact blob already in the cache (linking its snapshot path), or None."""
    blob = ctx.layout.blob(repo_id, remote.oid)
    try:
        if blob.is_symlink() or not blob.is_file() or blob.stat().st_size != remote.size:
            _discard(blob)
            return None
    except OSError:
        return None
    if remote.lfs and not ctx.deep:
        sha256 = remote.oid  # the blob is named by its verified sha256
    else:
        hashed = hash_file(blob, git_size=None if remote.lfs else remote.size)
        good = hashed.sha256 == remote.sha256 if remote.lfs else hashed.git_oid == remote.git_oid
        if not good:
            _discard(blob)
            return None
        sha256 = hashed.sha256
    link_snapshot_file(blob, _pointer(ctx.layout, repo_id, commit, remote))
    return _entry(ctx.layout, repo_id, commit, remote, sha256)


def _hub_job(
    ctx: Context,
    repo_id: str,
    commit: str,
    remote: hub.RemoteFile,
    *,
    pinned: bool = False,
    signed: dict[str, str] | None = None,
) -> Job:
    """Every Hub file, Xet-backed or not, ends the same way: verified in partial/, then published."""
    layout = ctx.layout
    part = layout.hub_partial(repo_id, remote.oid)
    label = f"{repo_id}/{remote.path}"
    if pinned:
        pin = f"the lockfile's pin of {repo_id}@{commit[:12]}"
        fix = (
            "HF_ENDPOINT serves other bytes at that commit than the lockfile pins; check HF_ENDPOINT, or if the "
            "lockfile is wrong, pin again with `modelcache lock --upgrade " + repo_id + "`"
        )
    else:
        pin = f"the Hub's listing of {repo_id}@{commit[:12]}"
        fix = "the server at HF_ENDPOINT serves other bytes than its own listing; report it or use another mirror"
    if signed is not None and remote.path in signed:  # held to the publisher's signed digest too
        pin = f"the signed digest in {repo_id}'s {signatures.REPO_SIGNATURE}"
        fix = "the server serves other bytes than the publisher signed; use another mirror, or report it"
    expected = Expected(
        size=remote.size,
        sha256=remote.sha256 or (signed or {}).get(remote.path),
        git_oid=None if remote.lfs else remote.git_oid,
        pin=pin,
        fix=fix,
    )

    def run(progress: Progress) -> tuple[LockedFile, int]:
        blob = layout.blob(repo_id, remote.oid)
        url = hub.file_url(ctx.settings.hf_endpoint, repo_id, commit, remote.path)
        result = None
        if ctx.settings.transfer == "xet" and remote.lfs:
            result = xet.fetch(ctx, (repo_id, commit, remote.path), url, part, expected, label=label, progress=progress)
        if result is None:
            result = download(
                ctx.client,
                url,
                part,
                expected,
                ctx.policy,
                label=label,
                headers=ctx.hub_headers(),
                progress=progress,
                segmenting=ctx.segmenting,
            )
        publish(part, blob)
        link_snapshot_file(blob, _pointer(layout, repo_id, commit, remote))
        return _entry(layout, repo_id, commit, remote, result.sha256), result.transferred

    return Job(label=label, size=remote.size, partial=part, run=run)


def _discard(path: Path) -> None:
    """Remove whatever occupies a path we own (a wrong file, a stray directory)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- whisper checkpoints and plain URLs -----------------------------------------------------


def plan_url(ctx: Context, artifact: Artifact, *, pin: Pin | None = None) -> tuple[ArtifactState, list[Job]]:
    assert artifact.sha256 is not None
    layout = ctx.layout
    final = layout.abs(artifact.dest)
    state = ArtifactState(artifact, None)
    if final.is_file() and not final.is_symlink():
        have = final.stat().st_size
        known = _previous_entry(ctx.previous, artifact.dest)
        if not ctx.deep and known is not None and known.size == have and known.sha256 == artifact.sha256:
            state.entries.append(known)
            return state, []
        if hash_file(final).sha256 == artifact.sha256:
            state.entries.append(LockedFile(artifact.dest, have, artifact.sha256))
            return state, []
        _discard(final)
    elif final.exists() or final.is_symlink():
        _discard(final)  # a directory or a link where the checkpoint belongs
    part = layout.partial / f"{artifact.sha256}.part"
    size = pin.files[0].size if pin is not None else remote_size(ctx.client, artifact.source, ctx.policy.stall_timeout)

    sha256_from, fix = _pin_of(ctx.settings, artifact)
    expected = Expected(size=size, sha256=artifact.sha256, pin=sha256_from, fix=fix)

    def run(progress: Progress) -> tuple[LockedFile, int]:
        result = download(
            ctx.client,
            artifact.source,
            part,
            expected,
            ctx.policy,
            label=artifact.name,
            progress=progress,
            segmenting=ctx.segmenting,
        )
        publish(part, final)
        return LockedFile(artifact.dest, result.size, result.sha256), result.transferred

    return state, [Job(label=artifact.name, size=size, partial=part, run=run)]


def _pin_of(settings: Settings, artifact: Artifact) -> tuple[str, str]:
    """Which setting holds the sha256 a URL artifact must have, and how to correct it."""
    if artifact.kind == "whisper" and settings.whisper_sha256:
        return "MODELCACHE_WHISPER_SHA256", (
            "if the file at MODELCACHE_WHISPER_URL is the right one, set MODELCACHE_WHISPER_SHA256={got}; "
            "otherwise fix MODELCACHE_WHISPER_URL"
        )
    if artifact.kind == "whisper" and settings.whisper_url:
        return "the sha256 inside MODELCACHE_WHISPER_URL", (
            "if the file is the right one, set MODELCACHE_WHISPER_SHA256={got}; otherwise fix MODELCACHE_WHISPER_URL"
        )
    if artifact.kind == "whisper":
        return "openai-whisper's checksum table", (
            "the download host serves a damaged checkpoint: try again later, or give a mirror in "
            "MODELCACHE_WHISPER_URL (with MODELCACHE_WHISPER_SHA256)"
        )
    return f"the manifest's sha256 for {artifact.name}", (
        f'if the file at {artifact.source} is the right one, write sha256 = "{{got}}" in its [[file]] entry '
        "of the manifest; otherwise fix its url"
    )


def _previous_entry(lock: Lock | None, path: str) -> LockedFile | None:
    if lock is None:
        return None
    return next((f for f in lock.files if f.path == path), None)


def remote_size(client: httpx2.Client, url: str, timeout: float) -> int | None:
    """Content-Length from a HEAD request (for the disk check and resume); None if unknown."""
    try:
        response = client.head(url, headers={"Accept-Encoding": "identity"}, timeout=timeout, follow_redirects=True)
    except httpx2.HTTPError:
        return None  # the transfer itself retries and reports
    length = response.headers.get("content-length")
    return int(length) if response.status_code == 200 and length and length.isdigit() else None
