"""The queue: worker threads take queued jobs by priority, run them, and publish live progress.

Thread rules: the store is the source of truth for job state; live progress (step, metric, preview) sits
in memory under one condition variable. Whoever watches jobs subscribes a listener that is told, from
the worker threads and without blocking them, which job changed (or that the queue moved); a listener
must not block. The queue's order is read from the store once per change and shared by every reader, so
a thousand watchers of queued jobs cost one query per change, not a thousand. Nothing here knows gRPC.
A failing job never takes a worker down: every outcome becomes a state and a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kvlock.errors import EditCancelled, InvalidRequest
from kvlock.progress import StepProgress

from .contract import Executor, JobControl, WorkerLost, failure_message
from .model import JobState
from .store import JobStore


def cancelled_message(stop: EditCancelled, takes: int) -> str:
    """What a cancelled job says: where it stopped, and which takes it finished and keeps for fetching."""
    message = f"cancelled after step {stop.step} of {stop.total}"
    if stop.kept == 1:
        return message + f"; take 1 of {takes} was finished and kept"
    if stop.kept:
        return message + f"; takes 1–{stop.kept} of {takes} were finished and kept"
    return message


@dataclass(frozen=True)
class LiveStatus:
    """A job's state as watchers see it; ``progress`` is the engine's last step while it runs."""

    state: JobState
    version: int = 0
    message: str = ""
    queue_position: int = 0
    progress: StepProgress | None = None


@dataclass(frozen=True)
class _QueueSnapshot:
    """Queued jobs in run order: each one's 1-based position and its message."""

    positions: dict[str, int]
    messages: dict[str, str]

    @classmethod
    def of(cls, rows: list[tuple[str, str]]) -> _QueueSnapshot:
        return cls({job_id: i + 1 for i, (job_id, _) in enumerate(rows)}, dict(rows))

    def status(self, job_id: str, version: int) -> LiveStatus:
        return LiveStatus(
            state=JobState.QUEUED,
            version=version,
            message=self.messages[job_id],
            queue_position=self.positions[job_id],
        )


@dataclass
class _Running:
    cancel: threading.Event = field(default_factory=threading.Event)
    cancelled_by_user: bool = False
    note: str = ""  # what the executor last said of where the job runs (Ray, GPU groups)


