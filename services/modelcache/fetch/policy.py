"""Retry, back-off, deadline and cancellation rules shared by every transfer (stdlib only)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _quiet(_message: str) -> None:
    pass


class Cancelled(Exception):
    """The fetch was interrupted (Ctrl-C, SIGTERM): stop transferring, keep partial files."""


@dataclass(frozen=True)
class Policy:
    retries: int = 5
    stall_timeout: float = 60.0
    deadline: float = float("inf")  # time.monotonic() value after which we give up
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    cancel: threading.Event = field(default_factory=threading.Event)
    #: one log line per retry, stall and re-download (the reporter's ``note``)
    notify: Callable[[str], None] = _quiet

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted")

    def sleep(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise Cancelled("interrupted")

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.isdigit():
            wait = float(retry_after)
        else:
            wait = min(self.backoff_max, self.backoff_base * 2**attempt)
            wait *= 0.5 + random.random() / 2  # jitter
        return max(0.0, min(wait, self.deadline - time.monotonic()))
