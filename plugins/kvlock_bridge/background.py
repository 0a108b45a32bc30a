"""A render running off a host's UI thread, for hosts whose UI may only be touched from their own loop
(Blender's timers, Resolve's UIManager timer): the worker records, the host's loop reads ``snapshot``.

Media goes by path when the server can read it; if the server refuses the path (another disk, outside its
media roots) and the host gave a ``fallback``, the frames it returns are uploaded instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .client import Client, Progress
from .clips import Clip, FileClip, Params
from .errors import BridgeError, JobFailedError, RequestRejectedError
from .render import RenderResult, planned, render

PATH_REFUSED = {"PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT"}
Fallback = Callable[[], tuple[Clip, Clip]]


@dataclass(frozen=True)
class Snapshot:
    """What the host's loop reads: ``result`` holds the takes on disk once done — every take, or those a
    cancel kept (then ``cancelled`` is true and ``error`` says so)."""

    progress: Progress | None
    done: bool
    error: str | None
    cancelled: bool
    uploaded: bool
    result: RenderResult | None = None


@dataclass
class BackgroundRender:
    client: Client
    source: Clip | FileClip
    matte: Clip | FileClip
    params: Params
    output: Path
    fallback: Fallback | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _progress: Progress | None = None
    _error: str | None = None
    _cancelled: bool = False
    _uploaded: bool = False
    _done: bool = False
    _result: RenderResult | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="kvlock-render", daemon=True).start()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._progress, self._done, self._error, self._cancelled, self._uploaded, self._result)

    def _on_progress(self, update: Progress) -> None:
        with self._lock:
            self._progress = update

    def _render(self, source: Clip | FileClip, matte: Clip | FileClip) -> None:
        result = render(self.client, source, matte, self.params, self.output, self._on_progress, self.cancel)
        with self._lock:
            self._result = result
            if result.cancelled:
                self._cancelled, self._error = True, result.cancelled

    def _run(self) -> None:
        try:
            try:
                self._render(self.source, self.matte)
            except RequestRejectedError as exc:
                if self.fallback is None or exc.code not in PATH_REFUSED:
                    raise
                with self._lock:
                    self._uploaded = True
                self._render(*self.fallback())
        except JobFailedError as exc:
            with self._lock:
                self._cancelled = exc.state == "cancelled"
                self._error = "cancelled" if self._cancelled else f"the job failed: {exc.reason}"
        except (BridgeError, OSError, ValueError) as exc:
            with self._lock:
                self._error = str(exc)
        except Exception as exc:  # the host's loop must always hear back, or it would wait forever
            with self._lock:
                self._error = f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            self.client.close()
            with self._lock:
                self._done = True


def progress_line(update: Progress | None) -> str:
    """One line for a host's UI: queue position, or step (and take), σ² (the metric h) and ETA."""
    if update is None:
        return "uploading…"
    if update.state == "queued":
        return f"queued ({update.queue_position} ahead)" if update.queue_position else "queued"
    p = update.denoising
    if p is None:
        return update.state
    eta = f", ETA {p.eta_seconds:.0f} s" if p.eta_seconds else ""
    metric = "—" if p.h is None else f"{p.h:.4g}"
    take = f"take {p.take + 1}/{p.takes}, " if p.takes > 1 else ""
    return f"{take}step {p.step + 1}/{p.total}, σ² {metric}{eta}"


def unused_output(folder: Path, stem: str, suffix: str, params: Params | None = None) -> Path:
    """``stem.kvlock.mkv``, else ``stem.kvlock.2.mkv`` …: the first name not taken, with its companions (and,
    for ``params`` of several takes, every take's: ``stem.kvlock.take1.mkv`` …)."""
    for n in range(1, 10_000):
        name = f"{stem}.kvlock{'' if n == 1 else f'.{n}'}"
        output = folder / f"{name}{suffix}"
        plans = planned(output, params) if params is not None else []
        candidates = [output, folder / f"{name}.trace.json", folder / f"{name}.trace.png"]
        candidates += [path for p in plans for path in (p.output, p.trace, p.plot, p.region) if path is not None]
        if not any(c.exists() for c in candidates):
            return output
    raise FileExistsError(f"no free output name for {stem} in {folder}")
