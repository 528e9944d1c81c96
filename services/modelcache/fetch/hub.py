"""Hugging Face repos: resolve a revision to a commit and list the files with their hashes,
through the real ``huggingface_hub`` client (metadata only: it never writes a file here).

The bytes are not fetched here: every file, Xet-backed or not, goes through our own
verified transfer (``fetch/transfer.py``), following the Hub's redirect to its CDN; with
``MODELCACHE_TRANSFER=xet``, Xet-backed files try hf_xet first (``fetch/xet.py``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import httpx2
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import filter_repo_objects

from modelcache.errors import ConfigError, NetworkError
from modelcache.fetch.policy import Policy
from modelcache.layout import Layout, atomic_write_text
from modelcache.models_lock import Pin
from modelcache.plan import ONNX_ENGINES, REPO_GRAPH, REPO_QUANTIZED, TORCH_WEIGHTS, Artifact
from modelcache.signatures import REPO_SIGNATURE

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
TOKEN_REMEDY = (
    "put a Hugging Face token with access to the repo in the secret file named by MODELCACHE_HF_TOKEN_FILE "
    "(default /run/secrets/hf_token; compose: the hf_token secret)"
)


@dataclass(frozen=True)
class RemoteFile:
    path: str  # inside the repo
    size: int
    oid: str  # the blob name in the cache: sha256 for LFS files, git blob sha1 otherwise
    sha256: str | None  # known up front for LFS files
    git_oid: str  # git blob sha1 (for LFS files: of the pointer, unused)
    lfs: bool
    xet_hash: str | None = None  # set when the listing says the file is stored on Xet


@dataclass(frozen=True)
class ResolvedRepo:
    artifact: Artifact
    commit: str
    files: tuple[RemoteFile, ...]


def is_commit(revision: str | None) -> bool:
    return bool(revision and _COMMIT.match(revision))


def recorded_commit(layout: Layout, artifact: Artifact) -> str | None:
    """The commit an earlier run resolved this branch to (``refs/<branch>`` in the cache)."""
    assert artifact.revision is not None
    if is_commit(artifact.revision):
        return artifact.revision
    try:
        value = layout.ref(artifact.source, artifact.revision).read_text().strip()
    except OSError:
        return None
    return value if is_commit(value) else None


def resolve(api: HfApi, layout: Layout, artifact: Artifact, policy: Policy, *, refresh: bool) -> ResolvedRepo:
    """Pin the artifact to a commit (once: later runs reuse the one recorded in the cache's
    refs) and list its files."""
    assert artifact.revision is not None
    resolved = list_files(api, artifact, policy, commit=None if refresh else recorded_commit(layout, artifact))
    if not is_commit(artifact.revision):
        atomic_write_text(layout.ref(artifact.source, artifact.revision), resolved.commit)
    return resolved


def list_files(api: HfApi, artifact: Artifact, policy: Policy, *, commit: str | None = None) -> ResolvedRepo:
    """The commit the artifact's revision points at (unless given) and the files it wants there.

    The commit comes from the model info; the files from the recursive tree listing, which
    the Hub pages (1000 entries a page) and huggingface_hub follows. Metadata only.
    """
    assert artifact.revision is not None
    what = f"{artifact.source}@{commit or artifact.revision}"
    if commit is None:
        info = _with_retries(
            lambda: api.model_info(artifact.source, revision=artifact.revision), what=what, policy=policy
        )
        commit = info.sha
    if not commit or not is_commit(commit):
        raise NetworkError(
            f"{artifact.source}: the server did not return a commit for {artifact.revision!r}",
            remedy="HF_ENDPOINT does not behave like the Hugging Face Hub; check the address",
        )
    listing = _with_retries(
        lambda: [
            e for e in api.list_repo_tree(artifact.source, revision=commit, recursive=True) if isinstance(e, RepoFile)
        ],
        what=what,
        policy=policy,
    )
    files = select_files(artifact, [_remote(entry) for entry in listing])
    if not files:
        raise ConfigError(
            f"{artifact.source}@{artifact.revision}: no file in the repo matches the configured patterns",
            remedy="check the include/exclude patterns in the manifest",
        )
    return ResolvedRepo(artifact, commit, tuple(files))


def from_pin(layout: Layout, artifact: Artifact, pin: Pin) -> ResolvedRepo:
    """The commit and files the lockfile pins: no request to the Hub."""
    assert pin.commit is not None and artifact.revision is not None
    files = tuple(
        RemoteFile(f.path, f.size or 0, f.sha256, f.sha256, "", True)
        if f.sha256
        else RemoteFile(f.path, f.size or 0, f.git or "", None, f.git or "", False)
        for f in pin.files
    )
    if not is_commit(artifact.revision):
        atomic_write_text(layout.ref(artifact.source, artifact.revision), pin.commit)
    return ResolvedRepo(artifact, pin.commit, files)


def _remote(entry: RepoFile) -> RemoteFile:
    if entry.size is None or not entry.blob_id:
        raise NetworkError(
            f"the server gave no size/blob id for {entry.path}",
            remedy="HF_ENDPOINT does not behave like the Hugging Face Hub; check the address",
        )
    if entry.lfs is not None:
        lfs = entry.lfs
        return RemoteFile(entry.path, lfs.size, lfs.sha256, lfs.sha256, entry.blob_id, True, entry.xet_hash)
    return RemoteFile(entry.path, entry.size, entry.blob_id, None, entry.blob_id, False, entry.xet_hash)


def select_files(artifact: Artifact, files: list[RemoteFile]) -> list[RemoteFile]:
    """The files the artifact wants, with the same pattern semantics as snapshot_download."""
    chosen = list(
        filter_repo_objects(
            files,
            allow_patterns=list(artifact.include) if artifact.include else None,
            ignore_patterns=list(artifact.exclude) or None,
            key=lambda f: f.path,
        )
    )
    if artifact.prefer_safetensors and any(f.path.endswith(".safetensors") for f in chosen):
        chosen = [f for f in chosen if not fnmatch.fnmatch(f.path, "*pytorch_model*.bin")]
    if artifact.engine in ONNX_ENGINES:
        # the repo's own graph (with its external weights) instead of the torch weights: its
        # int8 one for onnx-int8, else its fp32 one (quantized at fetch); with neither, the
        # torch weights stay and the downloader exports a graph from them (fetch/export.py)
        wanted = [REPO_QUANTIZED] if artifact.engine == "onnx-int8" else []
        for graph in [*wanted, REPO_GRAPH]:
            if any(f.path == graph for f in files):
                chosen = [f for f in chosen if not any(fnmatch.fnmatch(f.path, p) for p in TORCH_WEIGHTS)]
                chosen += [f for f in files if f.path in (graph, graph + "_data")]
                break
    # the publisher's signature (OpenSSF model signing) comes along whatever the patterns say
    chosen += [f for f in files if f.path == REPO_SIGNATURE and f not in chosen]
    return sorted(chosen, key=lambda f: f.path)


def _with_retries(call, *, what: str, policy: Policy):
    last = ""
    for attempt in range(policy.retries + 1):
        policy.check_cancelled()
        if attempt:
            wait = policy.backoff(attempt - 1)
            policy.notify(f"{what}: {last}; retry {attempt}/{policy.retries} in {wait:.1f}s")
            policy.sleep(wait)
        try:
            return call()
        except GatedRepoError:
            raise ConfigError(
                f"{what}: the repo is gated",
                remedy="accept its licence on the Hub; " + TOKEN_REMEDY,
            ) from None
        except RepositoryNotFoundError:
            raise ConfigError(
                f"{what}: repository not found (or private)",
                remedy="check the repo id; for a private repo give a token through MODELCACHE_HF_TOKEN_FILE",
            ) from None
        except RevisionNotFoundError:
            raise ConfigError(
                f"{what}: revision not found", remedy="check the branch, tag or commit after '@'"
            ) from None
        except EntryNotFoundError as exc:
            raise NetworkError(f"{what}: {exc}", remedy="check the repo id and revision") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise ConfigError(f"{what}: HTTP {status}, not authorised", remedy=TOKEN_REMEDY) from None
            if status is not None and 400 <= status < 500 and status not in (408, 425, 429):
                raise NetworkError(
                    f"{what}: HTTP {status}: {exc}", remedy="check the repo id, the revision and HF_ENDPOINT"
                ) from None
            last = f"HTTP {status}"
        except (httpx2.HTTPError, OSError) as exc:
            last = f"{exc.__class__.__name__}: {exc}"
    raise NetworkError(
        f"{what}: cannot reach the Hub ({policy.retries + 1} attempt(s), last: {last})",
        remedy="check HF_ENDPOINT and the network; a re-run resumes where this one stopped",
    )


def file_url(endpoint: str, repo_id: str, commit: str, path: str) -> str:
    return hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint)