class JobRunner:
    """One thread per place a job can run (``executor.capacity``): slots on this GPU, or Ray workers."""

    def __init__(self, store: JobStore, executor: Executor, preview_every: int = 5) -> None:
        if executor.capacity < 1:
            raise ValueError("concurrency must be at least 1")
        self.store, self.executor = store, executor
        self.concurrency, self.preview_every = executor.capacity, preview_every
        self._changed = threading.Condition()
        self._live: dict[str, LiveStatus] = {}
        self._running: dict[str, _Running] = {}
        self._previews: dict[str, int] = {}
        self._version = 0
        self._queue_version = 0
        self._queue_cache: tuple[int, _QueueSnapshot] = (-1, _QueueSnapshot({}, {}))
        self._refresh = threading.Lock()
        self._listeners: list[Callable[[str | None], None]] = []
        self._stopping = threading.Event()
        self._parking = threading.Event()
        self._workers: list[threading.Thread] = []

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        for slot in range(self.concurrency):
            worker = threading.Thread(target=self._work, args=(slot,), name=f"kvlock-worker-{slot}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def wake(self) -> None:
        """The queue changed from outside (a job was accepted): workers look again, watchers re-read."""
        self._publish(None, None, queue_changed=True)

    def subscribe(self, listener: Callable[[str | None], None]) -> None:
        """Call ``listener(job_id)`` after each change of a job, ``listener(None)`` when the queue moves."""
        self._listeners.append(listener)

    def stop(self, grace: float) -> list[str]:
        """Stop taking jobs; let running ones finish for ``grace`` seconds, then park them (queued again)."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        parked = list(self._running)
        if parked:
            self._parking.set()
            for running in list(self._running.values()):
                running.cancel.set()
        for worker in self._workers:
            worker.join(timeout=60)
        return parked

    @property
    def accepting(self) -> bool:
        return not self._stopping.is_set()

    # -- what clients ask ---------------------------------------------------------------------------

    def live(self, job_id: str) -> LiveStatus | None:
        """The running job's progress from memory (never blocks on the store); None if it is not running."""
        with self._changed:
            return self._live.get(job_id)

    def cached_status(self, job_id: str) -> LiveStatus | None:
        """The status from memory alone — running, or queued in the current snapshot — else None."""
        with self._changed:
            live = self._live.get(job_id)
            if live is not None:
                return live
            version, snapshot = self._queue_cache
            if version != self._queue_version or job_id not in snapshot.positions:
                return None
            return snapshot.status(job_id, self._version)

    def status(self, job_id: str) -> LiveStatus:
        with self._changed:
            live = self._live.get(job_id)
            version = self._version
        if live is not None:
            return live  # running: from memory, no query
        snapshot = self._snapshot()
        if job_id in snapshot.positions:
            return snapshot.status(job_id, version)
        state, message = self.store.state_of(job_id)
        return LiveStatus(state=state, version=version, message=message)

    def queue(self) -> list[str]:
        """Queued ids in run order, read from the store once per change of the queue."""
        return list(self._snapshot().positions)

    def _snapshot(self) -> _QueueSnapshot:
        """The queue as of its current version: one query per change, shared by every reader."""
        with self._changed:
            version, snapshot = self._queue_cache
            if version == self._queue_version:
                return snapshot
        with self._refresh:  # a burst of readers after a change waits for one query, not one each
            with self._changed:
                version, snapshot = self._queue_cache
                current = self._queue_version
            if version == current:
                return snapshot
            snapshot = _QueueSnapshot.of(self.store.queued())
            with self._changed:
                if self._queue_version == current:  # nothing moved while it was read
                    self._queue_cache = (current, snapshot)
            return snapshot

    def watch_previews(self, job_id: str, on: bool) -> None:
        with self._changed:
            self._previews[job_id] = self._previews.get(job_id, 0) + (1 if on else -1)

    def cancel(self, job_id: str) -> JobState:
        record = self.store.get(job_id)
        if record.state == JobState.QUEUED and self.store.cancel_queued(job_id):
            self._publish(job_id, None, queue_changed=True)
            return JobState.CANCELLED
        running = self._running.get(job_id)
        if running is not None:
            running.cancelled_by_user = True
            running.cancel.set()
            return JobState.RUNNING  # it stops at the end of the current step
        return self.store.get(job_id).state

    # -- workers ------------------------------------------------------------------------------------

    def _publish(self, job_id: str | None, live: LiveStatus | None, queue_changed: bool = False) -> None:
        with self._changed:
            self._version += 1
            if queue_changed:
                self._queue_version += 1
            if job_id is not None:
                if live is None:
                    self._live.pop(job_id, None)
                else:
                    self._live[job_id] = replace(live, version=self._version)
            self._changed.notify_all()
        if queue_changed and self._listeners:
            self._snapshot()  # read the new queue once here, so the watchers woken next all find it in memory
        for listener in self._listeners:
            if job_id is not None:
                listener(job_id)
            if queue_changed:
                listener(None)

    def _work(self, slot: int) -> None:
        while not self._stopping.is_set():
            ticket = self.executor.reserve(slot, timeout=0.5)  # a job is claimed only when it can start
            if ticket is None:
                continue
            try:
                with self._changed:
                    record = None if self._stopping.is_set() else self.store.claim_next()
                    if record is not None:
                        self._running[record.job_id] = _Running()
                if record is None:
                    with self._changed:
                        self._changed.wait(timeout=0.5)
                    continue
                self._run(record.job_id, ticket)
            finally:
                self.executor.release(ticket)

    def _run(self, job_id: str, ticket: Any) -> None:
        record = self.store.get(job_id)
        running = self._running[job_id]
        self._publish(job_id, LiveStatus(state=JobState.RUNNING, message="starting"), queue_changed=True)

        def progress(step: StepProgress) -> None:
            self._publish(job_id, LiveStatus(JobState.RUNNING, message=running.note, progress=step))

        def note(message: str) -> None:
            running.note = message
            live = self.live(job_id)
            self._publish(job_id, LiveStatus(JobState.RUNNING, message=message, progress=live and live.progress))

        control = JobControl(
            progress, note, running.cancel, lambda: self._previews.get(job_id, 0) > 0, preview_every=self.preview_every
        )
        try:
            if record.spec.unreadable:
                raise InvalidRequest(record.spec.unreadable)
            self.executor.run(record.spec, self.store.folder(job_id), ticket, control)
        except WorkerLost as lost:
            self._after_lost_worker(record.job_id, record.attempts, str(lost))
        except EditCancelled as stop:
            if self._parking.is_set() and not running.cancelled_by_user:
                self.store.requeue(job_id, f"parked at server shutdown after step {stop.step}; runs again on start")
            else:
                self.store.finish(job_id, JobState.CANCELLED, cancelled_message(stop, record.spec.settings.takes))
        except Exception as error:  # a job's failure must never stop the worker
            self.store.finish(job_id, JobState.FAILED, failure_message(error))
        else:
            self.store.finish(job_id, JobState.SUCCEEDED, "done")
        finally:
            with self._changed:
                self._running.pop(job_id, None)
            self._publish(job_id, None, queue_changed=True)  # it may be queued again

    def _after_lost_worker(self, job_id: str, attempts: int, reason: str) -> None:
        """Run the job again elsewhere, unless it has now taken down ``max_attempts`` workers (or restarts)."""
        limit = self.store.max_attempts
        if self._parking.is_set():
            self.store.requeue(job_id, f"{reason} during server shutdown; runs again on start")
        elif attempts < limit:
            self.store.requeue(job_id, f"{reason}; queued again (run {attempts + 1} of at most {limit})")
        else:
            self.store.finish(
                job_id,
                JobState.FAILED,
                f"{reason}; the job was interrupted {attempts} times by lost workers or restarts and is not "
                "retried again: it may be crashing its worker (host memory? a corrupt clip?); see the worker's log",
            )
