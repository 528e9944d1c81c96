"""Typed errors. Each carries the exit code of the CLI and a remedy for the operator.

The exit codes are part of the public interface (documented in docs/configuration.md):

    0  success
    1  unexpected internal error (a bug: please report it)
    2  bad configuration or bad command-line usage
    3  network failure (host unreachable, HTTP errors, retries exhausted, stalled transfer)
    4  verification failure (missing, truncated or corrupted files; config drift)
    5  not enough disk space
    6  timed out waiting for another downloader's lock on the volume
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_NETWORK = 3
EXIT_VERIFY = 4
EXIT_DISK_FULL = 5
EXIT_LOCK_TIMEOUT = 6


class ModelcacheError(Exception):
    """Base class: a message for humans, a remedy, and the process exit code.

    Every error ends with a ``remedy:`` line: the raiser's own when it knows better,
    else the class's default, which names the usual way out for that kind of failure.
    """

    exit_code: int = EXIT_INTERNAL
    title: str = "error"
    default_remedy: str = "this is a bug: please report it with the output above"

    def __init__(self, message: str, *, remedy: str | None = None, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy or self.default_remedy
        self.details = list(details)

    def render(self) -> str:
        lines = [f"modelcache: {self.title}: {self.message}"]
        lines += [f"  - {d}" for d in self.details]
        if self.remedy:
            lines.append(f"remedy: {self.remedy}")
        return "\n".join(lines)

    def __str__(self) -> str:  # pragma: no cover - exercised through render()
        return self.render()


class ConfigError(ModelcacheError):
    exit_code = EXIT_CONFIG
    title = "configuration error"
    default_remedy = "fix the setting named above (every variable is described in docs/configuration.md)"


class NetworkError(ModelcacheError):
    exit_code = EXIT_NETWORK
    title = "network error"
    default_remedy = "check HF_ENDPOINT / the URL and the network, then run `modelcache fetch` again: it resumes"


class VerificationError(ModelcacheError):
    exit_code = EXIT_VERIFY
    title = "verification failed"
    default_remedy = "run `modelcache fetch --deep`: it re-hashes every file and downloads the damaged ones again"


class DiskFullError(ModelcacheError):
    exit_code = EXIT_DISK_FULL
    title = "not enough disk space"
    default_remedy = "free space or enlarge the volume, then run `modelcache fetch` again: it resumes"


class LockTimeoutError(ModelcacheError):
    exit_code = EXIT_LOCK_TIMEOUT
    title = "volume is locked"
    default_remedy = "wait for the other downloader to finish, or stop it, then run this again"
