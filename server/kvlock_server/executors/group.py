"""Running each job across several GPUs of this machine (``kvlock serve --gpus 0,1,2,3``).

The server starts one process per GPU (:mod:`group_rank`, forked from a fork server) that together form a
``torch.distributed`` process group over loopback: NCCL between the GPUs, gloo for small CPU messages.
Each rank loads the model as an editor with sequence parallelism (``kvlock.execution.sequence_parallel``), so one
edit runs on all of them at once; the group runs one job at a time. The server process itself holds no
GPU and no model: it talks to the ranks through multiprocessing queues, relays progress, cancel and
preview requests, and watches the processes. A rank that dies mid-job (killed, out of host memory, a
driver crash) takes the group down but not the server: the others are stopped, the job is queued again
(the runner's rule for lost workers) and the next job starts a fresh group.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvlock.errors import KVLockError, UnsupportedDeviceError
from kvlock.execution.acceleration import Acceleration
from kvlock.loading.catalog import find_model
from kvlock.loading.load import resolve_device

from ..jobs.contract import JobControl, ResultFile, WorkerLost
from ..jobs.media import remove_partials
from ..jobs.media_roots import MediaRoots
from ..jobs.model import JobSpec
from .base import JobCancelled, JobDone, JobFailed, Noted, Progressed, WorkOrder, results_of
from .group_rank import Load, Loaded, RankEvent, RankSetup, Ready, Stop, rank_main

log = logging.getLogger("kvlock.server")
START_TIMEOUT = 600.0  # joining, and loading a 14B model on every rank
FAILURE_GRACE = 30.0  # after one rank fails a job, how long the others get to fail it too before the group is reset


class GroupJobFailed(KVLockError):
    """The job failed on the group; the message is the failing rank's account of why. ``stuck``: the other
    ranks were left waiting in a collective, so the group has to be started afresh."""

    def __init__(self, message: str, stuck: bool = False) -> None:
        super().__init__(message)
        self.stuck = stuck


class GroupLost(Exception):
    """A rank's process died or the group stopped answering; the group cannot run anything more."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# what every rank imports before it can join; the fork server imports it once, so a group started again after
# a lost rank forks ready processes in a fraction of the time a fresh interpreter takes
RANK_PRELOAD = ["torch", "torch.distributed", "diffusers", "kvlock", "kvlock_server.executors.group_rank"]


