"""Waking the watchers of a job on the event loop when the queue's worker threads change it.

A watcher registers a waiter *before* it reads the job's status, so a change that happens between its
read and its wait still wakes it; a change of the queue (a job accepted, started, finished) wakes every
watcher, since any queue position may have moved. Waiting costs a future, not a thread.

A job's progress wakes its watchers at most every ``interval`` seconds (twice a second by default;
the latest status is what they read): a progress bar needs no more, and a step that ends wakes every
watcher of the job at once, so with hundreds of them the wake-ups must not come faster than that. A
change of state always comes with a change of the queue, which wakes everyone at once. Watchers are
woken ``BATCH`` at a time, one batch per turn of the event loop, so a health check or a ListJobs that
arrives during a wave of hundreds of updates waits for one batch, not for the whole wave.
"""

from __future__ import annotations

import asyncio

from .event_loop import LoopThread

BATCH = 25


class ChangeFeed:
    def __init__(self, loop: LoopThread, interval: float = 0.5) -> None:
        self._loop = loop
        self.interval = interval
        self._waiting: dict[str, set[asyncio.Future]] = {}
        self._woken: dict[str, float] = {}  # when each job's watchers were last woken
        self._later: dict[str, asyncio.TimerHandle] = {}

    def notify(self, job_id: str | None) -> None:
        """From any thread: ``job_id`` changed (``None``: the queue did). Never blocks."""
        self._loop.call_soon(self._wake, job_id)

    def _wake(self, job_id: str | None) -> None:
        if job_id is None:
            for handle in self._later.values():
                handle.cancel()
            self._later.clear()
            now = self._loop.loop.time()
            for waiting in self._waiting:
                self._woken[waiting] = now
            groups, self._waiting = list(self._waiting.values()), {}
            self._resolve([f for group in groups for f in group])
            return
        due = self._woken.get(job_id, float("-inf")) + self.interval
        if self._loop.loop.time() < due:
            if job_id not in self._later:
                self._later[job_id] = self._loop.loop.call_at(due, self._fire, job_id)
            return
        self._fire(job_id)

    def _fire(self, job_id: str) -> None:
        self._later.pop(job_id, None)
        if len(self._woken) > 10_000:  # forget jobs nobody watches any more
            self._woken = {j: t for j, t in self._woken.items() if j in self._waiting}
        self._woken[job_id] = self._loop.loop.time()
        self._resolve(list(self._waiting.pop(job_id, ())))

    def _resolve(self, futures: list[asyncio.Future]) -> None:
        """Wake ``BATCH`` waiters now and the rest on the following turns of the loop."""
        for future in futures[:BATCH]:
            if not future.done():
                future.set_result(None)
        if len(futures) > BATCH:
            self._loop.loop.call_soon(self._resolve, futures[BATCH:])

    def waiter(self, job_id: str) -> asyncio.Future:
        """On the loop: a future resolved at the next change of ``job_id`` or of the queue."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, set()).add(future)
        return future

    def forget(self, job_id: str, future: asyncio.Future) -> None:
        group = self._waiting.get(job_id)
        if group is not None:
            group.discard(future)
            if not group:
                del self._waiting[job_id]

    async def wait(self, job_id: str, future: asyncio.Future, timeout: float) -> None:
        """Until ``future`` resolves or ``timeout`` passes; the waiter is forgotten either way."""
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            pass
        finally:
            self.forget(job_id, future)
