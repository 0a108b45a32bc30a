"""What the dialog's buttons do, without the dialog: check the server, prepare a render, run it off the UI
thread, and place the result when the UI's timer sees it finish.

Source media goes to the server by path when the server can read it (same disk, inside its media roots);
if the server refuses the path, the frames are decoded here and uploaded instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlock_bridge import ArrayClip, AuthenticationError, BridgeError, Client, FileClip, Params, ServerUnavailableError
from kvlock_bridge.background import BackgroundRender, progress_line, unused_output
from kvlock_bridge.client import read_token

from . import host


@dataclass
class Form:
    """The dialog's fields."""

    prompt: str = ""
    negative_prompt: str = ""
    source_prompt: str = ""
    strength: float = 1.0
    steps: int = 0
    seed: int = 0
    guidance: float = 0.0
    kappa: int = 20
    tau: float = 0.01
    b: float = 2.0
    alpha_early: float = 1.0
    matte: str = "above"  # "above" | "clip" | "file"
    matte_file: str = ""
    output_dir: str = ""
    model: str = "tiny"

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "negative_prompt": self.negative_prompt,
            "source_prompt": self.source_prompt,
            "strength": self.strength,
            "seed": self.seed,
            "kappa": self.kappa,
            "tau": self.tau,
            "b": self.b,
            "alpha_early": self.alpha_early,
        }
        if self.steps > 0:
            out["steps"] = self.steps
        if self.guidance > 0:
            out["guidance"] = self.guidance
        return out


@dataclass
class Job:
    render: BackgroundRender
    shot: host.Shot


def _decode(clip: FileClip, gray: bool = False) -> ArrayClip:
    """Read [start, end) of a media file here, for servers that cannot read it themselves."""
    from kvlock.media.decode import probe, read_frames

    frames = read_frames(probe(clip.path), clip.start, clip.end)
    return ArrayClip(clip.name, frames[..., :3].max(axis=-1) if gray else frames[..., :3])


class Controller:
    """One dialog's logic. ``connect`` makes a client from the address and token the dialog holds."""

    def __init__(self, resolve: Any, address: str, token: str = "", token_file: str = "") -> None:
        self.resolve = resolve
        self.address, self.token, self.token_file = address, token, token_file
        self.product, self.studio = host.product(resolve)
        self.job: Job | None = None

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
        return client, models

    def server_status(self) -> str:
        try:
            client, models = self.connect()
        except host.HostError as exc:
            return str(exc)
        client.close()
        return f"connected to {self.address}: {', '.join(models) or 'no models'}"

    def prepare(self, form: Form) -> Job:
        """Validate everything and build the job; nothing is sent yet."""
        if self.job is not None:
            raise host.HostError("a render is already running: wait for it or cancel it")
        if not form.prompt.strip():
            raise host.HostError("write a prompt: what should the masked subject become?")
        project, timeline = host.current_timeline(self.resolve)
        shot = host.shot_to_edit(timeline, matte_above=form.matte == "above")
        if form.matte == "above":
            path, first, end = host.matte_above(timeline, shot)
            matte = FileClip("matte", path, first, end)
        elif form.matte == "clip":
            matte = FileClip("matte", host.clip_matte(project, timeline, shot), shot.source_start, shot.source_end)
        else:
            if not form.matte_file or not Path(form.matte_file).exists():
                raise host.HostError(f"matte file {form.matte_file or '(none)'} does not exist")
            matte = FileClip("matte", form.matte_file, shot.source_start, shot.source_end)
        folder = Path(form.output_dir or Path(shot.path).parent / "KV-Lock").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        output = unused_output(folder, Path(shot.path).stem, ".mkv")
        client, _ = self.connect()
        params = Params(prompt=form.prompt, model=form.model, settings=form.settings(), rate=shot.rate)
        source = FileClip(shot.name, shot.path, shot.source_start, shot.source_end)

        def upload() -> tuple[ArrayClip, ArrayClip]:  # when the server cannot read this disk
            return _decode(source), _decode(matte, gray=True)

        return Job(BackgroundRender(client, source, matte, params, output, fallback=upload), shot)

    def start(self, job: Job) -> None:
        self.job = job
        job.render.start()

    def poll(self, report: Callable[[str, float], None]) -> bool:
        """Called by the dialog's timer: report progress; on the end, place the result. True while running."""
        job = self.job
        if job is None:
            return False
        state = job.render.snapshot()
        update = state.progress
        if update is not None and update.total_steps:
            report(progress_line(update), (update.step + 1) / update.total_steps)
        if not state.done:
            return True
        self.job = None
        if state.error is not None:
            report("Cancelled" if state.cancelled else f"Error: {state.error}", 0.0)
            return False
        try:
            project, timeline = host.current_timeline(self.resolve)
            placed = host.place_result(project, timeline, job.shot, job.render.output)
        except host.HostError as exc:
            report(f"Error: {exc} (the result is at {job.render.output})", 1.0)
            return False
        report(("Done: " if placed.confirmed else "Warning: ") + placed.message, 1.0)
        return False
