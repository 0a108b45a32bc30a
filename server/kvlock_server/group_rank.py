"""One rank of a GPU group (``kvlock serve --gpus``): a process that joins the group and runs its share of
every edit.

It runs in a process of its own, started by :mod:`group_executor` from a fork server, and talks to
the server only through multiprocessing queues: commands in (``load``, ``edit``, ``stop``), events out
(``ready``, ``loaded``, ``progress`` from rank 0, then one final ``done``/``cancelled``/``failed`` per
rank and job). Every rank reads the job's media from the job store itself (the same disk), loads the same
model with sequence parallelism and runs the same edit; rank 0 alone reports progress, renders previews
and writes the result files, atomically, into the job's folder. A failure is reported, never raised: the
rank lives on for the next job unless its process dies.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from kvlock.acceleration import Acceleration

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

    @property
    def device(self) -> str:
        return self.devices[self.rank]

    @property
    def backend(self) -> str:
        """NCCL between GPUs; gloo for the small CPU messages (cancel flags, shard sizes) and CPU groups."""
        return "cpu:gloo,cuda:nccl" if self.device.startswith("cuda") else "gloo"


def rank_main(setup: RankSetup, commands: Any, events: Any, cancel: Any, previews: Any) -> None:
    """The process's whole life: join, then serve commands until ``stop`` (or the process is killed)."""
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
        events.put(("failed", setup.rank, {"message": f"rank {setup.rank} on {setup.device} could not join: {error}"}))
        return
    events.put(("ready", setup.rank, {"pid": os.getpid(), "device": setup.device}))
    rank = _Rank(setup, events, cancel, previews)
    try:
        while True:
            command, payload = commands.get()
            if command == "stop":
                break
            if command == "load":
                rank.load(payload["model_key"], payload["model"])
            elif command == "edit":
                rank.edit(payload)
    finally:
        dist.destroy_process_group()


class _Rank:
    def __init__(self, setup: RankSetup, events: Any, cancel: Any, previews: Any) -> None:
        self.setup, self.events, self.cancel, self.previews = setup, events, cancel, previews
        self.key: str | None = None
        self.editor: Any = None

    def _final(self, kind: str, **payload: Any) -> None:
        self.events.put((kind, self.setup.rank, payload | {"loaded": self.key}))

    def _editor(self, key: str, model: str) -> Any:
        """The group keeps one model: every rank drops the old one and loads the new one together."""
        from kvlock import Editor
        from kvlock.catalog import resolve_model

        if self.key != key:
            self.editor, self.key = None, None
            _free_gpu_cache()
            path = resolve_model(model, list(self.setup.model_dirs))
            self.editor = Editor.from_pretrained(path, self.setup.device, self.setup.dtype, self.setup.acceleration)
            self.key = key
        return self.editor

    def load(self, key: str, model: str) -> None:
        from .runner import failure_message

        try:
            self._editor(key, model)
        except Exception as error:
            self._final("failed", message=failure_message(error))
        else:
            self._final("loaded")

    def edit(self, job: dict[str, Any]) -> None:
        from kvlock.errors import EditCancelled

        from .executor import JobControl, run_edit
        from .job_media import build_request, write_results
        from .jobs import JobSpec
        from .media_roots import MediaRoots
        from .runner import failure_message

        try:
            spec = JobSpec.from_json(job["spec"])
            editor = self._editor(job["model_key"], spec.model)
            folder = Path(job["folder"])
            roots = MediaRoots(job.get("media_roots", ()))
            request, warnings, timecode = build_request(spec, folder, roots)
            if self.setup.rank != 0:
                editor.edit(request)  # its cancel flag follows rank 0's (kvlock.sequence_parallel.AgreedFlag)
                self._final("done")
                return
            control = JobControl(
                lambda event: self.events.put(("progress", 0, event)),
                self.cancel,
                self.previews.is_set,
                job.get("preview_every", 5),
            )
            result = run_edit(editor, request, control)
            result.trace.warnings[:0] = warnings
            result.trace.execution["group"] = list(self.setup.devices)
            files = write_results(result, spec, folder, timecode, roots)
            self._final("done", files=[asdict(f) for f in files])
        except EditCancelled as stop:
            self._final("cancelled", step=stop.step, total=stop.total)
        except Exception as error:  # the job's failure; the rank lives on for the next job
            self._final("failed", message=failure_message(error))


def _free_gpu_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
