"""The read-only, offline model service.

``startup`` (the fail-fast gate, standard library only) runs first. Then four layers whose
imports point down only: ``http`` (app, routes, errors, admission, metrics) -> ``serving``
(per-model queues, batchers, typed model handles) -> ``models`` (entries, lifecycle,
memory budget, reload, one process per model) -> ``engines`` (the catalogue and the
libraries that run models; nothing of HTTP). Every layer may use the leaf ``faults``
module. Nothing here can download.
"""
