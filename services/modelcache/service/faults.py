"""Every exception the model service raises on purpose, in one tree (a leaf module: every
layer of the service may import it, and it imports nothing of the service).

    StartupError (modelcache.errors.VerificationError: exit 4)
        the service does not start: the volume, the libraries, or a model that does not
        load or does not fit in the memory budget
    ReloadError (modelcache.errors.ModelcacheError)
        a reload was refused; the previous models keep serving
    RequestFault
        one request is not answered with a result; ``http/errors.py`` maps each kind to
        its status, code and headers
        ├── InputError         400/415: the input cannot be processed (the caller's fault)
        ├── Busy               429: the model's queue is full (Retry-After)
        ├── Unavailable        503: the model cannot take the request now (Retry-After
        │   │                  when waiting helps)
        │   └── NoRoom         503 no_room: the memory budget has no room for the model
        ├── TimedOut           504: no answer within MODELCACHE_REQUEST_TIMEOUT
        ├── ClientGone         499: the client went away; the request was stopped
        └── ModelFailed        500: the model's library raised on this input
            └── WorkerDied     503: the model's process ended (or is not running)
    Cancelled
        raised inside a model's process when the call was given up (deadline, client
        gone); its engine stops at the next window or segment
    UnsupportedModel
        an engine cannot run the files it was given (raised while loading)

Exceptions cross the pipe between a model's process and the HTTP process pickled, so
each keeps what it needs in ``args``.
"""

from __future__ import annotations

from modelcache.errors import ModelcacheError, VerificationError


class StartupError(VerificationError):
    title = "cannot start"


class ReloadError(ModelcacheError):
    title = "reload refused"
    default_remedy = (
        "fix what is named above (usually: run the downloader again), then reload; the previous models keep serving"
    )


class RequestFault(Exception):
    """A request that is answered with an error instead of a result."""


class InputError(RequestFault, ValueError):
    """The input cannot be processed (undecodable, empty, too long): the caller's fault."""

    def __init__(self, message: str, unsupported_media: bool = False) -> None:
        super().__init__(message, unsupported_media)
        self.unsupported_media = unsupported_media

    def __str__(self) -> str:
        return str(self.args[0])


class Busy(RequestFault):
    """The model's queue is full: come back in ``retry_after`` seconds."""

    def __init__(self, model: str, retry_after: int) -> None:
        super().__init__(f"model {model!r} is busy: its queue is full")
        self.model = model
        self.retry_after = retry_after


class Unavailable(RequestFault):
    """The model cannot take the request now (not loaded in time, its process died): come
    back in ``retry_after`` seconds, or, with None, waiting does not help."""

    code = "model_unavailable"

    def __init__(self, message: str, retry_after: int | None = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoRoom(Unavailable):
    """The memory budget has no room for the model: the models in the way are busy
    (``retry_after`` seconds), or waiting cannot help (None: pinned models or the budget
    itself; the message says what to change)."""

    code = "no_room"


class TimedOut(RequestFault):
    """No answer within the request's deadline; the call was stopped in the model."""


class ClientGone(RequestFault):
    """Nobody is waiting for the answer any more."""


class ModelFailed(RequestFault, RuntimeError):
    """The model's library raised on this input; the model keeps serving."""


class WorkerDied(ModelFailed):
    """The model's process ended, or is not running."""


class Cancelled(Exception):
    """The request was given up (its deadline passed, or its client went away): stop early."""


class UnsupportedModel(RuntimeError):
    """An engine cannot run these files (an architecture or pooling mode it does not know)."""
