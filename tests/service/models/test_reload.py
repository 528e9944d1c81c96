"""models/reload.py ``merge``: what a new lock means for the entries being served (kept,
new under another revision, retired), without processes."""

from __future__ import annotations

from modelcache.plan import Artifact, build_plan
from modelcache.service.models.entry import ModelEntry, ModelState, entry_for
from modelcache.service.models.reload import merge
from modelcache.settings import Settings
from modelcache.volume_lock import LockedArtifact
from tests.support.locks import locked_of

MIB = 2**20
C1, C2 = "1" * 40, "2" * 40

PLAN = build_plan(
    Settings.from_env(
        {
            "MODELCACHE_DIR": "/models",
            "MODELCACHE_WHISPER": "tiny,base",
            "MODELCACHE_TEXT_EMBEDDING": "org/emb",
            "MODELCACHE_VISION": "org/vis",
            "MODELCACHE_FACE": "none",
        }
    )
)
TINY, BASE, EMB, VIS = PLAN.artifacts


def locked(artifact: Artifact, commit: str = C1, sha256: str = "a" * 64) -> LockedArtifact:
    return locked_of(artifact, commit=commit, sha256=sha256, size=100)


def entry(artifact: Artifact, commit: str = C1, *, first_asr: bool = False, **figures) -> ModelEntry:
    made = entry_for(artifact, locked(artifact, commit), first_asr=first_asr)
    for name, value in figures.items():
        setattr(made, name, value)
    return made


def loaded(artifact: Artifact, commit: str = C1, *, first_asr: bool = False) -> ModelEntry:
    """An old entry that was served and measured."""
    return entry(
        artifact, commit, first_asr=first_asr, state=ModelState.LOADED, load_bytes=90 * MIB, peak_bytes=120 * MIB
    )


def test_the_same_model_keeps_its_entry_and_takes_the_new_aliases() -> None:
    old_tiny, old_emb = loaded(TINY, first_asr=True), loaded(EMB)
    assert old_tiny.aliases == ("whisper-1",)
    # the new lock puts base first: it answers as whisper-1 now
    fresh = [entry(BASE, first_asr=True), entry(TINY), entry(EMB)]
    merged = merge([old_tiny, old_emb], fresh)
    assert merged.entries[1] is old_tiny and merged.entries[2] is old_emb  # the same objects, with their process
    assert old_tiny.aliases == ()
    assert merged.entries[0] is fresh[0] and merged.entries[0].aliases == ("whisper-1",)
    assert merged.new == [fresh[0]]
    assert merged.retired == []
    assert merged.report.kept == ["whisper-tiny", "org/emb"]
    assert merged.report.added == ["whisper-base"]
    assert merged.report.removed == []
    assert fresh[0].load_bytes == 0 and fresh[0].peak_bytes == 0  # never served: nothing measured


def test_a_changed_revision_is_a_new_entry_that_starts_with_the_measured_sizes() -> None:
    old_emb, old_vis = loaded(EMB, C1), loaded(VIS, C1)
    old_emb.peak_bytes = 300 * MIB
    fresh = [entry(EMB, C2), entry(VIS, C1)]
    merged = merge([old_emb, old_vis], fresh)
    new_emb = merged.entries[0]
    assert new_emb is fresh[0] and new_emb is not old_emb
    assert new_emb.locked.commit == C2
    assert (new_emb.load_bytes, new_emb.peak_bytes) == (90 * MIB, 300 * MIB)  # the old revision's, until measured
    assert merged.new == [new_emb]
    assert merged.entries[1] is old_vis
    # the old revision's entry is retired, but its id is still served: not "removed"
    assert merged.retired == [old_emb]
    assert merged.report.added == ["org/emb"] and merged.report.kept == ["org/vis"]
    assert merged.report.removed == []


def test_a_changed_file_under_the_same_commit_is_a_new_entry() -> None:
    old = loaded(EMB)
    fresh = entry_for(EMB, locked(EMB, C1, sha256="b" * 64), first_asr=False)
    merged = merge([old], [fresh])
    assert merged.entries == [fresh] and merged.new == [fresh]
    assert merged.retired == [old]
    assert (fresh.load_bytes, fresh.peak_bytes) == (90 * MIB, 120 * MIB)


def test_models_no_longer_in_the_lock_are_retired_and_reported_removed() -> None:
    old = [loaded(TINY, first_asr=True), loaded(EMB), loaded(VIS)]
    fresh = [entry(EMB)]
    merged = merge(old, fresh)
    assert merged.entries == [old[1]]
    assert merged.retired == [old[0], old[2]]
    assert merged.report.removed == ["whisper-tiny", "org/vis"]
    assert merged.report.kept == ["org/emb"] and merged.report.added == []
    assert merged.new == []


def test_an_unloaded_kept_entry_keeps_its_own_figures() -> None:
    # a model served under a memory budget and unloaded: kept (same key), no process, measured before
    old = entry(EMB, state=ModelState.UNLOADED, load_bytes=50 * MIB, peak_bytes=70 * MIB)
    merged = merge([old], [entry(EMB)])
    assert merged.entries == [old] and merged.report.kept == ["org/emb"]
    assert (old.load_bytes, old.peak_bytes) == (50 * MIB, 70 * MIB)
    assert merged.retired == [] and merged.report.removed == []


def test_a_new_entry_takes_the_largest_figures_of_the_entries_it_replaces() -> None:
    # two old entries of one id (a retired revision still answering, and its successor)
    first = entry(EMB, C1, state=ModelState.RETIRED, load_bytes=100 * MIB, peak_bytes=110 * MIB)
    second = entry(EMB, C2, state=ModelState.LOADED, load_bytes=80 * MIB, peak_bytes=200 * MIB)
    fresh = entry(EMB, "3" * 40)
    merged = merge([first, second], [fresh])
    assert (fresh.load_bytes, fresh.peak_bytes) == (100 * MIB, 200 * MIB)
    assert merged.retired == [first, second] and merged.report.removed == []


def test_a_model_evicted_under_a_budget_is_kept_not_added_again() -> None:
    """An unloaded entry (evicted to make room) that the new lock still holds is the same
    model: kept with its measured sizes, not new (it must not get a second queue)."""
    evicted = entry(EMB, state=ModelState.UNLOADED, load_bytes=90 * MIB, peak_bytes=120 * MIB)
    merged = merge([evicted], [entry(EMB)])
    assert merged.entries == [evicted] and merged.new == []
    assert merged.report.kept == ["org/emb"] and merged.report.added == []
    assert (evicted.load_bytes, evicted.peak_bytes) == (90 * MIB, 120 * MIB)
