"""One render from the click to the placed strip, without freezing the interface.

Thread rules: only the main thread touches bpy, and only from ``poll`` (a ``bpy.app.timers`` callback) or
an operator. The job's worker thread gets a plain :class:`Plan` resolved when the job was queued; it probes
and decodes the media, maps the matte into the plate's pixels and starts the bridge's
:class:`BackgroundRender` (upload or by path, follow, fetch, atomic write). When a strip has no media the
worker asks the main thread for sequencer renders; ``poll`` does them one frame per tick, showing progress,
so the interface keeps drawing between frames. When the render ends ``poll`` places the result through an
undoable operator.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import bpy

from kvlock_bridge import Client, FileClip, Params
from kvlock_bridge.background import BackgroundRender, progress_line
from kvlock_bridge.render import takes_of

from .colour import ColourPlan
from .media import (
    MappedClip,
    MediaProblem,
    MediaStrip,
    Plate,
    RenderedFrames,
    media_matte,
    rendered_matte,
    rendered_plate,
)
from .media import resolve_plate as media_plate
from .sequencer_render import render_mask_frame, render_strip_frame

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Rendered:
    """A strip with no media of its own (scene, effect, text, colour, mask, meta): the sequencer renders it.
    ``origin`` is its content start, the frame a mask data-block's ``frame_start`` lines up with."""

    name: str
    origin: int


@dataclass(frozen=True)
class MaskBlock:
    """A mask data-block, rasterised by Blender at the plate's size in the plate's pixels."""

    name: str


@dataclass(frozen=True)
class Plan:
    """Everything the worker needs, read from bpy on the main thread when the job is queued."""

    scene: str
    start: int  # timeline frames [start, end)
    end: int
    canvas: tuple[int, int]
    scene_rate: Fraction
    source: MediaStrip | Rendered
    matte: MediaStrip | Rendered | MaskBlock
    colour: ColourPlan  # the source's colour space, and what the result is written as and tagged


@dataclass(frozen=True)
class Placement:
    """Where the result strip goes once the file exists (the channel is chosen again then)."""

    scene: str
    name: str
    source: str
    source_channel: int
    start: int
    end: int
    mode: str
    picked: int
    copy_look: bool
    colour_space: str  # the result strip's colorspace_settings.name
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FrameTask:
    """One frame the main thread renders for the worker."""

    kind: str  # "strip" (through the scene's sequencer) or "mask" (a mask data-block at the plate's size)
    name: str
    frame: int
    path: str
    size: tuple[int, int] = (0, 0)

    def run(self, scene_name: str) -> None:
        if self.kind == "mask":
            render_mask_frame(self.name, self.size, self.frame, self.path)
            return
        scene = bpy.data.scenes.get(scene_name)
        if scene is None or scene.sequence_editor is None:
            raise LookupError(f"the scene {scene_name} was removed while KV-Lock was rendering it")
        render_strip_frame(scene, self.name, self.frame, self.path)


class Cancelled(Exception):
    pass


