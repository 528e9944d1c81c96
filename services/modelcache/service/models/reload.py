"""Reload: what a new lock of the volume means for the models being served.

The lifecycle (``lifecycle.py``) runs a reload: it reads and verifies the new lock here
(:func:`read_new_lock`), refuses a subset-serving service's lock that lacks its models
(:func:`subset_missing`), matches the new entries against the old ones
(:func:`merge`: the same configuration, commit and file contents keep their entry, its
process and its measured sizes), loads what must load beside the old set, and swaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelcache.errors import ModelcacheError
from modelcache.layout import Layout
from modelcache.plan import Plan
from modelcache.service.faults import ReloadError
from modelcache.service.models.entry import ModelEntry
from modelcache.service.models.selection import Selection, select
from modelcache.service.models.volume import verify_volume
from modelcache.settings import Settings
from modelcache.volume_lock import Lock, read_lock


@dataclass
class ReloadReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    seconds: float = 0.0
    drift: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "removed": self.removed,
            "kept": self.kept,
            "seconds": round(self.seconds, 3),
            "drift": self.drift,
        }


def read_new_lock(settings: Settings, layout: Layout, plan: Plan, follow: bool) -> tuple[Lock, Selection]:
    """The volume's lock now, verified like at start, and what of it to serve; or ReloadError."""
    try:
        lock = read_lock(layout)
        report = verify_volume(settings, layout, lock)
    except ModelcacheError as exc:
        raise ReloadError(exc.message, details=exc.details, remedy=exc.remedy) from None
    if not report.ok or lock is None:
        raise ReloadError(
            f"the volume does not hold what its lock says ({len(report.problems)} problem(s))",
            details=[p.line() for p in report.problems[:20]],
            remedy="run the downloader again (`docker compose run --rm model-downloader`), then reload; "
            "the previous models keep serving",
        )
    return lock, select(plan, lock, follow=follow, configured=settings.serve == "configured")


def subset_missing(selection: Selection, *, follow: bool) -> list[str]:
    """For a service that serves a configured subset of a shared volume: the configured
    models the new lock lacks (it refuses such a lock), one sentence each."""
    if follow:
        return []
    return [f"the configuration asks for {m}, which the new lock does not hold" for m in selection.missing]


def subset_refusal(configured: int, missing: list[str]) -> ReloadError:
    return ReloadError(
        f"this service serves {configured} configured model(s) of a shared volume, and the new lock lacks some of them",
        details=missing,
        remedy="fetch them into the volume (the downloader with this service's configuration), then reload",
    )


@dataclass
class Merge:
    """The new set of entries, and how it differs from the old one."""

    entries: list[ModelEntry]  # the new set, in the lock's order
    new: list[ModelEntry]  # entries not served before (added, or a changed revision): no process yet
    retired: list[ModelEntry]  # old entries no longer served
    report: ReloadReport


def merge(old: list[ModelEntry], fresh: list[ModelEntry]) -> Merge:
    """Keep an old entry where the new lock holds the same model (same id, configuration,
    commit and file contents); take the fresh entry elsewhere. A fresh entry of a model
    served before under another revision starts with that one's measured sizes (the best
    guess until it is loaded and measured itself)."""
    by_key = {e.key: e for e in old}
    entries: list[ModelEntry] = []
    new: list[ModelEntry] = []
    report = ReloadReport()
    for entry in fresh:
        kept = by_key.get(entry.key)
        if kept is not None and kept.id == entry.id:  # loaded or not (evicted under a budget): the same model
            kept.aliases = entry.aliases
            entries.append(kept)
            report.kept.append(kept.id)
        else:
            entries.append(entry)
            new.append(entry)
            report.added.append(entry.id)
    for entry in new:
        older = [o for o in old if o.id == entry.id]
        entry.load_bytes = max((o.load_bytes for o in older), default=0)
        entry.peak_bytes = max((o.peak_bytes for o in older), default=0)
    retired = [e for e in old if e not in entries]
    report.removed = [e.id for e in retired if e.id not in report.added]
    return Merge(entries, new, retired, report)
