"""Many renders as one queue: every job is submitted first, in order, so the server (or a farm) holds them all,
then each is followed in that order and its files collected as it ends. Used by ``kvlock batch`` and by hosts
that render all their marked shots at once.

Job ids are the caller's and stable, so running a queue again resumes it: a job the server already holds
under an id (queued, running or succeeded) is adopted and never sent twice; one that failed or was
cancelled there is sent again under the next attempt, ``ID.r2``, ``ID.r3`` … A render that cannot be sent or
that fails is reported with its reason and the others go on. Setting ``cancel`` (or an exception such as
KeyboardInterrupt in the caller's thread) cancels every job of the queue the server has not finished; files
already collected stay, complete, and nothing half written appears under a final name (``render.collect``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlock.errors import KVLockError

from .background import PATH_REFUSED, Fallback
from .client import Client, Progress
from .clips import Clip, FileClip, Params
from .errors import AuthenticationError, BridgeError, JobFailedError, RequestRejectedError, ServerUnavailableError
from .render import Outputs, RenderResult, collect, follow

MAX_ATTEMPTS = 20
RETRIED = ("failed", "cancelled")


@dataclass(frozen=True)
class QueuedRender:
    """One render of a queue: what to send, the caller's job id for it, and where its files go."""

    source: Clip | FileClip
    matte: Clip | FileClip
    params: Params
    files: Outputs
    job_id: str
    fallback: Fallback | None = None  # the frames to upload when the server cannot read the files


@dataclass(frozen=True)
class Queued:
    """The server holds render ``index`` as ``job_id``: sent now (``uploaded`` when as frames), or ``adopted``
    from an earlier run."""

    index: int
    job_id: str
    adopted: bool
    uploaded: bool


@dataclass(frozen=True)
class Advanced:
    index: int
    progress: Progress


@dataclass(frozen=True)
class Finished:
    index: int
    result: RenderResult


@dataclass(frozen=True)
class Failed:
    index: int
    job_id: str | None  # None when it never reached the server
    reason: str
    cancelled: bool = False


QueueEvent = Queued | Advanced | Finished | Failed
NOT_SENT = (RequestRejectedError, JobFailedError, BridgeError, KVLockError, OSError, ValueError)
FATAL = (ServerUnavailableError, AuthenticationError)  # no render of the queue can go on: raised, not reported


def file_identity(path: str) -> list[int] | None:
    """A file's size and modification time (None where it is not readable here), for a recipe: a changed
    file makes a new job, an unchanged one finds its job again."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def derived_job_id(name: str, recipe: dict[str, Any]) -> str:
    """``NAME-HASH`` for a render made from ``recipe`` (plain JSON data: files and frames, prompt, settings …):
    readable, within the ids' alphabet and length, and the same whenever the recipe is."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:40] or "shot"
    return f"{stem}-{digest}"


def attempt_id(job_id: str, attempt: int) -> str:
    return job_id if attempt == 1 else f"{job_id}.r{attempt}"


