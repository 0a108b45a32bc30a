"""Running jobs in the server's own process, on this machine's GPU (the default executor).

Each concurrent slot has its own editor, because an editor's attention processors share one K/V bank: two
jobs on one editor at once would read each other's keys. A model is loaded on its first use and kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from kvlock import Editor
from kvlock.execution.acceleration import Acceleration
from kvlock.execution.warm_up import warm_up
from kvlock.loading.catalog import find_model
from kvlock.loading.lora_catalog import LoraCatalog

from ..jobs.contract import JobControl, ResultFile
from ..jobs.media_roots import MediaRoots
from ..jobs.model import JobSpec
from .base import EditorCache, WorkOrder, run_job

log = logging.getLogger("kvlock.server")


def warm(editor: Editor, model: str) -> None:
    """Run every pass kind once when the editor compiles (``kvlock.execution.warm_up``), so the first job
    after a (re)start is not the one that pays the compilation; a failure costs only that first job's time."""
    try:
        seconds = warm_up(editor)
    except Exception as exc:  # a faster first job is not worth a server that does not start
        log.warning("%s: warm-up failed (%s: %s); its first job compiles instead", model, type(exc).__name__, exc)
        return
    if seconds:
        kinds = ", ".join(f"{kind} {value:.1f} s" for kind, value in seconds.items())
        log.info("%s warmed up in %.1f s (%s)", model, sum(seconds.values()), kinds)


class InProcessExecutor:
    def __init__(
        self,
        device: str = "cpu",
        dtype: str = "float32",
        model_dirs: Iterable[str] = (),
        acceleration: Acceleration | None = None,
        concurrency: int = 1,
        roots: MediaRoots | None = None,
        lora_dirs: Iterable[str] = (),
    ) -> None:
        self.roots = roots or MediaRoots(())
        self.model_dirs = list(model_dirs)
        self.capacity = concurrency
        self.loras = LoraCatalog(tuple(lora_dirs), tuple(self.model_dirs))
        self.editors = EditorCache(
            partial(_load, device=device, dtype=dtype, acceleration=acceleration, loras=self.loras)
        )

    def resolve(self, model: str) -> str:
        return find_model(model, self.model_dirs)

    def editor(self, model: str, slot: int = 0) -> Editor:
        path = self.resolve(model)
        return self.editors.get((path, slot), path)

    def preload(self, model: str) -> None:
        warm(self.editor(model), model)

    def loaded(self) -> set[str]:
        return {path for path, _ in self.editors.loaded()}

    def admit(self, spec: JobSpec) -> None:
        """Every job that passed validation can run here."""

    def reserve(self, slot: int, timeout: float) -> int | None:
        return slot  # each runner thread owns its slot

    def release(self, ticket: int) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, spec: JobSpec, folder: Path, ticket: int, control: JobControl) -> list[ResultFile]:
        order = WorkOrder(spec, self.resolve(spec.model), self.roots.names(), media_limits=self.roots.limits)
        return run_job(self.editor(spec.model, ticket), order, folder, control)


def _load(path: str, device: str, dtype: str, acceleration: Acceleration | None, loras: LoraCatalog) -> Editor:
    return Editor.from_pretrained(path, device, dtype, acceleration, loras)
