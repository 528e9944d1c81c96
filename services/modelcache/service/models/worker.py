"""Every model runs in a process of its own (a model worker); the HTTP process runs none.

Why processes and not threads (measured on the project's 2-core VM, numbers in
docs/architecture.md): torch's CPU kernels use an OpenMP team per calling thread, and
libgomp stops spin-waiting as soon as more of its threads exist than CPUs; a second
thread that has ever run a torch kernel (another model, or the thread that loaded it)
makes every forward of the first about 1.4x slower, idle or not. One process per model
keeps each model at full single-model speed, keeps one model's Python work (Whisper's
beam search) off the others' GIL, lets a long-running model run at a lower CPU priority
(``MODELCACHE_ASR_NICE``) so that short requests to the others are not delayed, and
frees a model's memory exactly when its process ends. The cost is one interpreter with
its libraries per model (RSS measured in docs/benchmarks.md).

The protocol, over one pipe per worker (pickled tuples):

    parent -> worker   ("call", id, op, args)  ("cancel", id)  ("stop",)
    worker -> parent   ("ready", info)  ("failed", message)
                       ("result", id, (value, seconds in the model))  ("error", id, exception)
                       ("cancelled", id)  ("progress", id, item: a partial result, before the answer)

A worker runs one call at a time, in order. A cancel reaches it while it works (its
reader thread sets a flag that the engine polls between windows/segments) or before it
starts a queued call (which is then skipped). Engines receive local paths only; nothing
here touches the network.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from modelcache import logs
from modelcache.service.engines.base import LoadSpec
from modelcache.service.engines.catalogue import ENGINES, default_threads
from modelcache.service.faults import Cancelled, InputError, ModelFailed, WorkerDied
from modelcache.service.models import zygote
from modelcache.service.models.ops import OPS, Call, Op

READY_TIMEOUT = 900.0  # seconds a model may take to load


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to load its model (picklable)."""

    model: str
    role: str  # asr | text-embedding | vision | face (the plan's role)
    engine: str
    load: LoadSpec
    device_wanted: str  # auto | cpu | cuda
    nice: int = 0


@dataclass
class _Pending:
    future: Future
    op: Op
    on_progress: Callable[[Any], None] | None = None
    sent: float = field(default_factory=time.monotonic)