def live_attempt(client: Client, job_id: str) -> tuple[str, Progress | None]:
    """The id to use for ``job_id`` now: an attempt the server holds and has not given up on (with its state),
    else the first unused attempt (with None)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        candidate = attempt_id(job_id, attempt)
        state = client.status(candidate)
        if state is None or state.state not in RETRIED:
            return candidate, state
    raise BridgeError(f"{job_id} failed {MAX_ATTEMPTS} times on the server; give it a new id")


def _send(client: Client, render: QueuedRender, job_id: str) -> bool:
    """Submit by path, else as frames where the server refused the path; True when uploaded."""
    try:
        client.submit(render.source, render.matte, render.params, job_id=job_id)
        return False
    except RequestRejectedError as exc:
        if render.fallback is None or exc.code not in PATH_REFUSED:
            raise
    client.submit(*render.fallback(), render.params, job_id=job_id)
    return True


class _Run:
    """One run of a queue: which jobs the server holds for it, and cancelling those not finished."""

    def __init__(self, client: Client, emit: Callable[[QueueEvent], None], cancel: threading.Event) -> None:
        self.client, self.emit, self.cancel = client, emit, cancel
        self.open: dict[int, str] = {}  # index → job id, until its job ended
        self.lock = threading.Lock()

    def submit(self, index: int, render: QueuedRender) -> None:
        try:
            job_id, state = live_attempt(self.client, render.job_id)
            uploaded = False if state is not None else _send(self.client, render, job_id)
        except FATAL:
            raise
        except NOT_SENT as exc:
            self.emit(Failed(index, None, str(exc)))
            return
        with self.lock:
            self.open[index] = job_id
        if self.cancel.is_set():  # cancelled while this one was being sent: it is stopped like the others
            with contextlib.suppress(BridgeError):
                self.client.cancel(job_id)
        self.emit(Queued(index, job_id, state is not None, uploaded))

    def finish(self, index: int, render: QueuedRender) -> None:
        job_id = self.open[index]
        try:
            follow(self.client, job_id, lambda update: self.emit(Advanced(index, update)))
            result = collect(self.client, job_id, render.files, render.params, overwrite=True)
        except JobFailedError as exc:
            self.emit(Failed(index, job_id, exc.reason or exc.state, exc.state == "cancelled"))
        except FATAL:
            raise
        except NOT_SENT as exc:
            self.emit(Failed(index, job_id, str(exc)))
        else:
            self.emit(Finished(index, result))
        with self.lock:
            self.open.pop(index, None)

    def cancel_open(self) -> None:
        with self.lock:
            jobs = list(self.open.values())
        for job_id in jobs:
            with contextlib.suppress(BridgeError):  # already ended, or the server is gone: nothing left to stop
                self.client.cancel(job_id)


def run_queue(
    client: Client,
    renders: list[QueuedRender],
    emit: Callable[[QueueEvent], None],
    cancel: threading.Event | None = None,
) -> None:
    """Submit every render, then follow and collect each, reporting through ``emit`` (on this thread).

    Collected files replace what is under their names: a queue's files are its own, and one found complete
    beside its trace is the caller's to skip before queueing it."""
    cancel = cancel or threading.Event()
    run = _Run(client, emit, cancel)
    stop = threading.Event()

    def forward_cancel() -> None:
        while not stop.is_set():
            if cancel.wait(0.1):
                run.cancel_open()
                return

    watcher = threading.Thread(target=forward_cancel, name="kvlock-queue-cancel", daemon=True)
    watcher.start()
    try:
        for index, render in enumerate(renders):
            if cancel.is_set():
                emit(Failed(index, None, "cancelled before it was sent", cancelled=True))
            else:
                run.submit(index, render)
        for index, render in enumerate(renders):
            if index in run.open:
                run.finish(index, render)
    except BaseException:
        run.cancel_open()  # Ctrl-C, a lost server: nothing of this queue is left running for nobody
        raise
    finally:
        stop.set()
        watcher.join()


@dataclass
class BackgroundQueue:
    """A queue running off a host's UI thread (Resolve's UIManager timer, the page's loop): the worker
    records the queue's events, the host's loop takes them (``take``) and does what needs the host's API."""

    client: Client
    renders: list[QueuedRender]
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _events: list[QueueEvent] = field(default_factory=list)
    _done: bool = False
    _error: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="kvlock-queue", daemon=True).start()

    def _emit(self, event: QueueEvent) -> None:
        with self._lock:
            self._events.append(event)

    def _run(self) -> None:
        try:
            run_queue(self.client, self.renders, self._emit, self.cancel)
        except (BridgeError, OSError) as exc:
            error = str(exc)
        except Exception as exc:  # the host's loop must always hear back, or it would wait forever
            error = f"unexpected error: {type(exc).__name__}: {exc}"
        else:
            error = None
        self.client.close()
        with self._lock:
            self._error, self._done = error, True

    def take(self) -> tuple[list[QueueEvent], bool, str | None]:
        """The events since the last call, whether the queue has ended, and why it stopped early (or None)."""
        with self._lock:
            events, self._events = self._events, []
            return events, self._done, self._error
