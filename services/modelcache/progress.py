"""Progress output: rich bars on a terminal, one plain line per file otherwise (logs, CI)."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Protocol, cast

from modelcache import logs


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class Reporter(Protocol):
    def start(self, label: str, total: int) -> object: ...
    def advance(self, task: object, n: int) -> None: ...
    def finish(self, task: object, *, transferred: int, note: str = "", verb: str = "fetched") -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """One line per finished file: name, size, time, speed. Thread-safe."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def start(self, label: str, total: int) -> object:
        return (label, total, time.monotonic())

    def advance(self, task: object, n: int) -> None:
        pass

    def finish(self, task: object, *, transferred: int, note: str = "", verb: str = "fetched") -> None:
        label, total, started = cast("tuple[str, int, float]", task)  # what start() returned
        seconds = max(time.monotonic() - started, 1e-6)
        speed = human_bytes(transferred / seconds) + "/s"
        extra = f" ({note})" if note else ""
        message = f"{verb} {label} {human_bytes(total)} in {seconds:.1f}s at {speed}{extra}"
        if logs.json_lines():
            with self._lock:
                logs.log(
                    message,
                    event=verb,
                    stream=self.stream,
                    file=label,
                    bytes=total,
                    transferred=transferred,
                    seconds=round(seconds, 3),
                    note=note or None,
                )
        else:
            self.note(message)

    def note(self, message: str) -> None:
        with self._lock:
            if logs.json_lines():
                level = "warning" if message.startswith("warning") else "info"
                logs.log(message, event="note", level=level, stream=self.stream, prefix=False)
            else:
                print(message, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichReporter:
    """Live progress bars (only used when stderr is a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.progress.start()

    def start(self, label: str, total: int) -> object:
        return self.progress.add_task(label, total=total)

    def advance(self, task: object, n: int) -> None:
        self.progress.advance(task, n)  # type: ignore[arg-type]

    def finish(self, task: object, *, transferred: int, note: str = "", verb: str = "fetched") -> None:
        total = self.progress.tasks[[t.id for t in self.progress.tasks].index(task)].total  # type: ignore[arg-type]
        self.progress.update(task, completed=total)  # type: ignore[arg-type]

    def note(self, message: str) -> None:
        self.progress.console.print(message)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(force_plain: bool = False) -> Reporter:
    if not force_plain and not logs.json_lines() and sys.stderr.isatty():
        return RichReporter()
    return PlainReporter()
