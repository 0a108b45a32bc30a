"""What the buttons do, for both windows (the Studio dialog and the page): check the server, prepare a
render, run it off the UI thread, and place the result when the UI's loop sees it finish.

Thread rule: only the UI's own loop (the dialog's timer, the page's request loop) calls Resolve; the render
thread gets a plain snapshot (paths, frame ranges, settings) and never touches a Resolve object. Every
exception a Resolve call raises comes back as a message: Resolve answers unknown calls with ``None``, so
an API change shows up as a ``TypeError`` that the editor must hear about, not a dialog that dies.

Source media goes to the server by path when the server can read it (same disk, inside its media roots);
if the server refuses the path, the frames are decoded here and uploaded instead — except an EXR plate,
which goes by path only and comes back as EXR with the source clip's colour properties (``colour``).
Each file keeps its own range: a matte clip above the shot sends its own first frame, a clip matte or
matte file follows the source's frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlock_bridge import AuthenticationError, BridgeError, Client, FileClip, Params, ServerUnavailableError
from kvlock_bridge.background import BackgroundRender, progress_line, unused_output
from kvlock_bridge.client import read_token
from kvlock_bridge.render import SUFFIXES

from . import colour, host, marker_batch
from .colour import ColourPlan
from .form import Form
from .guard import FINAL, explain, guarded, stem, upload_for

__all__ = ["FINAL", "Controller", "Job", "explain", "guarded"]


@dataclass
class Job:
    render: BackgroundRender
    shot: host.Shot
    colour: ColourPlan

    def describe(self) -> str:
        shot = self.shot
        last = shot.record_start + shot.frames - 1
        line = (
            f"Rendering {shot.name}, {shot.timecode(shot.record_start)}–{shot.timecode(last)} "
            f"({shot.frames} frames from V{shot.track}, media frames {shot.source_start}–{shot.source_end - 1})"
        )
        return line + "".join(f"; {note}" for note in shot.notes)


class Controller:
    """One window's logic. ``connect`` makes a client from the address and token the window holds."""

    def __init__(self, resolve: Any, address: str, token: str = "", token_file: str = "") -> None:
        self.resolve = resolve
        self.address, self.token, self.token_file = address, token, token_file
        self.product = guarded("reading the product", lambda: host.product(resolve))
        self.models: list[str] = []
        self.loras: list[str] = []  # the LoRAs the server offers, shown after a check
        self.job: Job | None = None
        self.batch: marker_batch.MarkerBatch | None = None  # "Render all KV-Lock markers" (marker_batch)

    def connect(self) -> tuple[Client, list[str]]:
        client = Client(self.address, read_token(self.token or None, self.token_file or None), timeout=10.0)
        try:
            models = [m.name for m in client.list_models() if m.loadable]
        except ServerUnavailableError:
            client.close()
            raise host.HostError(
                f"KV-Lock server is not running at {self.address}: start it with `kvlock serve`"
            ) from None
        except AuthenticationError as exc:
            client.close()
            raise host.HostError(f"the server refused the token ({exc})") from None
        except BridgeError as exc:
            client.close()
            raise host.HostError(str(exc)) from None
        self.models = models
        try:
            self.loras = [lora.name for lora in client.list_loras() if lora.loadable]
        except BridgeError:  # an older server without ListLoras: no LoRAs offered
            self.loras = []
        return client, models

    def server_status(self) -> str:
        try:
            client, models = self.connect()
        except host.HostError as exc:
            return str(exc)
        client.close()
        loras = f"; LoRAs: {', '.join(self.loras)}" if self.loras else ""
        return f"connected to {self.address}: {', '.join(models) or 'no models'}{loras}"

    def _matte(self, form: Form, project: Any, timeline: Any, shot: host.Shot) -> FileClip:
        if form.matte == "above":
            path, first, end = host.matte_above(timeline, shot)
            return FileClip("matte", path, first, end)
        if form.matte == "clip":
            return FileClip("matte", host.clip_matte(project, timeline, shot))
        if not form.matte_file or not Path(form.matte_file).expanduser().is_file():
            raise host.HostError(f"matte file {form.matte_file or '(none)'} does not exist")
        return FileClip("matte", str(Path(form.matte_file).expanduser()))

    def render_parts(self, form: Form, project: Any, timeline: Any, shot: host.Shot) -> tuple[FileClip, ColourPlan]:
        """The shot's matte (by the form's choice) and how its result keeps the source's colour."""
        clip_colour = colour.read_clip_colour(project, host.shot_media(timeline, shot))
        return self._matte(form, project, timeline, shot), colour.plan_colour(shot.path, clip_colour)

    def output_folder(self, form: Form, shot: host.Shot) -> Path:
        folder = Path(form.output_dir or Path(shot.path).parent / "KV-Lock").expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise host.HostError(f"cannot create the output folder {folder} ({exc.strerror})") from None
        return folder

    @property
    def running(self) -> bool:
        return self.job is not None or self.batch is not None

    def check_idle(self) -> None:
        if self.running:
            raise host.HostError("a render is already running: wait for it or cancel it")

    def prepare(self, form: Form) -> Job:
        """Validate everything and build the job; nothing is sent yet."""
        self.check_idle()
        if form.task == "edit" and not form.prompt.strip():
            raise host.HostError("write a prompt: what should the masked subject become? (or choose the Erase task)")

        def read() -> tuple[host.Shot, FileClip, ColourPlan]:
            project, timeline = host.current_timeline(self.resolve)
            shot = host.shot_to_edit(timeline)
            return shot, *self.render_parts(form, project, timeline, shot)

        shot, matte, plan = guarded("reading the timeline", read)
        folder = self.output_folder(form, shot)
        client, models = self.connect()
        model = form.model or (models[0] if models else "tiny")
        params = Params(prompt=form.prompt, model=model, settings=form.settings(), rate=shot.rate, codec=plan.codec)
        output = unused_output(folder, stem(shot.path), SUFFIXES[plan.codec], params)
        source = FileClip(shot.name, shot.path, shot.source_start, shot.source_end)
        fallback = upload_for(shot, plan, source, matte)
        return Job(BackgroundRender(client, source, matte, params, output, fallback=fallback), shot, plan)

    def start(self, job: Job) -> None:
        self.job = job
        job.render.start()

    def prepare_markers(self, form: Form) -> marker_batch.MarkerBatch:
        """Every KV-Lock timeline marker as a job of one batch; nothing is sent yet."""
        return marker_batch.prepare_markers(self, form)

    def start_markers(self, batch: marker_batch.MarkerBatch) -> None:
        self.batch = batch
        batch.runner.start()

    def cancel(self) -> bool:
        if self.batch is not None:
            self.batch.runner.cancel.set()
            return True
        if self.job is None:
            return False
        self.job.render.cancel.set()
        return True

    def poll(self, report: Callable[[str, float], None]) -> bool:
        """Called by the window's loop: report progress; on the end, place the result. True while running."""
        if self.batch is not None:
            return marker_batch.poll_markers(self, self.batch, report)
        job = self.job
        if job is None:
            return False
        state = job.render.snapshot()
        update = state.progress
        if update is not None and update.denoising is not None:
            report(progress_line(update), update.denoising.fraction)
        if not state.done:
            return True
        self.job = None
        if state.error is not None and state.result is None:
            report("Cancelled" if state.cancelled else f"Error: {state.error}", 0.0)
            return False
        outputs = [take.output for take in state.result.takes] if state.result else [job.render.output]

        def place() -> host.Placement:
            project, timeline = host.current_timeline(self.resolve)
            tag = lambda clip: colour.tag_result(clip, job.colour)  # noqa: E731
            return host.place_takes(project, timeline, job.shot, outputs, tag)

        try:
            placed = guarded("placing the result", place)
        except host.HostError as exc:
            report(f"Error: {exc} (the result is at {', '.join(map(str, outputs))})", 1.0)
            return False
        notes = "".join(f"; {note}" for note in job.shot.notes)  # a fallback stays visible after the end
        if state.cancelled:  # cancelled after some takes were finished: those are placed
            report(f"Cancelled: {state.error}; {placed.message}{notes}", 1.0)
            return False
        report(("Done: " if placed.confirmed else "Warning: ") + placed.message + notes, 1.0)
        return False
