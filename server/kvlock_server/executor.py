"""Where jobs run. The in-process executor keeps one loaded editor per (model, slot) on this machine's GPU.

Each concurrent slot has its own editor because an editor's attention processors share one K/V bank:
two jobs on one editor at once would read each other's keys. The model is loaded on first use and kept.
Every executor offers the runner the same few calls (``reserve``/``release`` a place to run, ``run`` a
job under a :class:`JobControl`), so the queue never knows whether the GPU is here or on a Ray farm.
"""

from __future__ import annotations

import gc
import io
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from kvlock import Editor
from kvlock.acceleration import Acceleration
from kvlock.catalog import listed_model
from kvlock.warm_up import warm_up

from .job_media import ResultFile, build_request, write_results
from .jobs import JobSpec
from .media_roots import MediaRoots

log = logging.getLogger("kvlock.server")


def _kinds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{kind} {value:.1f} s" for kind, value in seconds.items())


Progress = Callable[[dict[str, Any]], None]


class WorkerLost(Exception):
    """The process running a job died under it (killed, out of host memory, node gone); the job may run again."""


@dataclass
class JobControl:
    """The running job's lines to the queue: where progress goes, the cancel flag, whether anyone watches."""

    progress: Progress
    cancel: threading.Event
    previews_wanted: Callable[[], bool]
    preview_every: int = 5


def preview_due(step: int, total: int, every: int) -> bool:
    """Previews every ``every`` steps and at the last one, so a watcher always sees the final look."""
    return step % max(1, every) == 0 or step == total - 1


def strip_tensors(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("latents", "x0")}


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


class InProcessExecutor:
    def __init__(
        self,
        device: str = "cpu",
        dtype: str = "float32",
        model_dirs: Iterable[str] = (),
        acceleration: Acceleration | None = None,
        concurrency: int = 1,
        roots: MediaRoots | None = None,
    ) -> None:
        self.device, self.dtype = device, dtype
        self.roots = roots or MediaRoots(())
        self.acceleration = acceleration
        self.model_dirs = list(model_dirs)
        self.capacity = concurrency
        self._editors: dict[tuple[str, int], Editor] = {}
        self._lock = threading.Lock()

    def resolve(self, model: str) -> str:
        return listed_model(model, self.model_dirs)

    def editor(self, model: str, slot: int = 0) -> Editor:
        key = (self.resolve(model), slot)
        with self._lock:
            if key not in self._editors:
                self._editors[key] = Editor.from_pretrained(key[0], self.device, self.dtype, self.acceleration)
                gc.freeze()  # a model is hundreds of thousands of objects: never rescan them (see app.py)
            return self._editors[key]

    def preload(self, model: str) -> None:
        """Load the model and, when it compiles, run every pass kind once (``kvlock.warm_up``), so the first
        job after a (re)start is not the one that pays the compilation."""
        editor = self.editor(model)
        try:
            seconds = warm_up(editor)
        except Exception as exc:  # a faster first job is not worth a server that does not start
            log.warning("%s: warm-up failed (%s: %s); its first job compiles instead", model, type(exc).__name__, exc)
            return
        if seconds:
            log.info("%s warmed up in %.1f s (%s)", model, sum(seconds.values()), _kinds(seconds))

    def loaded(self) -> set[str]:
        with self._lock:
            return {model for model, _ in self._editors}

    def admit(self, spec: JobSpec) -> None:
        """Every job that passed validation can run here."""

    def reserve(self, slot: int, timeout: float) -> int | None:
        return slot  # each runner thread owns its slot

    def release(self, ticket: int) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, spec: JobSpec, folder: Path, ticket: int, control: JobControl) -> list[ResultFile]:
        request, warnings, timecode = build_request(spec, folder, self.roots)
        editor = self.editor(spec.model, ticket)
        result = run_edit(editor, request, control)
        result.trace.warnings[:0] = warnings
        return write_results(result, spec, folder, timecode, self.roots)


def run_edit(editor: Editor, request: Any, control: JobControl, extra: dict[str, Any] | None = None) -> Any:
    """One edit with progress (and previews when someone watches) reported through ``control``."""

    def report(info: dict[str, Any]) -> None:
        event = strip_tensors(info) | (extra or {})
        if control.previews_wanted() and preview_due(info["step"], info["total"], control.preview_every):
            event["preview_png"] = png_bytes(editor.preview(info["x0"]))
        control.progress(event)

    try:
        return editor.edit(request, progress=report, cancel=control.cancel)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def png_bytes(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