class ModelWorker:
    """The parent's handle on one model's process."""

    _ids = itertools.count(1)

    def __init__(self, spec: WorkerSpec, *, on_death=None) -> None:
        self.spec = spec
        self.info: dict[str, Any] = {}
        self.failure: str | None = None
        self._on_death = on_death
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._conn: multiprocessing.connection.Connection | None = None
        self._reader: threading.Thread | None = None
        self.process: multiprocessing.process.BaseProcess | None = None
        self.started = 0.0

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the process (its reader thread starts with :meth:`wait_ready`, so that a
        parent that must fork starts every worker before it has a thread of its own)."""
        ctx = zygote.context(self.spec.engine)
        parent, child = ctx.Pipe(duplex=True)
        self.started = time.monotonic()
        self.process = ctx.Process(
            target=_child_main, args=(child, self.spec), name=f"model:{self.spec.model}", daemon=True
        )
        self.process.start()
        child.close()
        self._conn = parent

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """True once loaded; False (with :attr:`failure` set) when loading failed or timed out."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, name=f"worker-reader:{self.spec.model}", daemon=True)
            self._reader.start()
        if not self._ready.wait(timeout):
            self.failure = f"not loaded within {timeout:g}s"
            self.stop(grace=0)
        return self.failure is None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive() and self.failure is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def memory_bytes(self) -> int:
        """What ending the process gives back: its private pages (USS). The libraries it
        shares with the zygote and the other model processes are not counted."""
        return memory_of(self.pid, private=True)

    def pss_bytes(self) -> int:
        """Its share of everything it maps (PSS): the figures of all processes add up."""
        return memory_of(self.pid)

    def stop(self, grace: float = 5.0) -> None:
        """Ask the process to end; kill it after ``grace`` seconds. Pending calls fail."""
        process = self.process
        if process is None:
            return
        try:
            self._send(("stop",))
        except (OSError, ValueError, ModelFailed):
            pass
        process.join(grace)
        if process.is_alive():
            process.kill()
            process.join(5)
        self._fail_all(WorkerDied(f"model {self.spec.model!r} was stopped"))

    # --- calls -----------------------------------------------------------------------------

    def submit(self, op: Op, *args: Any, on_progress: Callable[[Any], None] | None = None) -> tuple[int, Future]:
        """Send a call; its future gives ``(value, seconds spent in the model, the process's peak memory so far)``.
        ``on_progress`` gets the call's partial results (in the reader thread), all before the future is set."""
        call_id = next(self._ids)
        future: Future = Future()
        with self._lock:
            if not self.alive:
                raise WorkerDied(f"model {self.spec.model!r} is not running ({self.failure or 'its process ended'})")
            self._pending[call_id] = _Pending(future, op, on_progress)
        try:
            self._send(("call", call_id, op.value, args))
        except ModelFailed as exc:
            with self._lock:
                self._pending.pop(call_id, None)
            future.set_exception(exc)
        return call_id, future

    def cancel(self, call_id: int) -> None:
        """Stop the call at its next check (running) or skip it (still queued in the worker)."""
        with self._lock:
            if call_id not in self._pending:
                return
        try:
            self._send(("cancel", call_id))
        except ModelFailed:
            pass

    def _send(self, message: tuple) -> None:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise WorkerDied(f"model {self.spec.model!r} is not running")
            try:
                conn.send(message)
            except (OSError, EOFError, BrokenPipeError) as exc:
                raise WorkerDied(f"model {self.spec.model!r}: its process is gone ({exc.__class__.__name__})") from None

    def _read(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "ready":
                self.info = message[1]
                self._ready.set()
            elif kind == "failed":
                self.failure = message[1]
                self._ready.set()
            elif kind == "progress":
                self._progress(message[1], message[2])
            else:
                self._settle(kind, message[1], message[2] if len(message) > 2 else None)
        if self.process is not None:
            self.process.join(2)  # reaped, so that its exit code is known
        code = self.process.exitcode if self.process is not None else None
        if self.failure is None:
            self.failure = f"its process ended (exit code {code})"
        self._ready.set()
        self._fail_all(WorkerDied(f"model {self.spec.model!r}: {self.failure}"))
        if self._on_death is not None:
            self._on_death(self)

    def _progress(self, call_id: int, item: Any) -> None:
        with self._lock:
            pending = self._pending.get(call_id)
        if pending is not None and pending.on_progress is not None and not pending.future.done():
            pending.on_progress(item)

    def _settle(self, kind: str, call_id: int, value: Any) -> None:
        with self._lock:
            pending = self._pending.pop(call_id, None)
        if pending is None or pending.future.done():
            return
        if kind == "result":
            pending.future.set_result(value)
        elif kind == "cancelled":
            pending.future.set_exception(Cancelled(f"model {self.spec.model!r} stopped the call"))
        else:
            pending.future.set_exception(value)

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(exc)


def memory_of(pid: int | None, *, private: bool = False) -> int:
    """A process's memory from /proc/<pid>/smaps_rollup: its proportional set size (PSS:
    pages shared with other processes split among them, so that the figures of several
    processes add up to what they use together), or with ``private`` its unique set size
    (USS: the pages no other process maps, which is what ending it gives back). Where Linux
    reports neither, its RSS. 0 for no process."""
    if pid is None:
        return 0
    wanted = ("Private_Clean:", "Private_Dirty:") if private else ("Pss:",)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return sum(int(line.split()[1]) * 1024 for line in fh if line.startswith(wanted))
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class PeakMeter:
    """The most private memory this model process has needed while answering (child side).

    Linux keeps a process's peak resident set (VmHWM), and a process may reset it to its
    resident set now (``5`` into /proc/self/clear_refs): it is reset once the model is
    loaded, so that what loading took and gave back does not count. A call's buffers are
    private pages that are given back (or kept by the allocator) when it ends, so the peak
    is the private memory (USS) at the last measure plus how far the resident set rose
    above its level then. Measuring USS costs milliseconds (smaps_rollup), reading VmHWM
    microseconds: USS is measured again only when the peak resident set rose by a MiB or
    more, or every ``REFRESH`` seconds (pages shared with the zygote that the process
    wrote become private without changing its resident set).
    """

    REFRESH = 30.0
    SLACK = 2**20

    def __init__(self) -> None:
        self.resettable = _reset_peak_rss()
        self._measure()
        self.peak = self.uss  # the model's size after loading, as this process sees it

    def _measure(self) -> None:
        self.uss = memory_of(os.getpid(), private=True)
        self.rss, self.hwm = _rss_and_peak()
        self.at = time.monotonic()

    def after_call(self) -> int:
        """The peak so far (bytes), measured after a call."""
        _rss, hwm = _rss_and_peak()
        if hwm > self.hwm + self.SLACK or time.monotonic() - self.at > self.REFRESH:
            self._measure()
            rise = self.hwm - self.rss if self.resettable else 0  # unknown peak of loading otherwise
            self.peak = max(self.peak, self.uss + rise)
        return self.peak


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_and_peak() -> tuple[int, int]:
    """This process's resident set now and its peak (VmRSS, VmHWM), in bytes; 0s where unknown."""
    found = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


# --- the worker process ----------------------------------------------------------------------


def _child_main(conn, spec: WorkerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when models stop
    logs.configure()  # a library's warnings in the service's format (a spawned child starts bare)
    if spec.nice:
        try:
            os.nice(spec.nice)
        except OSError:
            pass
    started = time.perf_counter()
    try:
        engine, device = _load(spec)
    except BaseException as exc:  # any library error while loading: reported, then the process ends
        first = str(exc).splitlines()[0] if str(exc) else ""
        conn.send(("failed", f"{exc.__class__.__name__}: {first}"))
        return
    meter = PeakMeter()
    info = {
        "load_seconds": time.perf_counter() - started,
        "device": device,
        "peak_bytes": meter.peak,
        **_describe(engine),
    }
    conn.send(("ready", info))
    calls: queue.SimpleQueue = queue.SimpleQueue()
    control = _Control()
    threading.Thread(target=_reader, args=(conn, calls, control), daemon=True).start()
    reply: tuple[Any, ...]  # ("result", id, (value, seconds, peak)), ("error", id, exc) or ("cancelled", id)
    while (item := calls.get()) is not None:
        call_id, op, args = item
        if control.begin(call_id):
            try:
                began = time.perf_counter()
                call = Call(control.stop_requested, _emitter(conn, call_id))
                value = OPS[Op(op)](engine, call, *args)
                reply = ("result", call_id, (value, time.perf_counter() - began, meter.after_call()))
            except Cancelled:
                reply = ("cancelled", call_id)
            except InputError as exc:
                reply = ("error", call_id, exc)
            except Exception as exc:  # a library error on this input: the request fails, the model stays
                reply = ("error", call_id, ModelFailed(f"{exc.__class__.__name__}: {exc}"))
            finally:
                control.end()
        else:
            reply = ("cancelled", call_id)
        try:
            conn.send(reply)
        except (OSError, EOFError, BrokenPipeError):
            return


def _emitter(conn, call_id: int) -> Callable[[Any], None]:
    def emit(item: Any) -> None:
        conn.send(("progress", call_id, item))

    return emit


class _Control:
    """Which call runs, and which were cancelled before or while they ran (child side)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: int | None = None
        self._last = 0  # calls run in the order of their ids: an id up to this one is done
        self._stop = threading.Event()
        self._cancelled: set[int] = set()

    def begin(self, call_id: int) -> bool:
        with self._lock:
            self._last = call_id
            if call_id in self._cancelled:
                self._cancelled.discard(call_id)
                return False
            self._current = call_id
            self._stop.clear()
            return True

    def end(self) -> None:
        with self._lock:
            self._current = None

    def cancel(self, call_id: int) -> None:
        with self._lock:
            if self._current == call_id:
                self._stop.set()
            elif call_id > self._last:  # still queued here
                self._cancelled.add(call_id)

    def stop_current(self) -> None:
        self._stop.set()

    def stop_requested(self) -> bool:
        return self._stop.is_set()


def _reader(conn, calls: queue.SimpleQueue, control: _Control) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if message[0] == "call":
            calls.put(message[1:])
        elif message[0] == "cancel":
            control.cancel(message[1])
        elif message[0] == "stop":
            break
    control.stop_current()  # the parent is gone or wants us gone: stop the running call too
    calls.put(None)


def _load(spec: WorkerSpec) -> tuple[object, str]:
    """The engine, loaded in this process with its device and thread budget (the catalogue
    record's setup); and the device it runs on."""
    engine = ENGINES[spec.engine]
    load = replace(spec.load, device=spec.device_wanted, threads=default_threads(engine, spec.load.threads))
    device = engine.setup(load)
    return engine.build(spec.role, replace(load, device=device)), device


def _describe(engine) -> dict:
    info: dict[str, Any] = {}
    for key in ("dimensions", "multilingual", "compute_type", "vocab_size", "normalized", "matryoshka_dimensions"):
        if hasattr(engine, key):
            info[key] = getattr(engine, key)
    return info
