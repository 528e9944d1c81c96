"""`modelcache serve`: gate -> load -> bind -> serve. Exits non-zero on any startup problem."""

from __future__ import annotations

import time

from modelcache import logs
from modelcache.errors import ConfigError, ModelcacheError
from modelcache.settings import Settings


def log(message: str) -> None:
    """The lifecycle's lines (loads, reloads, restarts, warnings)."""
    logs.log(message, event="lifecycle", level="warning" if message.startswith("warning:") else "info")


def _check_port(host: str, port: int) -> None:
    """Fail before loading models when the port is taken (uvicorn would only find out after)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                remedy="stop what uses the port, or set MODELCACHE_PORT (compose: MODELCACHE_HOST_PORT) to another one",
            ) from None


def serve(settings: Settings | None = None) -> None:
    started = time.perf_counter()
    from modelcache.service.startup import run_gate  # standard library only

    try:
        settings = settings or Settings.from_env()
    except ModelcacheError as exc:
        logs.error(exc)
        raise SystemExit(exc.exit_code) from None
    gate = run_gate(settings)
    mode = "deep" if gate.report.deep else "fast"
    logs.log(
        f"volume verified ({mode}): {gate.report.files} files, {gate.report.bytes / 2**20:.1f} MiB "
        f"in {gate.report.seconds:.2f}s",
        event="volume_verified",
        files=gate.report.files,
        bytes=gate.report.bytes,
        seconds=round(gate.report.seconds, 3),
    )
    try:
        settings.api_key()  # a missing key file must not cost a model load first
        if settings.admin_key() is None:
            logs.log(
                "model control over HTTP is off (/admin/* answers 403): set MODELCACHE_ADMIN_KEY_FILE to turn it on",
                event="admin_off",
            )
        _check_port(settings.host, settings.port)
    except ModelcacheError as exc:
        logs.error(exc)
        raise SystemExit(exc.exit_code) from None
    from modelcache.service.models import zygote
    from modelcache.service.models.lifecycle import Lifecycle  # each model loads in a process of its own

    lifecycle = Lifecycle(settings, gate.layout, gate.plan, gate.lock, gate.selection, log=log)
    try:
        registry = lifecycle.start()
    except ModelcacheError as exc:
        zygote.stop()
        logs.error(exc)
        raise SystemExit(exc.exit_code) from None
    try:
        from modelcache.service.http.app import create_app

        app = create_app(settings, lifecycle)
        loaded = sum(1 for e in registry.entries if e.loaded)
        logs.log(
            f"{loaded} of {len(registry.entries)} model(s) loaded in {time.perf_counter() - started:.1f}s; "
            f"listening on http://{settings.host}:{settings.port}",
            event="listening",
            models_loaded=loaded,
            seconds=round(time.perf_counter() - started, 3),
        )
        _run_http(app, settings)
    finally:
        lifecycle.registry.stop()
        zygote.stop()


def _run_http(app, settings: Settings) -> None:
    """uvicorn on this thread until SIGTERM/SIGINT (uvloop and httptools when installed)."""
    import uvicorn

    config = uvicorn.Config(  # its own lines go through modelcache.logs (log_config=None), requests too
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn could not start (its error is in the log above)
