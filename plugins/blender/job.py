"""One render at a time, off the main thread; a ``bpy.app.timers`` callback is the only code touching bpy.

The bridge's :class:`BackgroundRender` runs the job (upload, follow, fetch, atomic write); ``poll`` —
registered as a timer — copies its snapshot into the panel and the window manager's progress, and when the
job ends places the result through an undoable operator.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy

from kvlock_bridge.background import BackgroundRender, progress_line

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
    render: BackgroundRender
    placement: Placement


ACTIVE: RunningJob | None = None


def poll() -> float | None:
    """The timer: mirror the job into the UI; at the end, place the result. Returns the next interval."""
    global ACTIVE
    job = ACTIVE
    if job is None:
        return None
    scene = bpy.data.scenes.get(job.placement.scene)
    state = job.render.snapshot()
    wm = bpy.context.window_manager
    if scene is not None:
        props = scene.kvlock
        props.step_text = progress_line(state.progress)
        if state.progress is not None and state.progress.total_steps:
            props.progress = min(1.0, (state.progress.step + 1) / state.progress.total_steps)
            wm.progress_update(int(100 * props.progress))
    if not state.done:
        return POLL_SECONDS
    ACTIVE = None
    wm.progress_end()
    if scene is None:
        return None
    props = scene.kvlock
    props.running = False
    if state.error is not None:
        props.status = "Cancelled" if state.cancelled else f"Error: {state.error}"
        return None
    output = job.render.output
    placed = bpy.ops.sequencer.kvlock_place_result(
        scene=job.placement.scene,
        filepath=str(output),
        name=job.placement.name,
        channel=job.placement.channel,
        frame_start=job.placement.frame_start,
    )
    if "FINISHED" in placed:
        props.status = f"Done: {output.name} on channel {job.placement.channel}"
    return None


def start(job: RunningJob) -> None:
    global ACTIVE
    ACTIVE = job
    job.render.start()
    bpy.context.window_manager.progress_begin(0, 100)
    bpy.app.timers.register(poll, first_interval=POLL_SECONDS)
