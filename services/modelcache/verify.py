"""Check a volume against its lock and the plan. Offline, standard library only.

The service's fail-fast gate calls this before it imports any heavy library, so this
module must stay light: no third-party imports.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from modelcache.hashing import sha256_file
from modelcache.layout import Layout
from modelcache.models_lock import Lockfile
from modelcache.plan import Plan
from modelcache.volume_lock import Lock, LockedArtifact, LockedFile, read_lock


@dataclass(frozen=True)
class Problem:
    issue: str  # no-lock | drift | lockfile | missing | size | sha256 | not-a-file
    path: str  # relative to the volume root (or the artifact, for drift)
    expected: str | None = None
    found: str | None = None
    artifact: str | None = None

    def line(self) -> str:
        text = f"{self.path}: {self.issue}"
        if self.expected is not None or self.found is not None:
            text += f" (expected {self.expected}, found {self.found})"
        return text


@dataclass
class Report:
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    lock: Lock | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "deep": self.deep,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "problems": [asdict(p) for p in self.problems],
        }


def wanted_artifacts(plan: Plan, lock: Lock) -> tuple[list[LockedArtifact], list[Problem]]:
    """The lock entries the plan needs, and a drift problem for each planned artifact the lock lacks."""
    by_spec = {a.spec: a for a in lock.artifacts}
    found: list[LockedArtifact] = []
    problems: list[Problem] = []
    for artifact in plan.artifacts:
        entry = by_spec.get(artifact.spec)
        if entry is None:
            held = lock.get(artifact.name)
            problems.append(
                Problem(
                    "drift",
                    artifact.dest,
                    expected=f"{artifact.describe()} as configured",
                    found=f"{held.source}{'@' + held.revision if held.revision else ''} with other settings"
                    if held
                    else "not in the lock",
                    artifact=artifact.name,
                )
            )
        else:
            found.append(entry)
    return found, problems


def check_file(layout: Layout, entry: LockedFile, *, deep: bool, artifact: str | None = None) -> Problem | None:
    path = layout.abs(entry.path)
    try:
        st = os.stat(path)  # follows the snapshot symlink to its blob
    except FileNotFoundError:
        broken = os.path.islink(path)
        return Problem("missing", entry.path, "a file", "a broken symlink" if broken else "nothing", artifact)
    except OSError as exc:
        return Problem("missing", entry.path, "a readable file", exc.strerror, artifact)
    if not stat.S_ISREG(st.st_mode):
        return Problem("not-a-file", entry.path, "a regular file", "something else", artifact)
    if st.st_size != entry.size:
        return Problem("size", entry.path, f"{entry.size} bytes", f"{st.st_size} bytes", artifact)
    if deep:
        try:
            actual = sha256_file(path)
        except OSError as exc:
            return Problem("missing", entry.path, "a readable file", exc.strerror, artifact)
        if actual != entry.sha256:
            return Problem("sha256", entry.path, entry.sha256, actual, artifact)
    return None


def check_files(
    layout: Layout,
    entries: Iterable[tuple[LockedFile, str | None]],
    *,
    deep: bool,
    workers: int = 4,
    on_done: Callable[[LockedFile], None] | None = None,
) -> list[Problem]:
    """Check files, in parallel when deep (hashlib releases the GIL on large reads)."""
    items = list(entries)

    def one(item: tuple[LockedFile, str | None]) -> Problem | None:
        result = check_file(layout, item[0], deep=deep, artifact=item[1])
        if on_done:
            on_done(item[0])
        return result

    if deep and workers > 1 and len(items) > 1:
        # Biggest files first so one large file does not finish last on its own.
        items.sort(key=lambda it: -it[0].size)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
            results = list(pool.map(one, items))
    else:
        results = [one(item) for item in items]
    return [p for p in results if p is not None]


def verify(
    layout: Layout,
    plan: Plan,
    *,
    deep: bool = False,
    workers: int = 4,
    lock: Lock | None = None,
    lockfile: Lockfile | None = None,
) -> Report:
    """Every problem between the plan (and the lockfile, when one is configured), the lock and
    the bytes on disk, in one report."""
    start = time.perf_counter()
    report = Report(deep=deep)
    lock = lock if lock is not None else read_lock(layout)
    report.lock = lock
    if lock is None:
        report.problems.append(
            Problem("no-lock", layout.rel(layout.lock_file), "a lock written by the downloader", "nothing")
        )
        report.problems += [Problem("missing", a.dest, "downloaded", "no lock", a.name) for a in plan.artifacts]
        report.seconds = time.perf_counter() - start
        return report
    entries, drift = wanted_artifacts(plan, lock)
    report.problems += drift
    if lockfile is not None and lock.lockfile != lockfile.digest:
        report.problems.append(_lockfile_problem(layout, lock, lockfile))
    files = [(f, a.name) for a in entries for f in a.files]
    report.files = len(files)
    report.bytes = sum(f.size for f, _ in files)
    report.problems += check_files(layout, files, deep=deep, workers=workers)
    report.seconds = time.perf_counter() - start
    return report


def _lockfile_problem(layout: Layout, lock: Lock, lockfile: Lockfile) -> Problem:
    return Problem(
        "lockfile",
        layout.rel(layout.lock_file),
        expected=f"filled from the configured lockfile ({lockfile.digest[:12]})",
        found=f"filled from another lockfile ({lock.lockfile[:12]})" if lock.lockfile else "filled without one",
    )


def verify_lock(
    layout: Layout, lock: Lock | None, *, deep: bool = False, workers: int = 4, lockfile: Lockfile | None = None
) -> Report:
    """Every file the lock names, as the lock says (and the lock made from the configured
    lockfile), whatever the configuration asks: what the service checks at start and on reload."""
    start = time.perf_counter()
    report = Report(deep=deep, lock=lock)
    if lock is None:
        report.problems.append(
            Problem("no-lock", layout.rel(layout.lock_file), "a lock written by the downloader", "nothing")
        )
    else:
        if lockfile is not None and lock.lockfile != lockfile.digest:
            report.problems.append(_lockfile_problem(layout, lock, lockfile))
        files = [(f, a.name) for a in lock.artifacts for f in a.files]
        report.files, report.bytes = len(files), sum(f.size for f, _ in files)
        report.problems += check_files(layout, files, deep=deep, workers=workers)
    report.seconds = time.perf_counter() - start
    return report
