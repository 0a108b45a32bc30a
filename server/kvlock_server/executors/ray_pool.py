"""The server's view of its Ray workers: which are up, which are free, what each has loaded.

Routing rule (model affinity): a job goes to a free worker that already holds its model; failing that to
a free worker holding nothing, and failing that to the free worker whose models are least needed (held
elsewhere too, then idle longest), which loads it. A queued job is claimed only once a worker is free
(``reserve``), so jobs wait in the store's queue — visible, cancellable, ordered by priority — rather
than inside Ray. A worker that dies is replaced by a fresh actor; Ray starts it wherever there is room,
or as soon as a machine with a free GPU joins.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kvlock.server")
PING_SECONDS = 5.0


@dataclass
class Worker:
    name: str
    handle: Any
    state: str = "starting"  # starting, free, busy, dead
    loaded: list[str] = field(default_factory=list)  # least recently used first
    sees_store: bool = False
    node: str = ""
    pid: int = 0
    idle_since: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.name} on {self.node or '?'} (pid {self.pid})"


@dataclass
class Ticket:
    """A promise of one free worker, taken before a job is claimed from the queue."""

    worker: Worker | None = None
    settled: bool = False


class NoWorkerForJob(Exception):
    """No worker, now or later, can take this job (it needs the shared store and none sees it)."""


def choose_worker(
    free: Iterable[Worker], model: str, needs_store: bool, everyone: Iterable[Worker] = ()
) -> Worker | None:
    """Pick the worker for a job on ``model`` among ``free`` ones (see the module's routing rule)."""
    eligible = [w for w in free if w.sees_store or not needs_store]
    if not eligible:
        return None
    holding = [w for w in eligible if model in w.loaded]
    if holding:
        return max(holding, key=lambda w: w.idle_since)  # the warmest: its model is least likely evicted
    empty = [w for w in eligible if not w.loaded]
    if empty:
        return empty[0]
    held_by = [m for w in everyone for m in w.loaded]

    def cost(w: Worker) -> tuple[int, float]:
        only_copy = sum(held_by.count(m) <= 1 for m in w.loaded)
        return only_copy, w.idle_since

    return min(eligible, key=cost)


class WorkerPool:
    def __init__(self, spawn: Callable[[str], Any], count: int, keep_models: int = 1) -> None:
        self._spawn = spawn
        self.keep_models = keep_models
        self._cond = threading.Condition()
        self._workers: dict[str, Worker] = {}
        self._starting: dict[Any, Worker] = {}  # describe() ref → worker
        self._reserved = 0
        self._restarting = 0  # replacements decided on but not yet asked of Ray
        self._closed = False
        self._serial = itertools.count(1)
        for _ in range(count):
            self._start()
        self._watcher = threading.Thread(target=self._watch, name="kvlock-ray-pool", daemon=True)
        self._watcher.start()

    # -- life cycle ---------------------------------------------------------------------------------

    def _start(self) -> None:
        name = f"worker-{next(self._serial)}"
        handle = self._spawn(name)
        worker = Worker(name, handle)
        with self._cond:
            self._workers[name] = worker
            self._starting[handle.describe.remote()] = worker

    def _watch(self) -> None:
        """Mark workers ready as their actors come up (a pending one waits for a machine with room), and
        ping idle ones every ``PING_SECONDS`` so a worker that died between jobs is replaced before a job
        is sent to it."""
        import ray

        pings: dict[Any, Worker] = {}
        next_ping = time.monotonic() + PING_SECONDS
        while not self._closed:
            if time.monotonic() >= next_ping:
                next_ping = time.monotonic() + PING_SECONDS
                with self._cond:
                    idle = [w for w in self._free() if w not in pings.values()]
                pings.update({w.handle.describe.remote(): w for w in idle})
            with self._cond:
                refs = [*self._starting, *pings]
            if not refs:
                time.sleep(0.2)
                continue
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
            for ref in ready:
                if ref in pings:
                    self._pinged(ref, pings.pop(ref))
                else:
                    with self._cond:
                        worker = self._starting.pop(ref)
                    self._started(ref, worker)

    def _started(self, ref: Any, worker: Worker) -> None:
        import ray

        try:
            info = ray.get(ref)
        except Exception as error:  # the actor could not start (import error, node lost …)
            log.error("Ray %s did not start: %s; starting another in 5 s", worker.name, error)
            self._replace(worker, delay=5.0)
            return
        with self._cond:
            worker.node, worker.pid = info["node"], info["pid"]
            worker.sees_store, worker.loaded = info["sees_store"], info["loaded"]
            worker.state, worker.idle_since = "free", time.monotonic()
            self._cond.notify_all()
        media = "reads the job store directly" if worker.sees_store else "gets media via the object store"
        log.info("Ray %s is up (%s, %s)", worker.label, info["host"], media)

    def _pinged(self, ref: Any, worker: Worker) -> None:
        import ray

        try:
            ray.get(ref)
        except Exception as error:
            with self._cond:
                gone = worker.state == "free"  # a busy worker's death is its job's to report
            if gone:
                self.lost(worker, f"found dead while idle: {str(error).splitlines()[0] if str(error) else error}")

    def _coming(self) -> bool:
        """Whether a worker is on its way: judged by the workers' states, not the watcher's bookkeeping,
        which drops a worker's start request a moment before it marks the worker free."""
        return self._restarting > 0 or any(w.state == "starting" for w in self._workers.values())

    def wait_ready(self, timeout: float) -> list[Worker]:
        """Block until every worker is up (or ``timeout``); return those that are."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.wait_for(lambda: not self._coming(), timeout=max(0.0, deadline - time.monotonic()))
            return [w for w in self._workers.values() if w.state in ("free", "busy")]

    def close(self) -> None:
        import ray

        with self._cond:
            self._closed = True
            workers = list(self._workers.values())
            self._cond.notify_all()
        self._watcher.join()  # it calls into Ray; it must be done before the driver disconnects
        for worker in workers:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(worker.handle, no_restart=True)

    # -- routing ------------------------------------------------------------------------------------

    def _free(self) -> list[Worker]:
        return [w for w in self._workers.values() if w.state == "free"]

    def reserve(self, timeout: float) -> Ticket | None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._free()) > self._reserved or self._closed, timeout):
                return None
            if self._closed:
                return None
            self._reserved += 1
            return Ticket()

    def assign(self, ticket: Ticket, model: str, needs_store: bool) -> Worker:
        """Turn the ticket into a busy worker for ``model``; waits only when the job needs a store-seeing one."""
        with self._cond:
            while True:
                worker = choose_worker(self._free(), model, needs_store, self._workers.values())
                if worker is not None:
                    worker.state = "busy"
                    self._reserved -= 1
                    ticket.worker = worker
                    return worker
                alive = [w for w in self._workers.values() if w.state != "dead"]
                if not any(w.sees_store for w in alive) and not self._coming():
                    raise NoWorkerForJob("no Ray worker sees the job store")
                if self._closed:
                    raise NoWorkerForJob("the server is stopping")
                self._cond.wait(timeout=0.5)

    def release(self, ticket: Ticket, loaded: list[str] | None = None) -> None:
        """Give the ticket's worker (or, if never assigned, its reservation) back; later calls do nothing."""
        with self._cond:
            if ticket.settled:
                return
            ticket.settled = True
            worker = ticket.worker
            if worker is None:
                self._reserved -= 1
            elif worker.state == "busy":
                worker.state, worker.idle_since = "free", time.monotonic()
                if loaded is not None:
                    worker.loaded = loaded
            self._cond.notify_all()

    def note_loaded(self, worker: Worker, loaded: list[str]) -> None:
        with self._cond:
            worker.loaded = loaded

    def lost(self, worker: Worker, reason: str) -> None:
        """A worker died: forget it and start a replacement (a new process, possibly on another machine)."""
        with self._cond:
            if worker.state == "dead":  # already replaced (its job and a ping both noticed)
                return
        log.warning("Ray %s was lost (%s); starting a replacement", worker.label, reason)
        self._replace(worker)

    def _replace(self, worker: Worker, delay: float = 0.0) -> None:
        """Retire ``worker`` and start another after ``delay`` seconds; the replacement counts as coming
        from before the old one is dropped, so nobody waiting for workers sees a moment with none coming."""
        with self._cond:
            self._restarting += 1
        self._retire(worker)
        try:
            with self._cond:
                self._cond.wait_for(lambda: self._closed, timeout=delay)
            if not self._closed:
                self._start()
        finally:
            with self._cond:
                self._restarting -= 1
                self._cond.notify_all()

    def _retire(self, worker: Worker) -> None:
        import ray

        with self._cond:
            worker.state = "dead"
            self._workers.pop(worker.name, None)
            self._cond.notify_all()
        with contextlib.suppress(Exception):  # already gone
            ray.kill(worker.handle, no_restart=True)

    # -- what the service reports -------------------------------------------------------------------

    def workers(self) -> list[Worker]:
        with self._cond:
            return list(self._workers.values())

    def loaded(self) -> set[str]:
        with self._cond:
            return {m for w in self._workers.values() for m in w.loaded}

    def any_sees_store(self) -> bool | None:
        """True/False once some worker is up; ``None`` while none has reported yet."""
        with self._cond:
            up = [w for w in self._workers.values() if w.state in ("free", "busy")]
            return any(w.sees_store for w in up) if up else None