def _rank_context() -> Any:
    """Rank processes come from a fork server: CUDA cannot be used in a child forked from a process that has
    used it, and the fork server never does (it only imports); a plain fork of the server would inherit its
    threads and gRPC state."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(RANK_PRELOAD)
    return context


class _Group:
    """The rank processes of one process group and the queues to them."""

    def __init__(
        self,
        devices: tuple[str, ...],
        dtype: str,
        model_dirs: tuple[str, ...],
        acc: Acceleration,
        lora_dirs: tuple[str, ...] = (),
    ) -> None:
        context = _rank_context()
        self.devices = devices
        self.events: Any = context.Queue()
        self.commands = [context.Queue() for _ in devices]
        self.cancel, self.previews = context.Event(), context.Event()
        init = f"tcp://127.0.0.1:{_free_port()}"
        self.processes = []
        for rank in range(len(devices)):
            setup = RankSetup(rank, devices, init, dtype, model_dirs, acc, lora_dirs)
            process = context.Process(
                target=rank_main,
                args=(setup, self.commands[rank], self.events, self.cancel, self.previews),
                name=f"kvlock-rank-{rank}",
                daemon=True,
            )
            process.start()
            self.processes.append(process)
        self.pids: dict[int, int] = {}
        self.loaded: str | None = None
        try:
            for rank, ready in self._finals(Ready, START_TIMEOUT).items():
                self.pids[rank] = ready.pid
        except BaseException:
            self.stop(grace=0)
            raise
        log.info("GPU group up: %s", ", ".join(f"rank {r} on {d} (pid {self.pids[r]})" for r, d in enumerate(devices)))

    @property
    def label(self) -> str:
        return f"the group of {len(self.devices)} ({', '.join(self.devices)})"

    def dead(self) -> list[str]:
        return [
            f"rank {rank} on {self.devices[rank]} (pid {p.pid}) exited with code {p.exitcode}"
            for rank, p in enumerate(self.processes)
            if not p.is_alive()
        ]

    def _next(self, timeout: float) -> RankEvent | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            dead = self.dead()
            if dead:
                raise GroupLost("; ".join(dead)) from None
            return None

    def _finals(self, expected: type | tuple[type, ...], timeout: float, control: JobControl | None = None) -> dict:
        """Wait for one final event from every rank (by rank); relay progress and controls meanwhile.

        A rank that reports a failure while the others run on is waited for ``FAILURE_GRACE`` seconds: an
        error every rank meets (a bad clip) arrives from all of them at once; one that only a rank meets
        (its GPU out of memory) leaves the others waiting in a collective, and the group is reset.
        """
        finals: dict[int, Any] = {}
        deadline, failed_at = time.monotonic() + timeout, None
        while len(finals) < len(self.devices):
            if control is not None:
                self._relay(control)
            message = self._next(0.1)
            now = time.monotonic()
            if message is not None:
                event = message.event
                if isinstance(event, Progressed | Noted):
                    if control is not None and isinstance(event, Progressed):
                        control.note(f"running on {self.label}")
                        control.progress(event.progress)
                    continue
                finals[message.rank] = event
                if isinstance(event, JobFailed) and failed_at is None:
                    failed_at = now
            if failed_at is not None and now - failed_at > FAILURE_GRACE and len(finals) < len(self.devices):
                raise GroupJobFailed(self._failure(finals), stuck=True)
            if now > deadline:
                raise GroupLost(f"{self.label} did not answer within {timeout:.0f} s")
        if any(isinstance(event, JobFailed) for event in finals.values()):
            raise GroupJobFailed(self._failure(finals))
        unexpected = {type(event).__name__ for event in finals.values() if not isinstance(event, expected)}
        if unexpected:
            raise GroupLost(f"{self.label} answered {sorted(unexpected)} where {expected} was expected")
        return finals

    @staticmethod
    def _failure(finals: dict[int, Any]) -> str:
        failed = sorted((rank, event.message) for rank, event in finals.items() if isinstance(event, JobFailed))
        return failed[0][1] if len({m for _, m in failed}) == 1 else "; ".join(f"rank {r}: {m}" for r, m in failed)

    def _relay(self, control: JobControl) -> None:
        if control.cancel.is_set():
            self.cancel.set()
        if control.previews_wanted() != self.previews.is_set():
            self.previews.set() if control.previews_wanted() else self.previews.clear()

    def send(self, command: Any) -> None:
        for commands in self.commands:
            commands.put(command)

    def load(self, key: str, model: str) -> None:
        if self.loaded != key:
            self.loaded = None
            self.send(Load(key, model))
            self._finals(Loaded, START_TIMEOUT)
            self.loaded = key

    def run(self, order: WorkOrder, control: JobControl) -> list[ResultFile]:
        self.cancel.clear()
        self.send(order)
        self.loaded = None  # known again once every rank has answered
        finals = self._finals((JobDone, JobCancelled), float("inf"), control)
        first = finals[0]
        self.loaded = first.loaded[0] if first.loaded else None
        return results_of(first, self.label)

    def stop(self, grace: float = 10.0) -> None:
        self.send(Stop())
        deadline = time.monotonic() + grace
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)


class GroupExecutor:
    """The executor contract (``executor.Executor``) over one group of ranks: one job at a time."""

    capacity = 1

    def __init__(
        self,
        devices: Iterable[str],
        dtype: str = "bfloat16",
        model_dirs: Iterable[str] = (),
        acceleration: Acceleration | None = None,
        roots: MediaRoots | None = None,
        lora_dirs: Iterable[str] = (),
    ) -> None:
        self.devices = tuple(devices)
        self.lora_dirs = tuple(lora_dirs)
        self.roots = roots or MediaRoots(())
        if len(self.devices) < 2:
            raise ValueError(f"a GPU group needs at least 2 devices, got {list(self.devices)}")
        for device in self.devices:  # a missing GPU is named now, not by a rank that fails to start
            try:
                resolve_device(device, dtype)
            except UnsupportedDeviceError as error:
                listed = ",".join(self.devices)
                raise UnsupportedDeviceError(f"--gpus {listed}: {error} and serve without --gpus") from None
        acc = acceleration or Acceleration()
        self.acceleration = replace(acc, parallel=acc.parallel or "ulysses").validated()
        self.dtype, self.model_dirs = dtype, tuple(model_dirs)
        self._group: _Group | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> _Group:
        if self._group is None:
            self._group = _Group(self.devices, self.dtype, self.model_dirs, self.acceleration, self.lora_dirs)
        return self._group

    def _reset(self, reason: str) -> None:
        log.warning("GPU group reset: %s", reason)
        if self._group is not None:
            self._group.stop(grace=0)
            self._group = None

    def resolve(self, model: str) -> str:
        return find_model(model, self.model_dirs)

    def preload(self, model: str) -> None:
        with self._lock:
            self._load(self.resolve(model), model)

    def _load(self, key: str, model: str) -> _Group:
        group = self._ensure()
        try:
            group.load(key, model)
        except GroupJobFailed as failed:  # a model that failed to load on some ranks leaves the others mid-collective
            self._reset(str(failed))
            raise
        except GroupLost as lost:
            self._reset(str(lost))
            raise WorkerLost(f"{group.label} lost a rank while loading {model} ({lost})") from None
        return group

    def loaded(self) -> set[str]:
        group = self._group
        return {group.loaded} if group is not None and group.loaded else set()

    def pids(self) -> dict[int, int]:
        """The rank processes' ids, by rank (empty while no group runs)."""
        group = self._group
        return dict(group.pids) if group is not None else {}

    def admit(self, spec: JobSpec) -> None:
        """Every job that passed validation can run here."""

    def reserve(self, slot: int, timeout: float) -> int | None:
        return slot

    def release(self, ticket: Any) -> None:
        pass

    def run(self, spec: JobSpec, folder: Path, ticket: Any, control: JobControl) -> list[ResultFile]:
        with self._lock:
            key = self.resolve(spec.model)
            if self._group is None or self._group.loaded != key:
                control.note(f"loading {spec.model} on {len(self.devices)} devices")
            group = self._load(key, spec.model)
            # the ranks judge named files as the server does
            order = WorkOrder(
                spec, key, self.roots.names(), str(folder), control.preview_every, media_limits=self.roots.limits
            )
            control.note(f"starting on {group.label}")
            try:
                return group.run(order, control)
            except GroupLost as lost:
                self._reset(str(lost))
                remove_partials(folder)
                raise WorkerLost(f"{group.label} lost a rank during the job ({lost})") from None
            except GroupJobFailed as failed:
                if failed.stuck:
                    self._reset(str(failed))
                    remove_partials(folder)
                raise

    def close(self) -> None:
        with self._lock:
            if self._group is not None:
                self._group.stop()
                self._group = None
