"""What every executor shares: the work order a worker receives, the events it answers with, running one
job on an editor, and the cache of loaded editors.

A worker in another process (a rank of a GPU group, a Ray actor) gets a :class:`WorkOrder` and answers with
:class:`Progressed` and :class:`Noted` events, then exactly one final event — :class:`JobDone`,
:class:`JobCancelled` or :class:`JobFailed` — never an exception: :func:`outcome` turns whatever the job did
into one. The in-process executor calls :func:`run_job` directly and lets its exceptions reach the runner.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

from kvlock import Editor, EditRequest, EditResult
from kvlock.editing.editor import TakeFinished
from kvlock.errors import EditCancelled
from kvlock.media.limits import DEFAULT_LIMITS, MediaLimits
from kvlock.progress import StepProgress

from ..jobs.contract import JobControl, JobFailedRemotely, ResultFile, failure_message
from ..jobs.media import JobMedia, build_request, request_from_media, start_results, write_results
from ..jobs.media_roots import MediaRoots
from ..jobs.model import JobSpec


@dataclass(frozen=True)
class WorkOrder:
    """One job as a worker receives it: the spec, the server's name for its model (``model_key``, so routing
    and the worker agree on what is loaded), the media roots it judges named files under, and previews."""

    spec: JobSpec
    model_key: str
    media_roots: tuple[str, ...] = ()
    folder: str = ""  # the job's folder; "" where the worker finds it in its own view of the store
    preview_every: int = 5
    previews: bool = False
    media_limits: MediaLimits = DEFAULT_LIMITS  # what reading the job's files may cost, as at its acceptance

    @property
    def roots(self) -> MediaRoots:
        return MediaRoots(self.media_roots, self.media_limits)


@dataclass(frozen=True)
class Progressed:
    progress: StepProgress


@dataclass(frozen=True)
class Noted:
    message: str


@dataclass(frozen=True)
class JobDone:
    files: tuple[ResultFile, ...] = ()
    blobs: dict[str, bytes] = field(default_factory=dict)  # the files themselves, where no store is shared
    loaded: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobCancelled:
    step: int
    total: int
    loaded: tuple[str, ...] = ()
    kept: int = 0  # takes finished before the cancel; their files are written (``blobs``: where no store is shared)
    blobs: dict[str, bytes] = field(default_factory=dict)


class TakesKept(EditCancelled):
    """A cancel that came after some takes were written: their files' bytes travel with it to a server that
    shares no store with the worker."""

    def __init__(self, stop: EditCancelled, blobs: dict[str, bytes]) -> None:
        super().__init__(stop.step, stop.total, stop.kept)
        self.blobs = blobs


@dataclass(frozen=True)
class JobFailed:
    message: str
    loaded: tuple[str, ...] = ()


Final = JobDone | JobCancelled | JobFailed
WorkerEvent = Progressed | Noted | Final


def outcome(work: Callable[[], tuple[list[ResultFile], dict[str, bytes]]], loaded: Callable[[], tuple]) -> Final:
    """Run ``work`` and say how it ended; a failure is reported, never raised (the worker lives on)."""
    try:
        files, blobs = work()
    except EditCancelled as stop:
        blobs = stop.blobs if isinstance(stop, TakesKept) else {}
        return JobCancelled(stop.step, stop.total, loaded(), stop.kept, blobs)
    except Exception as error:  # the job's failure, not the worker's
        return JobFailed(failure_message(error), loaded())
    return JobDone(tuple(files), blobs, loaded())


def results_of(final: Final, where: str) -> list[ResultFile]:
    """The result files of a final event, or the exception the runner expects for the other two."""
    if isinstance(final, JobCancelled):
        raise EditCancelled(final.step, final.total, final.kept)
    if isinstance(final, JobFailed):
        raise JobFailedRemotely(f"{final.message} (on {where})")
    return list(final.files)


def run_edit(
    editor: Editor, request: EditRequest, control: JobControl | None, finished: TakeFinished | None = None
) -> list[EditResult]:
    """Every take of one edit, each handed to ``finished`` when done, with progress (and previews when
    someone watches) reported through ``control``."""
    try:
        if control is None:  # a rank that only computes alongside the one that reports
            return editor.edit_takes(request)
        return editor.edit_takes(
            request, progress=control.progress, cancel=control.cancel, previews=control.previews, finished=finished
        )
    finally:
        free_gpu_cache()


def run_job(
    editor: Editor,
    order: WorkOrder,
    folder: Path,
    control: JobControl | None,
    media: JobMedia | None = None,
    write_to: Path | None = None,
    execution: dict | None = None,
) -> list[ResultFile]:
    """One job on ``editor``: its media read (from ``folder``, or ``media`` already decoded), the edit run
    and each take's result files written into ``write_to`` (default: the job's folder) as soon as the take
    is done, so a cancel keeps the takes finished before it; raises what the edit raised.

    Without a ``control`` (a rank that computes alongside the one that reports) nothing is reported or written.
    """
    spec, roots = order.spec, order.roots
    if media is None:
        request, warnings, timecode = build_request(spec, folder, roots)
    else:
        request, warnings, timecode = request_from_media(spec, media)
    if control is None:
        run_edit(editor, request, None)
        return []
    target = write_to or folder
    start_results(target)
    files: list[ResultFile] = []
    takes = spec.settings.takes

    def finished(result: EditResult) -> None:
        result.trace.warnings[:0] = warnings
        result.trace.execution.update(execution or {})
        files.extend(write_results(result, spec, target, timecode, roots))
        if takes > 1:
            control.note(f"take {result.take} of {takes} written")

    run_edit(editor, request, control, finished)
    return files


def free_gpu_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class EditorCache:
    """Loaded editors by key, the least recently used dropped past ``keep`` (None: keep every one).

    An editor's attention processors share one K/V bank, so two jobs at once need two editors: a key names
    the model and, where several jobs run at once in one process, the slot.
    """

    def __init__(self, load: Callable[[str], Editor], keep: int | None = None) -> None:
        self._load, self.keep = load, keep
        self._editors: OrderedDict[Hashable, Editor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, model: str) -> Editor:
        """The editor under ``key``, loading ``model`` (what the loader takes) if it is not loaded."""
        with self._lock:
            if key in self._editors:
                self._editors.move_to_end(key)
                return self._editors[key]
            while self.keep is not None and len(self._editors) >= self.keep:
                self._editors.popitem(last=False)
                free_gpu_cache()
            editor = self._editors[key] = self._load(model)
            gc.freeze()  # a model is hundreds of thousands of objects: never rescan them (see app.py)
            return editor

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._editors

    def loaded(self) -> list[Hashable]:
        with self._lock:
            return list(self._editors)

    def clear(self) -> None:
        with self._lock:
            self._editors.clear()
        free_gpu_cache()
