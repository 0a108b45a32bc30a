"""The Ray actor that runs edits on one GPU (or a few CPU cores) of the farm.

One actor is one worker: it keeps its loaded models between jobs (the reason jobs are routed by model),
runs one job at a time, and streams what happens back to the server as it happens — progress and notes,
then exactly one final event (``base.JobDone``, ``JobCancelled`` or ``JobFailed``). Its methods run on a small thread
pool (a threaded actor), so ``control`` can reach a job while ``run`` is busy with it: that is how a
cancel or a newly attached preview watcher gets to the denoising loop between steps.

Media comes one of two ways. When the worker sees the job store (same mount on every machine), it reads
the job's folder and writes the results there itself; otherwise the server hands it the decoded clip
through Ray's object store and gets the encoded results back the same way (small jobs only).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import tempfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from kvlock.errors import EditCancelled
from kvlock.execution.acceleration import Acceleration
from kvlock.execution.warm_up import warm_up
from kvlock.loading.catalog import find_model

from ..jobs.contract import JobControl, ResultFile
from ..jobs.media import JobMedia, result_files
from ..jobs.model import check_job_id
from .base import (
    EditorCache,
    Final,
    JobFailed,
    Noted,
    Progressed,
    TakesKept,
    WorkerEvent,
    WorkOrder,
    outcome,
    run_job,
)

STORE_ID_FILE = "store-id"


def sees_store(store_path: str, store_id: str) -> bool:
    """True when this machine reads the very store the server writes (not just a folder of that name)."""
    try:
        return (Path(store_path) / STORE_ID_FILE).read_text().strip() == store_id
    except OSError:
        return False


class _Job:
    def __init__(self, previews: bool) -> None:
        self.cancel = threading.Event()
        self.previews = previews


class EditWorker:
    def __init__(
        self,
        name: str,
        device: str,
        dtype: str,
        model_dirs: list[str],
        acceleration: Acceleration | None,
        store_path: str,
        store_id: str,
        keep_models: int = 1,
        threads: int = 0,
        lora_dirs: tuple[str, ...] = (),
    ) -> None:
        if threads and device == "cpu":
            import torch

            torch.set_num_threads(threads)
        self.name, self.device = name, device
        self.store_path, self.store_id = store_path, store_id
        loras = (tuple(lora_dirs), tuple(model_dirs))
        self.editors = EditorCache(partial(_load, model_dirs, device, dtype, acceleration, loras), max(1, keep_models))
        self._jobs: dict[str, _Job] = {}
        self._busy = threading.Lock()

    # -- questions the server asks ------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        import ray

        return {
            "name": self.name,
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
            "host": socket.gethostname(),
            "device": self.device,
            "sees_store": sees_store(self.store_path, self.store_id),
            "loaded": self._loaded(),
        }

    def _loaded(self) -> list[str]:
        return [str(key) for key in self.editors.loaded()]

    def preload(self, key: str, model: str) -> list[str]:
        with self._busy:
            editor = self.editors.get(key, model)
            # every pass kind compiled before the first job; should it fail, a slower first job, not a dead worker
            with contextlib.suppress(Exception):
                warm_up(editor)
        return self._loaded()

    def control(self, job_id: str, cancel: bool = False, previews: bool | None = None) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        if cancel:
            job.cancel.set()
        if previews is not None:
            job.previews = previews

    # -- the work -----------------------------------------------------------------------------------

    def run(self, order: WorkOrder, media: JobMedia | None = None) -> Iterator[WorkerEvent]:
        """Stream the job's events, the final one last; call with ``num_returns="streaming"``."""
        if not self._busy.acquire(blocking=False):
            yield JobFailed(f"{self.name} is already running a job", tuple(self._loaded()))
            return
        events: queue.Queue = queue.Queue()
        job_id = order.spec.job_id
        state = self._jobs[job_id] = _Job(order.previews)
        worker = threading.Thread(target=self._execute, args=(order, media, state, events), daemon=True)
        try:
            worker.start()
            while True:
                event = events.get()
                yield event
                if not isinstance(event, Progressed | Noted):
                    return
        finally:
            worker.join()
            self._jobs.pop(job_id, None)
            self._busy.release()

    def _execute(self, order: WorkOrder, media: JobMedia | None, state: _Job, events: queue.Queue) -> None:
        def work() -> tuple[list[ResultFile], dict[str, bytes]]:
            if order.model_key not in self.editors:
                events.put(Noted(f"loading {order.spec.model} on {self.name}"))
            editor = self.editors.get(order.model_key, order.spec.model)
            folder = Path(self.store_path) / "jobs" / check_job_id(order.spec.job_id)
            control = JobControl(
                lambda step: events.put(Progressed(step)),
                lambda message: events.put(Noted(message)),
                state.cancel,
                lambda: state.previews,
                order.preview_every,
            )
            execution = {"worker": {k: v for k, v in self.describe().items() if k != "loaded"}}
            if media is None:
                return run_job(editor, order, folder, control, execution=execution), {}
            with tempfile.TemporaryDirectory(prefix="kvlock-result-") as scratch:
                out = Path(scratch)
                try:
                    files = run_job(editor, order, out, control, media=media, execution=execution)
                except EditCancelled as stop:  # the takes finished before it go back with it
                    if not stop.kept:
                        raise
                    raise TakesKept(stop, written(out, result_files(out))) from None
                return files, written(out, files)

        final: Final = outcome(work, lambda: tuple(self._loaded()))
        events.put(final)


def written(out: Path, files: list[ResultFile]) -> dict[str, bytes]:
    """The bytes of result files written into ``out``, with their listing, for a server without the store."""
    blobs = {f.name: (out / f.name).read_bytes() for f in files}
    blobs["results.json"] = (out / "results.json").read_bytes()
    return blobs


def _load(
    model_dirs: list[str],
    device: str,
    dtype: str,
    acceleration: Acceleration | None,
    loras: tuple[tuple[str, ...], tuple[str, ...]],
    model: str,
) -> Any:
    """An editor for ``model``, named as the server lists it (``key`` is the server's resolved path, so the
    server's routing and this worker agree on what is loaded even where the folder is mounted elsewhere)."""
    from kvlock import Editor
    from kvlock.loading.lora_catalog import LoraCatalog

    catalog = LoraCatalog(*loras)  # this worker's own view of the server's LoRA folders
    return Editor.from_pretrained(find_model(model, model_dirs), device, dtype, acceleration, catalog)
