"""What the server does at once, and for how long: every bound on concurrent and long-lived calls.

The gRPC service runs on one asyncio event loop. A call that waits (a watcher between updates, an upload
between chunks) is a suspended coroutine, not a thread, so any number of them cost memory only. Work that
blocks (SQLite, files, decoding, checking pixels) runs on a small fixed pool of threads, and every kind
of call has a bound; past it the call is refused at once with RESOURCE_EXHAUSTED and a message naming
the bound, never queued without end. Health checks need none of this and keep answering.

The pool's threads are daemons: a thread stuck in a read can never keep a stopping server alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CallLimits:
    """Bounds on concurrent calls and their durations (``kvlock serve`` flags of the same names)."""

    workers: int = 8  # threads for blocking work: store, files, validation
    max_calls: int = 64  # short calls (ListJobs, CancelJob, ListModels …) running or waiting for a thread
    max_uploads: int = 8  # SubmitEdit streams at once
    max_fetches: int = 16  # FetchResult streams at once
    max_watchers: int = 2000  # WatchJob streams at once (each a suspended coroutine)
    max_validations: int = 2  # submissions whose files are read at once (each holds about two frames)
    call_timeout: float = 30.0  # seconds a short call may take before DEADLINE_EXCEEDED
    upload_idle_timeout: float = 30.0  # seconds between two messages of an upload
    upload_timeout: float = 3600.0  # seconds for a whole upload
    write_timeout: float = 120.0  # seconds a stream may wait for its client to read the next message

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")


class ServerBusyError(Exception):
    """A bound on concurrent calls is reached; the call is refused rather than queued."""


class CallTimeoutError(Exception):
    """A call (or an upload's wait for its next message) took longer than its bound."""


class Gate:
    """Counts calls of one kind on the event loop and refuses the one past ``limit``."""

    def __init__(self, kind: str, limit: int, advice: str) -> None:
        self.kind, self.limit, self.advice = kind, limit, advice
        self.active = 0

    @contextmanager
    def enter(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise ServerBusyError(f"the server is at its limit of {self.limit} {self.kind} at once; {self.advice}")
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class DaemonPool(Executor):
    """A fixed set of daemon threads taking work from one queue (``concurrent.futures`` joins its threads
    at exit, so one stuck call would keep a SIGTERMed server from ever exiting)."""

    _ids = itertools.count()

    def __init__(self, workers: int, name: str = "kvlock-io") -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{next(self._ids)}", daemon=True) for _ in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("the server's work pool is shut down")
        future: Future[T] = Future()
        self._work.put((future, fn, args, kwargs))
        return future

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            _run(*item)
            del item  # nothing of a finished call stays referenced while the thread waits for the next


def _run(future: Future, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """One call of the pool. Its result or exception (with the traceback's frames, which may hold a decoded
    frame) lives only in ``future``, never in the idle thread's locals."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as error:  # handed to the awaiting call, which maps it to a status
        future.set_exception(error)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        for _ in self._threads:
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join(timeout=5)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> None:
    """``fn()`` on ``loop`` from any thread; a no-op once the loop is closed (the server stopped)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn)


class Admission:
    """The gates and the pool, as the service uses them."""

    def __init__(self, limits: CallLimits) -> None:
        self.limits = limits
        self.pool = DaemonPool(limits.workers)
        self.calls = Gate("short calls", limits.max_calls, "retry in a moment")
        self.uploads = Gate(
            "uploads", limits.max_uploads, "retry when one finishes (or raise --max-uploads on the server)"
        )
        self.fetches = Gate("result downloads", limits.max_fetches, "retry when one finishes (--max-fetches)")
        self.watchers = Gate(
            "watchers", limits.max_watchers, "close watchers you no longer read (or raise --max-watchers)"
        )
        self._validations: asyncio.Semaphore | None = None
        self.validating = 0  # validations holding a slot (their thread busy, or about to be)
        self.validations_waiting = 0  # validations waiting for a slot

    def validations(self) -> asyncio.Semaphore:
        """Submissions whose files are read at once; created on the loop that awaits it."""
        if self._validations is None:
            self._validations = asyncio.Semaphore(self.limits.max_validations)
        return self._validations

    async def validate(self, submit: Callable[..., Future[T]], fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args, cancel)`` put on the pool by ``submit``, within the bound on validations.

        The slot is held until ``fn`` has returned, not merely until the caller stops waiting: a caller
        cancelled (its client gave up) sets ``cancel``, which ``fn`` looks at between frames and stops on,
        and the next validation starts only once the thread is free. So at most ``max_validations`` files are
        ever being read for clients at once, whoever gives up."""
        semaphore = self.validations()
        self.validations_waiting += 1
        try:
            await semaphore.acquire()
        finally:
            self.validations_waiting -= 1
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        self.validating += 1

        def free() -> None:
            self.validating -= 1
            semaphore.release()

        try:
            future = submit(fn, *args, cancel)
        except BaseException:
            free()
            raise
        future.add_done_callback(lambda _: _call_soon(loop, free))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the pool, awaited without a bound (the caller bounds the call)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """A short call's blocking part, on the pool, within ``call_timeout``."""
        try:
            async with asyncio.timeout(self.limits.call_timeout):
                return await self.run(fn, *args)
        except TimeoutError:
            raise CallTimeoutError(
                f"{what} took longer than {self.limits.call_timeout:g} s on the server; it is overloaded, retry later"
            ) from None

    def close(self) -> None:
        self.pool.shutdown(wait=False)
