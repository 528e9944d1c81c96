"""Prometheus metrics, in a registry of the app's own (several apps may live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelcache.service.serving.runner import Meter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics(Meter):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelcache_requests_total", "HTTP requests by route and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "modelcache_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "modelcache_queue_depth",
            "Requests waiting or running per model (its queue and its batchers)",
            ["model"],
            registry=r,
        )
        self.batch_size = Histogram(
            "modelcache_batch_size", "Inputs per inference call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "modelcache_inference_seconds",
            "Time per call, from handing it to the model's process to its answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "modelcache_model_seconds",
            "Time per call spent computing inside the model's process",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.load_seconds = Gauge("modelcache_model_load_seconds", "Time to load each model", ["model"], registry=r)
        self.loads = Counter(
            "modelcache_model_loads_total", "Model loads (at start and on demand)", ["model"], registry=r
        )
        self.evictions = Counter(
            "modelcache_model_evictions_total",
            "Models unloaded to make room under the memory budget",
            ["model"],
            registry=r,
        )
        self.reloads = Counter("modelcache_reloads_total", "Reloads from the volume's lock", ["result"], registry=r)
        for result in ("ok", "failed"):  # at 0 from the start: a rule's increase() sees the first one
            self.reloads.labels(result)
        self.restarts = Counter(
            "modelcache_model_restarts_total",
            "Model processes found dead while loaded (killed, out of memory): a pinned model is started "
            "again at once, the others on their next request",
            ["model"],
            registry=r,
        )
        self.rejected = Counter(
            "modelcache_rejected_total", "Requests refused because a model's queue was full", ["model"], registry=r
        )
        self.shed = Counter(
            "modelcache_shed_total",
            "Requests refused before their body was read (429, every queue full)",
            ["route"],
            registry=r,
        )
        self.cancelled = Counter(
            "modelcache_cancelled_total",
            "Requests given up and stopped in the model (deadline, client gone)",
            ["model", "reason"],
            registry=r,
        )

    # --- what the serving layer reports (serving.runner.Meter) ----------------------------

    def queue_changed(self, model: str, requests: int) -> None:
        self.queue_depth.labels(model).set(requests)

    def refused(self, model: str) -> None:
        self.rejected.labels(model).inc()

    def gave_up(self, model: str, reason: str) -> None:
        self.cancelled.labels(model, reason).inc()

    def answered(self, model: str, *, seconds: float, model_seconds: float | None, batch: int) -> None:
        self.inference.labels(model).observe(seconds)
        self.batch_size.labels(model).observe(batch)
        if model_seconds is not None:
            self.model_seconds.labels(model).observe(model_seconds)
