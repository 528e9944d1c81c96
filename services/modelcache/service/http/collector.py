"""The metrics read from the service's state at each scrape (nothing to keep in sync):
readiness, each model's state and memory, the memory budget, queue capacities, the
volume's lock against the one served, the last reload, realtime sessions, the version.

The counters and histograms the code updates as things happen are in ``metrics.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelcache import __version__
from modelcache.service.models.entry import ModelState

if TYPE_CHECKING:
    from modelcache.service.http.state import State

STATES = [s.value for s in ModelState]


def _families() -> dict[str, GaugeMetricFamily]:
    g = GaugeMetricFamily
    families = [
        g("modelcache_build_info", "The service's version (always 1)", labels=["version"]),
        g("modelcache_start_time_seconds", "When the service started (unix time)"),
        g("modelcache_ready", "1 when every model that must stay loaded is (as /health/ready answers 200)"),
        g(
            "modelcache_model_state",
            "1 for the state each served model is in now (loaded, unloaded, loading, unloading, failed, retired)",
            labels=["model", "state"],
        ),
        g(
            "modelcache_model_pinned",
            "1 for a model that must stay loaded (all of them without a budget)",
            labels=["model"],
        ),
        g(
            "modelcache_model_memory_bytes",
            "Private memory of each model's process now (what unloading it gives back; 0 when not loaded)",
            labels=["model"],
        ),
        g(
            "modelcache_model_need_bytes",
            "What each model counts for in the memory budget: the larger of its size after loading and its "
            "peak while answering, as measured",
            labels=["model"],
        ),
        g("modelcache_memory_budget_bytes", "MODELCACHE_MEMORY_BUDGET (absent without a budget)"),
        g(
            "modelcache_queue_capacity",
            "Requests each model's queue holds, waiting or running (MODELCACHE_QUEUE_SIZE); "
            "modelcache_queue_depth at this value answers 429",
            labels=["model"],
        ),
        g("modelcache_realtime_sessions", "Realtime transcription WebSocket sessions open now"),
        g(
            "modelcache_volume_lock_drift",
            "1 when the volume's lock is not the one being served: the downloader wrote another and no "
            "reload took it, its reload was refused, or it is gone or damaged",
        ),
        g(
            "modelcache_reload_last_success",
            "1 when the last reload was done, 0 when it was refused (absent before one)",
        ),
        g("modelcache_reload_last_timestamp_seconds", "When the last reload (done or refused) ended (unix time)"),
    ]
    return {f.name: f for f in families}


class StateCollector(Collector):
    """Gauges read from the live :class:`State` at each scrape."""

    def __init__(self, state: State) -> None:
        self.state = state

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from _families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state, f = self.state, _families()
        lifecycle = state.lifecycle
        f["modelcache_build_info"].add_metric([__version__], 1)
        f["modelcache_start_time_seconds"].add_metric([], state.started)
        f["modelcache_ready"].add_metric([], 1 if state.ready else 0)
        for entry in state.registry.entries:
            now = entry.current_state().value
            for value in STATES:
                f["modelcache_model_state"].add_metric([entry.id, value], 1 if value == now else 0)
            f["modelcache_model_pinned"].add_metric([entry.id], 1 if entry.pinned else 0)
            f["modelcache_model_memory_bytes"].add_metric([entry.id], entry.memory_now())
            f["modelcache_model_need_bytes"].add_metric([entry.id], entry.need_bytes)
            f["modelcache_queue_capacity"].add_metric([entry.id], state.handles.capacity(entry))
        if lifecycle.budget is not None:
            f["modelcache_memory_budget_bytes"].add_metric([], lifecycle.budget)
        f["modelcache_realtime_sessions"].add_metric([], state.realtime_sessions)
        f["modelcache_volume_lock_drift"].add_metric([], 1 if lifecycle.volume_drift() else 0)
        last = lifecycle.last_reload
        if last is not None:
            f["modelcache_reload_last_success"].add_metric([], 1 if last["ok"] else 0)
            f["modelcache_reload_last_timestamp_seconds"].add_metric([], last["at"])
        yield from f.values()
