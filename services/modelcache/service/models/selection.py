"""Which of the lock's models the service serves: the rules the start-up gate applies, and
every reload after it (standard library only: the gate imports this before anything heavy).

When the service's configuration asks for exactly the models of the volume's lock, it
*follows the lock* (and serves what a new lock holds after each reload); when it asks
for some of them, that subset; when it asks for something the lock lacks, the lock wins
and the difference is reported (``Selection.drift``, ``/health``, the log): after a hot
reload, the container's environment is stale by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from modelcache.plan import Artifact, Kind, Plan, Role
from modelcache.service.engines.catalogue import SERVED_ROLES
from modelcache.volume_lock import Lock, LockedArtifact


@dataclass(frozen=True)
class Selection:
    """Which of the lock's models the service serves."""

    follow: bool  # serve whatever the lock holds, now and after each reload
    served: list[tuple[Artifact, LockedArtifact]]
    drift: list[str]  # how the configuration and the lock differ (reported, never refused)
    missing: list[str]  # configured models the lock lacks (a subset-serving reload refuses these)


def select(plan: Plan, lock: Lock, *, follow: bool | None = None, configured: bool = True) -> Selection:
    """The models to serve: see :func:`check`. ``follow`` is decided at start (None) and kept
    by every reload. ``configured=False`` (MODELCACHE_SERVE=lock, a fleet's replicas): the
    service has no model settings of its own and serves whatever the lock holds, no drift."""
    by_spec = {a.spec: a for a in plan.artifacts}
    in_lock = []
    for locked in lock.artifacts:
        artifact = by_spec.get(locked.spec) or _artifact_of(locked)
        if artifact is not None and artifact.role in SERVED_ROLES:
            in_lock.append((artifact, locked))
    if not configured:
        return Selection(True, in_lock, [], [])
    wanted = [a for a in plan.artifacts if a.role in SERVED_ROLES]
    locked_specs = {locked.spec for _, locked in in_lock}
    missing = [f"{a.describe()} ({a.role})" for a in wanted if a.spec not in locked_specs]
    if follow is None:
        follow = bool(missing) or {a.spec for a in wanted} == locked_specs
    if follow:
        served = in_lock
    else:
        locked_by_spec = {locked.spec: locked for _, locked in in_lock}
        served = [(a, locked_by_spec[a.spec]) for a in wanted if a.spec in locked_by_spec]
    wanted_specs = {a.spec for a in wanted}
    drift = [f"the configuration asks for {m}, which the volume's lock does not hold" for m in missing]
    if follow:
        drift += [
            f"the volume's lock holds {locked.source}{'@' + locked.revision if locked.revision else ''} "
            f"({artifact.role}), which the configuration does not ask for"
            for artifact, locked in in_lock
            if locked.spec not in wanted_specs
        ]
    return Selection(follow, served, drift, missing)


def _artifact_of(locked: LockedArtifact) -> Artifact | None:
    """The plan artifact a lock entry was made from, rebuilt from what the lock records
    (None for locks from before the lock recorded roles)."""
    if locked.role is None:
        return None
    sha256 = locked.files[0].sha256 if locked.kind in ("whisper", "url") and locked.files else None
    return Artifact(
        name=locked.name,
        # the lock records the role and kind of the plan Artifact it was written from
        role=cast(Role, locked.role),
        kind=cast(Kind, locked.kind),
        source=locked.source,
        dest=locked.dest,
        revision=locked.revision,
        sha256=sha256,
        engine=locked.engine,
    )
