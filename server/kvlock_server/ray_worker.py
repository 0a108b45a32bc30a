"""The Ray actor that runs edits on one GPU (or a few CPU cores) of the farm.

One actor is one worker: it keeps its loaded models between jobs (the reason jobs are routed by model),
runs one job at a time, and streams what happens back to the server as it happens — progress events,
then exactly one final event: ``done``, ``cancelled`` or ``failed``. Its methods run on a small thread
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
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kvlock import Editor
from kvlock.acceleration import Acceleration
from kvlock.catalog import listed_model
from kvlock.errors import EditCancelled
from kvlock.warm_up import warm_up

from .executor import JobControl, run_edit
from .job_media import assemble_request, build_request, write_results
from .jobs import JobSpec, check_job_id
from .media_roots import MediaRoots
from .runner import failure_message

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
    ) -> None:
        if threads and device == "cpu":
            import torch

            torch.set_num_threads(threads)
        self.name, self.device, self.dtype = name, device, dtype
        self.model_dirs, self.acceleration = model_dirs, acceleration
        self.store_path, self.store_id = store_path, store_id
        self.keep_models = max(1, keep_models)
        self._editors: OrderedDict[str, Editor] = OrderedDict()  # least recently used first
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
            "loaded": list(self._editors),
        }

    def preload(self, key: str, model: str) -> list[str]:
        with self._busy:
            editor = self._editor(key, model)
            # every pass kind compiled before the first job; should it fail, a slower first job, not a dead worker
            with contextlib.suppress(Exception):
                warm_up(editor)
        return list(self._editors)

    def control(self, job_id: str, cancel: bool = False, previews: bool | None = None) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        if cancel:
            job.cancel.set()
        if previews is not None:
            job.previews = previews

    # -- the work -----------------------------------------------------------------------------------

    def run(self, job: dict[str, Any], media: tuple | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream ``(kind, payload)`` events for one job; call with ``num_returns="streaming"``."""
        if not self._busy.acquire(blocking=False):
            yield "failed", {"message": f"{self.name} is already running a job", "loaded": list(self._editors)}
            return
        events: queue.Queue = queue.Queue()
        state = self._jobs[job["job_id"]] = _Job(job.get("previews", False))
        worker = threading.Thread(target=self._execute, args=(job, media, state, events), daemon=True)
        try:
            worker.start()
            while True:
                kind, payload = events.get()
                yield kind, payload
                if kind in ("done", "cancelled", "failed"):
                    return
        finally:
            worker.join()
            self._jobs.pop(job["job_id"], None)
            self._busy.release()

    def _execute(self, job: dict[str, Any], media: tuple | None, state: _Job, events: queue.Queue) -> None:
        def final(kind: str, **payload: Any) -> None:
            events.put((kind, payload | {"loaded": list(self._editors)}))

        try:
            spec = JobSpec.from_json(job["spec"])
            if job["model_key"] not in self._editors:
                events.put(("status", {"message": f"loading {spec.model} on {self.name}"}))
            editor = self._editor(job["model_key"], spec.model)
            folder = Path(self.store_path) / "jobs" / check_job_id(spec.job_id)
            roots = MediaRoots(job.get("media_roots", ()))
            if media is None:
                request, warnings, timecode = build_request(spec, folder, roots)
            else:
                frames, matte, warnings, timecode = media
                request, more = assemble_request(spec, frames, matte)
                warnings = list(warnings) + more
            control = JobControl(
                lambda event: events.put(("progress", event)),
                state.cancel,
                lambda: state.previews,
                job.get("preview_every", 5),
            )
            result = run_edit(editor, request, control)
            result.trace.warnings[:0] = warnings
            result.trace.execution["worker"] = {k: v for k, v in self.describe().items() if k != "loaded"}
            if media is None:
                files = write_results(result, spec, folder, timecode, roots)
                final("done", files=[asdict(f) for f in files])
            else:
                with tempfile.TemporaryDirectory(prefix="kvlock-result-") as scratch:
                    files = write_results(result, spec, Path(scratch), timecode, roots)
                    blobs = {f.name: (Path(scratch) / f.name).read_bytes() for f in files}
                    blobs["results.json"] = (Path(scratch) / "results.json").read_bytes()
                final("done", files=[asdict(f) for f in files], blobs=blobs)
        except EditCancelled as stop:
            final("cancelled", step=stop.step, total=stop.total)
        except Exception as error:  # reported to the server as the job's failure; the worker lives on
            final("failed", message=failure_message(error))

    def _editor(self, key: str, model: str) -> Editor:
        """The loaded editor for ``model``; loading one past ``keep_models`` drops the least recently used.

        ``key`` is the server's name for the model (its resolved path there), so the server's routing and
        this worker agree on what is loaded even where the model folder is mounted elsewhere.
        """
        if key in self._editors:
            self._editors.move_to_end(key)
            return self._editors[key]
        while len(self._editors) >= self.keep_models:
            self._editors.popitem(last=False)
            _free_gpu_cache()
        path = listed_model(model, self.model_dirs)
        self._editors[key] = Editor.from_pretrained(path, self.device, self.dtype, self.acceleration)
        return self._editors[key]


def _free_gpu_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
