"""models/selection.py: which of the lock's models the service serves (follow the lock, a
configured subset of it, or the lock winning over a configuration that asks for more)."""

from __future__ import annotations

from dataclasses import replace

from modelcache.plan import Artifact, Plan, build_plan
from modelcache.service.models.selection import select
from modelcache.settings import Settings
from modelcache.volume_lock import Lock, LockedArtifact
from tests.support.locks import locked_of

COMMIT = "c" * 40


def plan_for(**env: str) -> Plan:
    """The plan of a configuration; every model off unless named."""
    base = {
        "MODELCACHE_DIR": "/models",
        "MODELCACHE_WHISPER": "none",
        "MODELCACHE_TEXT_EMBEDDING": "none",
        "MODELCACHE_VISION": "none",
        "MODELCACHE_FACE": "none",
    }
    return build_plan(Settings.from_env(base | env))


def locked(artifact: Artifact, *, commit: str = COMMIT, role: str | None = "same") -> LockedArtifact:
    return locked_of(artifact, commit=commit, sha256="1" * 64 if artifact.is_repo else "2" * 64, role=role)


def lock_of(*artifacts: Artifact | LockedArtifact) -> Lock:
    entries = tuple(a if isinstance(a, LockedArtifact) else locked(a) for a in artifacts)
    return Lock(plan_digest="d" * 64, artifacts=entries)


def served(selection) -> list[str]:
    return [artifact.name for artifact, _ in selection.served]


FULL = plan_for(MODELCACHE_WHISPER="tiny", MODELCACHE_TEXT_EMBEDDING="org/emb", MODELCACHE_VISION="org/vis")
WHISPER, EMB, VIS = FULL.artifacts
OTHER = plan_for(MODELCACHE_TEXT_EMBEDDING="org/other").artifacts[0]


def test_a_configuration_asking_for_exactly_the_lock_follows_it() -> None:
    lock = lock_of(VIS, WHISPER, EMB)
    selection = select(FULL, lock)
    assert selection.follow is True
    assert served(selection) == ["org/vis", "whisper/tiny", "org/emb"]  # the lock's order
    assert [locked for _, locked in selection.served] == list(lock.artifacts)
    assert selection.served[1][0] is WHISPER  # the plan's own artifact, not a rebuilt one
    assert selection.drift == [] and selection.missing == []


def test_a_configuration_asking_for_some_of_the_lock_serves_that_subset() -> None:
    subset = plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb")
    selection = select(subset, lock_of(WHISPER, EMB, VIS))
    assert selection.follow is False
    assert served(selection) == ["org/emb"]
    assert selection.drift == [] and selection.missing == []


def test_a_subset_is_served_in_the_configurations_order() -> None:
    plan = plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb", MODELCACHE_VISION="org/vis")
    selection = select(plan, lock_of(VIS, WHISPER, EMB))
    assert selection.follow is False
    assert served(selection) == ["org/emb", "org/vis"]


def test_a_model_the_lock_lacks_makes_the_lock_win_and_is_reported() -> None:
    # the configuration asks for whisper, emb and vis; the lock holds whisper, emb and another model
    selection = select(FULL, lock_of(WHISPER, EMB, OTHER))
    assert selection.follow is True
    assert served(selection) == ["whisper/tiny", "org/emb", "org/other"]
    assert selection.missing == ["org/vis@main (vision)"]
    assert selection.drift == [
        "the configuration asks for org/vis@main (vision), which the volume's lock does not hold",
        "the volume's lock holds org/other@main (text-embedding), which the configuration does not ask for",
    ]


def test_a_changed_configuration_of_a_locked_model_is_drift() -> None:
    # same repo, another revision: another spec, so the lock's entry is not what is asked for
    pinned = plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb@v2")
    selection = select(pinned, lock_of(EMB))
    assert selection.follow is True
    assert served(selection) == ["org/emb"]
    assert selection.served[0][0].revision == "main"  # rebuilt from the lock, as the lock has it
    assert selection.missing == ["org/emb@v2 (text-embedding)"]
    assert len(selection.drift) == 2
    assert "which the volume's lock does not hold" in selection.drift[0]
    assert selection.drift[1].startswith("the volume's lock holds org/emb@main (text-embedding)")


