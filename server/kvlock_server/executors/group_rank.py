"""One rank of a GPU group (``kvlock serve --gpus``): a process that joins the group and runs its share of
every edit.

It runs in a process of its own, started by :mod:`.group` from a fork server, and talks to the server only
through multiprocessing queues: commands in (:class:`Load`, a :class:`~.base.WorkOrder`, :class:`Stop`),
events out as :class:`RankEvent` (:class:`Ready`, :class:`Loaded`, progress from rank 0, then one final
event per rank and job). Every rank reads the job's media from the job store itself (the same disk), loads
the same model with sequence parallelism and runs the same edit; rank 0 alone reports progress, renders
previews and writes the result files, atomically, into the job's folder. A failure is reported, never
raised: the rank lives on for the next job unless its process dies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from kvlock.execution.acceleration import Acceleration

from ..jobs.contract import JobControl, ResultFile
from .base import EditorCache, JobDone, JobFailed, Noted, Progressed, WorkerEvent, WorkOrder, outcome, run_job

# collectives inside an edit take well under a second; this bounds a rank stuck waiting for a dead or lost
# peer, with room for the slowest rank's model load before the first collective
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class RankSetup:
    """Everything a rank process needs to join the group, resolved by the server before it starts."""

    rank: int
    devices: tuple[str, ...]
    init_method: str
    dtype: str
    model_dirs: tuple[str, ...]
    acceleration: Acceleration
    lora_dirs: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        return self.devices[self.rank]

    @property
    def backend(self) -> str:
        """NCCL between GPUs; gloo for the small CPU messages (cancel flags, shard sizes) and CPU groups."""
        return "cpu:gloo,cuda:nccl" if self.device.startswith("cuda") else "gloo"


@dataclass(frozen=True)
class Load:
    """Load ``model`` (a listed name) under the server's key for it; the group keeps one model."""

    key: str
    model: str


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ready:
    pid: int
    device: str


@dataclass(frozen=True)
class Loaded:
    key: str


@dataclass(frozen=True)
class RankEvent:
    rank: int
    event: Ready | Loaded | WorkerEvent


def rank_main(setup: RankSetup, commands: Any, events: Any, cancel: Any, previews: Any) -> None:
    """The process's whole life: join, then serve commands until :class:`Stop` (or the process is killed)."""
    import torch
    import torch.distributed as dist

    try:
        device = torch.device(setup.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(setup.devices)))
        dist.init_process_group(
            setup.backend,
            init_method=setup.init_method,
            rank=setup.rank,
            world_size=len(setup.devices),
            timeout=COLLECTIVE_TIMEOUT,
        )
    except Exception as error:  # reported to the server, which stops the group and says why
        message = f"rank {setup.rank} on {setup.device} could not join: {error}"
        events.put(RankEvent(setup.rank, JobFailed(message)))
        return
    events.put(RankEvent(setup.rank, Ready(os.getpid(), setup.device)))
    rank = _Rank(setup, events, cancel, previews)
    try:
        while not isinstance(command := commands.get(), Stop):
            if isinstance(command, Load):
                rank.load(command)
            else:
                rank.edit(command)
    finally:
        dist.destroy_process_group()


class _Rank:
    def __init__(self, setup: RankSetup, events: Any, cancel: Any, previews: Any) -> None:
        self.setup, self.events, self.cancel, self.previews = setup, events, cancel, previews
        self.editors = EditorCache(partial(_load, setup), keep=1)  # every rank drops the old model together

    def _send(self, event: Ready | Loaded | WorkerEvent) -> None:
        self.events.put(RankEvent(self.setup.rank, event))

    def _loaded(self) -> tuple[str, ...]:
        return tuple(str(key) for key in self.editors.loaded())

    def load(self, command: Load) -> None:
        def work() -> tuple[list[ResultFile], dict[str, bytes]]:
            self.editors.get(command.key, command.model)
            return [], {}

        final = outcome(work, self._loaded)
        self._send(Loaded(command.key) if isinstance(final, JobDone) else final)

    def edit(self, order: WorkOrder) -> None:
        """Rank 0 reports and writes; the others compute alongside it (their cancel flag follows rank 0's,
        ``kvlock.execution.sequence_parallel.AgreedFlag``)."""
        leader = self.setup.rank == 0
        control = (
            JobControl(
                lambda step: self._send(Progressed(step)),
                lambda message: self._send(Noted(message)),
                self.cancel,
                self.previews.is_set,
                order.preview_every,
            )
            if leader
            else None
        )

        def work() -> tuple[list[ResultFile], dict[str, bytes]]:
            editor = self.editors.get(order.model_key, order.spec.model)
            execution = {"group": list(self.setup.devices)}
            return run_job(editor, order, Path(order.folder), control, execution=execution), {}

        self._send(outcome(work, self._loaded))


def _load(setup: RankSetup, model: str) -> Any:
    from kvlock import Editor
    from kvlock.loading.catalog import find_model
    from kvlock.loading.lora_catalog import LoraCatalog

    path = find_model(model, list(setup.model_dirs))
    loras = LoraCatalog(setup.lora_dirs, setup.model_dirs)
    return Editor.from_pretrained(path, setup.device, setup.dtype, setup.acceleration, loras)