@dataclass
class Job:
    client: Client
    plan: Plan
    params: Params
    output: Path
    placement: Placement
    cancel: threading.Event = field(default_factory=threading.Event)
    render: BackgroundRender | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stage: str = "reading the media…"
    _error: str | None = None
    _cancelled: bool = False
    _prepared: bool = False
    _tasks: list[FrameTask] = field(default_factory=list)
    _next: int = 0
    _task_error: str | None = None
    _tasks_done: threading.Event = field(default_factory=threading.Event)
    _clips: tuple[MappedClip, ...] = ()
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kvlock-job-")))

    # -- worker thread -------------------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._work, name="kvlock-prepare", daemon=True).start()

    def _set_stage(self, text: str) -> None:
        with self._lock:
            self._stage = text

    def _work(self) -> None:
        plan = self.plan
        try:
            plate = self._plate()
            matte, matte_by_path = self._matte(plate)
            if self.cancel.is_set():
                raise Cancelled
            params = dataclasses.replace(self.params, rate=plate.rate, timecode=plate.timecode)
            self._clips = (plate.upload, matte)
            by_path = plate.clip is not None or matte_by_path is not None
            linear = plan.colour.codec == "exr"  # an EXR plate: by path only, written back as EXR
            if linear and plate.clip is None:
                raise MediaProblem(
                    f"{plan.source.name} shows its EXR files out of order or with held frames: a scene-linear "
                    "plate is read by the server itself, one run of its numbered files; trim the strip to its "
                    "own frames (no holds before or after)"
                )
            render = BackgroundRender(
                self.client,
                plate.clip or plate.upload,
                matte_by_path or matte,
                params,
                self.output,
                fallback=self._exr_refused if linear else self._upload if by_path else None,
                cancel=self.cancel,
            )
            with self._lock:
                self.render = render
            render.start()
        except Cancelled:
            self._fail("cancelled", cancelled=True)
        except (MediaProblem, LookupError, OSError, ValueError) as exc:
            self._fail(str(exc))
        except Exception as exc:  # the timer must always hear back, or the panel would wait forever
            self._fail(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._prepared = True

    def _exr_refused(self) -> tuple[MappedClip, MappedClip]:
        """The server cannot read the EXR plate: an upload would lose its linear values, so say what to do."""
        folder = Path(self.plan.source.files[0]).parent
        raise ValueError(
            f"the server cannot read the EXR plate {self.plan.source.name} in {folder}: a scene-linear plate is "
            "read by the server itself (an upload carries 8/16-bit display-referred pixels only); run "
            f"`kvlock serve --media-root {folder}` on a computer that sees that folder"
        )

    def _upload(self) -> tuple[MappedClip, MappedClip]:
        """The server cannot read the media: send the frames instead, through new decoders."""
        self._clips = tuple(clip.fresh() for clip in self._clips)
        return self._clips

    def _fail(self, message: str, cancelled: bool = False) -> None:
        self.client.close()
        with self._lock:
            self._error, self._cancelled = message, cancelled

    def _plate(self) -> Plate:
        plan = self.plan
        if isinstance(plan.source, MediaStrip):
            self._set_stage(f"reading {plan.source.name}…")
            return media_plate(plan.source, plan.start, plan.end, plan.scene_rate)
        tasks = [
            FrameTask("strip", plan.source.name, t, str(self.folder / f"source_{t - plan.start:06d}.png"))
            for t in range(plan.start, plan.end)
        ]
        files = self._on_main_thread(tasks)
        return rendered_plate(RenderedFrames(plan.source.name, files, True), plan.canvas, plan.scene_rate)

    def _matte(self, plate: Plate) -> tuple[MappedClip, FileClip | None]:
        plan = self.plan
        matte = plan.matte
        if isinstance(matte, MediaStrip):
            self._set_stage(f"reading {matte.name}…")
            return media_matte(matte, plate, plan.canvas, plan.start, plan.end, plan.scene_rate)
        if isinstance(matte, MaskBlock):
            size = (plate.geometry.width, plate.geometry.height)
            if isinstance(plan.source, Rendered):  # no media: its media frames count from its content start
                frames = [max(0, t - plan.source.origin) for t in range(plan.start, plan.end)]
            else:
                frames = plate.indices
            tasks = [
                FrameTask("mask", matte.name, k, str(self.folder / f"matte_{i:06d}.png"), size)
                for i, k in enumerate(frames)
            ]
            rendered = RenderedFrames(matte.name, self._on_main_thread(tasks), canvas_space=False)
        else:
            tasks = [
                FrameTask("strip", matte.name, t, str(self.folder / f"matte_{t - plan.start:06d}.png"))
                for t in range(plan.start, plan.end)
            ]
            rendered = RenderedFrames(matte.name, self._on_main_thread(tasks), canvas_space=True)
        return rendered_matte(rendered, plate, plan.canvas, plan.scene_rate), None

    def _on_main_thread(self, tasks: list[FrameTask]) -> tuple[str, ...]:
        """Have ``poll`` render these frames (one per tick); wait for them, or for a cancel."""
        with self._lock:
            self._tasks, self._next, self._task_error = tasks, 0, None
            self._tasks_done.clear()
        while not self._tasks_done.wait(0.05):
            if self.cancel.is_set():
                raise Cancelled
        with self._lock:
            if self._task_error is not None:
                raise MediaProblem(self._task_error)
        if self.cancel.is_set():
            raise Cancelled
        return tuple(task.path for task in tasks)

    # -- main thread ---------------------------------------------------------------------------------------

    def _render_one(self) -> tuple[str, int, int] | None:
        """Render the next frame the worker asked for, if any; (name, done, total) for the progress line."""
        with self._lock:
            if self._next >= len(self._tasks) or self._tasks_done.is_set():
                return None
            task, done, total = self._tasks[self._next], self._next, len(self._tasks)
        if self.cancel.is_set():
            self._tasks_done.set()
            return None
        try:
            task.run(self.plan.scene)
        except Exception as exc:  # shown in the panel; the scene's settings were restored by the renderer
            with self._lock:
                self._task_error = f"rendering {task.name} at frame {task.frame} failed: {exc}"
            self._tasks_done.set()
            return None
        with self._lock:
            self._next += 1
            if self._next == len(self._tasks):
                self._tasks_done.set()
        return task.name, done + 1, total

    def tick(self) -> float | None:
        """The timer's body: render a requested frame, or mirror the job into the UI; at the end, place."""
        scene = bpy.data.scenes.get(self.plan.scene)
        props = scene.kvlock if scene is not None else None
        wm = bpy.context.window_manager
        rendered = self._render_one()
        if rendered is not None:
            name, done, total = rendered
            if props is not None:
                props.step_text = f"rendering {name} through the sequencer: frame {done}/{total}"
                props.progress = done / total
            wm.progress_update(int(100 * done / total))
            return 0.0  # next frame on the next turn of the event loop: the UI redraws in between
        with self._lock:
            render, stage, prepared, error, cancelled = (
                self.render,
                self._stage,
                self._prepared,
                self._error,
                self._cancelled,
            )
        if render is None:
            if not prepared:
                if props is not None:
                    props.step_text = stage
                return POLL_SECONDS
            return self._finish(props, error or "nothing was rendered", cancelled)
        state = render.snapshot()
        if props is not None:
            props.step_text = progress_line(state.progress)
            step = state.progress.denoising if state.progress is not None else None
            if step is not None:
                props.progress = step.fraction
                wm.progress_update(int(100 * props.progress))
        if not state.done:
            return POLL_SECONDS
        if state.error is not None and state.result is None:
            broken = next((clip.error for clip in self._clips if clip.error is not None), None)
            error = f"reading the media failed: {broken}" if broken is not None else state.error
            return self._finish(props, "cancelled" if state.cancelled else error, state.cancelled)
        # done, or cancelled after some takes were finished: those are placed
        takes = [str(take.output) for take in state.result.takes] if state.result else [str(self.output)]
        return self._finish(props, None, False, takes, state.error if state.cancelled else "")

    def _finish(
        self, props, error: str | None, cancelled: bool, takes: list[str] | None = None, outcome: str = ""
    ) -> None:
        bpy.context.window_manager.progress_end()
        shutil.rmtree(self.folder, ignore_errors=True)
        if props is None:
            return None
        props.running = False
        if error is not None:
            props.status = "Cancelled" if cancelled else f"Error: {error}"
            return None
        p = self.placement
        takes = takes or [str(self.output)]
        bpy.ops.sequencer.kvlock_place_result(  # sets the panel's status: where the strips went, or why not
            scene=p.scene,
            filepath=takes[0],
            name=p.name,
            source=p.source,
            source_channel=p.source_channel,
            frame_start=p.start,
            frame_end=p.end,
            placement=p.mode,
            channel=p.picked,
            copy_look=p.copy_look,
            colour_space=p.colour_space,
            notes="; ".join(p.notes),
            takes=json.dumps(takes[1:]) if len(takes) > 1 else "",
            take_count=takes_of(self.params),
            outcome=outcome,
        )
        return None


ACTIVE: Job | None = None


def poll() -> float | None:
    """The registered timer. Returns the next interval, or None once the job is over."""
    global ACTIVE
    job = ACTIVE
    if job is None:
        return None
    interval = job.tick()
    if interval is None:
        ACTIVE = None
    return interval


def start(job: Job) -> None:
    global ACTIVE
    ACTIVE = job
    job.start()
    bpy.context.window_manager.progress_begin(0, 100)
    bpy.app.timers.register(poll, first_interval=0.0)


def stop() -> None:
    """Unregistering the add-on: cancel the job and forget it."""
    global ACTIVE
    if ACTIVE is not None:
        ACTIVE.cancel.set()
        shutil.rmtree(ACTIVE.folder, ignore_errors=True)
    ACTIVE = None
    if bpy.app.timers.is_registered(poll):
        bpy.app.timers.unregister(poll)
