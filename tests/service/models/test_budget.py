"""service/budget.py: the memory budget's decisions, as pure functions (no processes)."""

from __future__ import annotations

from modelcache.service.models.budget import Evict, Fits, Refuse, Resident, Wait, make_room, mib, oversized

MIB = 2**20
BUDGET = 250 * MIB


def decide(load: int, peak: int = 0, *residents: Resident, budget: int = BUDGET):
    return make_room("m", load=load * MIB, peak=peak * MIB, budget=budget, residents=residents)


def test_a_model_that_fits_loads_beside_the_others() -> None:
    assert decide(90, 100, Resident("a", 140 * MIB)) == Fits()
    assert decide(90) == Fits()


def test_idle_models_are_evicted_least_recently_used_first() -> None:
    old, recent = Resident("old", 100 * MIB, last_used=1.0), Resident("recent", 100 * MIB, last_used=2.0)
    assert decide(90, 0, recent, old) == Evict("old")
    # only the unpinned, idle ones are candidates, even when they are the most recent
    pinned = Resident("pinned", 100 * MIB, pinned=True, last_used=0.0)
    assert decide(90, 0, pinned, recent) == Evict("recent")


def test_a_model_whose_peak_is_over_the_budget_is_served_alone() -> None:
    # Whisper tiny.en: 207 MiB loaded, about 400 MiB at its peak, under a 250 MiB budget
    assert decide(207, 400) == Fits()  # nothing in the way: it loads
    assert decide(207, 400, Resident("minilm", 90 * MIB)) == Evict("minilm")  # alone
    # and a loaded model that peaked over the budget makes way for the next one
    assert decide(90, 0, Resident("whisper", 400 * MIB)) == Evict("whisper")


def test_busy_and_loading_models_are_waited_for_with_the_reason() -> None:
    busy = Resident("whisper", 400 * MIB, busy=3)
    decision = decide(90, 0, busy)
    assert isinstance(decision, Wait) and decision.blockers == ("whisper",)
    assert "whisper (busy with 3 requests, 400.0 MiB)" in decision.reason
    assert "needs 90.0 MiB of MODELCACHE_MEMORY_BUDGET (250.0 MiB)" in decision.reason
    loading = decide(90, 0, Resident("other", 200 * MIB, state="loading"))
    assert isinstance(loading, Wait) and "other (loading" in loading.reason
    one = decide(90, 0, Resident("w", 200 * MIB, busy=1))
    assert isinstance(one, Wait) and "busy with 1 request," in one.reason


def test_an_idle_model_is_evicted_only_when_that_is_enough() -> None:
    busy, idle = Resident("busy", 150 * MIB, busy=1), Resident("idle", 50 * MIB)
    assert decide(90, 0, busy, idle) == Evict("idle")  # 150 + 90 fits once the idle one is gone
    assert isinstance(decide(120, 0, busy, idle), Wait)  # 150 + 120 does not, whatever is evicted


def test_pinned_models_that_leave_no_room_are_a_refusal_naming_them() -> None:
    decision = decide(90, 0, Resident("whisper", 200 * MIB, pinned=True), Resident("idle", 10 * MIB))
    assert isinstance(decision, Refuse)
    assert "the pinned models whisper (200.0 MiB) hold 200.0 MiB" in decision.reason
    assert "MODELCACHE_MEMORY_BUDGET to at least 290m" in decision.remedy and "MODELCACHE_PIN" in decision.remedy


def test_a_model_larger_than_the_budget_once_loaded_is_refused_whatever_is_loaded() -> None:
    decision = decide(300, 0)
    assert isinstance(decision, Refuse) and "takes 300.0 MiB loaded (measured)" in decision.reason
    assert "at least 300m" in decision.remedy


def test_the_warning_names_the_model_its_peak_the_budget_and_what_to_set() -> None:
    assert oversized("w", 200 * MIB, BUDGET, 290 * MIB) is None
    warning = oversized("whisper-tiny.en", 400 * MIB, BUDGET, 490 * MIB)
    assert warning is not None
    assert warning.startswith("whisper-tiny.en needs 400.0 MiB at its peak")
    assert "MODELCACHE_MEMORY_BUDGET (250.0 MiB)" in warning and "served alone" in warning
    assert "MODELCACHE_MEMORY_BUDGET=490m to keep every model loaded" in warning
    assert "400m is the least that holds it" in warning
    assert mib(MIB + 1) == "2m" and mib(MIB) == "1m"
