"""One render at a time, off the main thread; a ``bpy.app.timers`` callback is the only code touching bpy.

The worker thread runs the bridge's ``render`` (upload, follow, fetch, atomic write) and records progress
in a lock-protected state. ``poll`` — registered as a timer — copies that state into the panel and the
window manager's progress, and when the job ends places the result through an undoable operator.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from kvlock_bridge import ArrayClip, BridgeError, Client, JobFailedError, Params, render

POLL_SECONDS = 0.25


@dataclass
class Placement:
    """Where the result strip goes once the file exists."""

    scene: str
    name: str
    channel: int
    frame_start: int


@dataclass
class RunningJob:
    client: Client
    source: ArrayClip
    matte: ArrayClip
    params: Params
    output: Path
    placement: Placement
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: Any = None
    error: str | None = None
    cancelled: bool = False
    done: bool = False
    started: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        threading.Thread(target=self._run, name="kvlock-render", daemon=True).start()

    def _on_progress(self, update: Any) -> None:
        with self.lock:
            self.progress = update

    def _run(self) -> None:
        try:
            render(self.client, self.source, self.matte, self.params, self.output, self._on_progress, self.cancel)
        except JobFailedError as exc:
            with self.lock:
                self.cancelled = exc.state == "cancelled"
                self.error = "cancelled" if self.cancelled else f"the job failed: {exc.reason}"
        except (BridgeError, OSError, ValueError) as exc:
            with self.lock:
                self.error = str(exc)
        except Exception as exc:  # a worker must always report, or the panel would wait forever
            with self.lock:
                self.error = f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            self.client.close()
            with self.lock:
                self.done = True


ACTIVE: RunningJob | None = None


def describe(update: Any) -> str:
    """One line for the panel: step, σ² (the metric h) and ETA."""
    if update is None:
        return "uploading…"
    if update.state == "queued":
        return f"queued ({update.queue_position} ahead)" if update.queue_position else "queued"
    if not update.total_steps:
        return update.state
    eta = f", ETA {update.eta_seconds:.0f} s" if update.eta_seconds else ""
    return f"step {update.step + 1}/{update.total_steps}, σ² {update.h:.4g}{eta}"


def poll() -> float | None:
    """The timer: mirror the job into the UI; at the end, place the result. Returns the next interval."""
    global ACTIVE
    job = ACTIVE
    if job is None:
        return None
    scene = bpy.data.scenes.get(job.placement.scene)
    with job.lock:
        update, done, error, cancelled = job.progress, job.done, job.error, job.cancelled
    wm = bpy.context.window_manager
    if scene is not None:
        props = scene.kvlock
        props.step_text = describe(update)
        if update is not None and update.total_steps:
            props.progress = min(1.0, (update.step + 1) / update.total_steps)
            wm.progress_update(int(100 * props.progress))
    if not done:
        return POLL_SECONDS
    ACTIVE = None
    wm.progress_end()
    if scene is None:
        return None
    props = scene.kvlock
    props.running = False
    if error is not None:
        props.status = "Cancelled" if cancelled else f"Error: {error}"
        return None
    placed = bpy.ops.sequencer.kvlock_place_result(
        scene=job.placement.scene,
        filepath=str(job.output),
        name=job.placement.name,
        channel=job.placement.channel,
        frame_start=job.placement.frame_start,
    )
    if "FINISHED" in placed:
        props.status = f"Done: {job.output.name} on channel {job.placement.channel}"
    return None


def start(job: RunningJob) -> None:
    global ACTIVE
    ACTIVE = job
    job.start()
    bpy.context.window_manager.progress_begin(0, 100)
    bpy.app.timers.register(poll, first_interval=POLL_SECONDS)
