"""What the queue asks of wherever jobs run, and what it gives them: the executor contract.

Every executor — this process, a GPU group, a Ray farm — offers the runner the same few calls: ``resolve``
a model name, ``admit`` a job before its upload, ``reserve``/``release`` a place to run, ``run`` a job under
a :class:`JobControl`. The runner never knows where the GPU is. Nothing here knows gRPC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kvlock.errors import KVLockError
from kvlock.progress import StepProgress

from .model import JobSpec


class WorkerLost(Exception):
    """The process running a job died under it (killed, out of host memory, node gone); the job may run again."""


class JobFailedRemotely(KVLockError):
    """The job failed where it ran (a Ray worker, a rank of a GPU group); the message is that place's account."""


@dataclass(frozen=True)
class ResultFile:
    name: str  # relative to the job folder
    kind: str  # video, region, plate, trace, plot
    take: int = 0  # which take (1-based) of a job of several; 0: a job of one take


def preview_due(step: int, total: int, every: int) -> bool:
    """Previews every ``every`` steps and at the last one, so a watcher always sees the final look."""
    return step % max(1, every) == 0 or step == total - 1


@dataclass
class JobControl:
    """The running job's lines to the queue: its progress and notes go out; the cancel flag and whether
    anyone watches previews come in."""

    progress: Callable[[StepProgress], None]
    note: Callable[[str], None]
    cancel: threading.Event
    previews_wanted: Callable[[], bool]
    preview_every: int = 5

    def previews(self, step: int, total: int) -> bool:
        """Whether step ``step`` of ``total`` should carry a preview (someone watches, and it is due)."""
        return self.previews_wanted() and preview_due(step, total, self.preview_every)


MAX_MESSAGE = 2000  # characters of a failure kept with the job: every ListJobs and WatchJob carries it


def failure_message(error: BaseException) -> str:
    """The reason a person reads when a job fails, one line of at most ``MAX_MESSAGE`` characters."""
    name = type(error).__name__
    text = " ".join(str(error).split())
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + f"… ({len(text)} characters)"
    if "OutOfMemory" in name or "out of memory" in text.lower():
        return f"the GPU ran out of memory ({text}); try a shorter window, a smaller size, or an offload mode"
    if isinstance(error, KVLockError):
        return text
    return f"{name}: {text}"


class Executor(Protocol):
    """What the queue and the service need from wherever jobs run."""

    capacity: int

    def resolve(self, model: str) -> str: ...
    def preload(self, model: str) -> None: ...
    def loaded(self) -> set[str]: ...
    def admit(self, spec: JobSpec) -> None: ...
    def reserve(self, slot: int, timeout: float) -> Any | None: ...
    def release(self, ticket: Any) -> None: ...
    def run(self, spec: JobSpec, folder: Path, ticket: Any, control: JobControl) -> list[ResultFile]: ...
    def close(self) -> None: ...