def test_a_subset_service_keeps_serving_its_subset_after_a_reload_and_reports_what_is_missing() -> None:
    subset = plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb", MODELCACHE_VISION="org/vis")
    selection = select(subset, lock_of(WHISPER, EMB), follow=False)
    assert selection.follow is False
    assert served(selection) == ["org/emb"]  # the lock's other models stay unserved
    assert selection.missing == ["org/vis@main (vision)"]
    # only the missing model is drift: the lock's others are not asked for, by design
    assert selection.drift == [
        "the configuration asks for org/vis@main (vision), which the volume's lock does not hold"
    ]


def test_a_following_service_serves_what_a_new_lock_holds() -> None:
    selection = select(FULL, lock_of(WHISPER, EMB, VIS, OTHER), follow=True)
    assert selection.follow is True
    assert served(selection) == ["whisper/tiny", "org/emb", "org/vis", "org/other"]
    assert selection.missing == []
    assert selection.drift == [
        "the volume's lock holds org/other@main (text-embedding), which the configuration does not ask for"
    ]
    # the same lock for a service deciding at start: a superset of the configuration is a subset service
    assert select(FULL, lock_of(WHISPER, EMB, VIS, OTHER)).follow is False


def test_a_model_the_configuration_does_not_name_is_rebuilt_from_its_lock_entry() -> None:
    checkpoint = plan_for(MODELCACHE_WHISPER="base").artifacts[0]
    selection = select(plan_for(MODELCACHE_WHISPER="base.en"), lock_of(checkpoint))
    [(artifact, entry)] = selection.served
    assert artifact == checkpoint  # name, role, kind, source, dest, sha256 (from the file) and engine
    assert artifact.spec == entry.spec
    assert served(selection) == ["whisper/base"]
    assert selection.drift[1].startswith("the volume's lock holds https://")


def test_roles_the_service_does_not_serve_are_left_out() -> None:
    plan = plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb", MODELCACHE_MLX="org/mlx-model")
    mlx = plan.artifacts[1]
    assert mlx.role == "mlx"
    # the lock lacking it is no drift; holding it serves nothing more
    selection = select(plan, lock_of(EMB))
    assert selection.follow is True and served(selection) == ["org/emb"]
    assert selection.missing == [] and selection.drift == []
    assert served(select(plan, lock_of(EMB, mlx))) == ["org/emb"]


def test_entries_of_an_old_lock_without_roles_are_served_only_when_configured() -> None:
    old_lock = lock_of(locked(EMB, role=None), locked(OTHER, role=None))
    selection = select(plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb"), old_lock)
    assert selection.follow is True  # the configuration asks for all the lock's servable models
    assert served(selection) == ["org/emb"]
    assert selection.drift == [] and selection.missing == []


def test_a_lock_entry_matches_by_spec_not_by_name() -> None:
    other_config = replace(EMB, exclude=())  # the same repo, fetched under another configuration
    selection = select(plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb"), lock_of(other_config))
    assert selection.missing == ["org/emb@main (text-embedding)"]
    assert served(selection) == ["org/emb"]
    assert selection.served[0][0] != EMB  # the lock's own configuration, not the plan's


def test_serve_lock_serves_all_the_lock_holds_whatever_the_configuration_says() -> None:
    """MODELCACHE_SERVE=lock (a fleet's replicas): the defaults of an unconfigured service
    (here a subset of the lock, which alone would pick that subset) choose nothing."""
    subset = plan_for(MODELCACHE_TEXT_EMBEDDING="org/emb")
    lock = lock_of(WHISPER, EMB, OTHER)
    assert served(select(subset, lock)) == ["org/emb"]  # the configured rule, for contrast
    selection = select(subset, lock, configured=False)
    assert selection.follow is True and selection.drift == [] and selection.missing == []
    assert served(selection) == ["whisper/tiny", "org/emb", "org/other"]
    after = select(subset, lock_of(OTHER), follow=True, configured=False)  # a reload to another lock
    assert served(after) == ["org/other"] and after.drift == []


def test_serve_is_configured_or_lock() -> None:
    import pytest

    from modelcache.errors import ConfigError

    assert Settings.from_env({"MODELCACHE_DIR": "/m"}).serve == "configured"
    assert Settings.from_env({"MODELCACHE_DIR": "/m", "MODELCACHE_SERVE": "lock"}).serve == "lock"
    with pytest.raises(ConfigError, match="MODELCACHE_SERVE"):
        Settings.from_env({"MODELCACHE_DIR": "/m", "MODELCACHE_SERVE": "everything"})
