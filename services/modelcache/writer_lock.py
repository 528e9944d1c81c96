"""The cross-process lock on a volume: one writer at a time (fetch, rm, prune, doctor --fix)."""

from __future__ import annotations

import os
import socket

from modelcache.errors import LockTimeoutError
from modelcache.layout import Layout
from modelcache.progress import Reporter


class VolumeLock:
    """Cross-process lock on the volume: a second downloader waits, and says so.

    ``quiet``: only try once; the context value says whether the lock was taken.
    """

    def __init__(self, layout: Layout, timeout: float, reporter: Reporter, *, quiet: bool = False) -> None:
        from filelock import FileLock

        self.layout, self.timeout, self.reporter, self.quiet = layout, timeout, reporter, quiet
        self.lock = FileLock(str(layout.fetch_lock))
        self.owner = layout.state / "fetch.owner"

    def __enter__(self) -> bool:
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            if self.quiet:
                return False
            holder = self.owner.read_text().strip() if self.owner.exists() else "unknown"
            self.reporter.note(
                f"another downloader is filling this volume ({holder}); waiting up to {self.timeout:g}s for it"
            )
            try:
                self.lock.acquire(timeout=self.timeout)
            except Timeout:
                raise LockTimeoutError(
                    f"another downloader ({holder}) still holds {self.layout.fetch_lock} after {self.timeout:g}s",
                    remedy="wait for it to finish, or stop it; raise MODELCACHE_LOCK_TIMEOUT to wait longer",
                ) from None
        self.owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        return True

    def __exit__(self, *exc: object) -> None:
        if self.lock.is_locked:
            self.owner.unlink(missing_ok=True)
            self.lock.release()
