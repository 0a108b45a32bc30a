""" "Render all KV-Lock markers": every timeline marker named ``KV-Lock`` (``host_markers``) becomes a job; all
are queued on the server at once (``kvlock_bridge.batch``), followed one by one off the UI thread, and each
result is placed as a single edit's is (``host.place_result``) as soon as the UI's loop sees it finish.

Each marker's job id is derived from what makes its result (media, frames, matte, prompt, model and
settings), and the result's job and file are written into the marker's customData; so running it again
skips the markers already rendered and placed, adopts the jobs the server still holds (Resolve closed
mid-batch), and sends only the rest. A marker that cannot be rendered is listed with its reason; the others
go on. Cancel cancels every job of the batch the server has not finished.

Thread rule, as for a single edit: only the UI's loop calls Resolve (reading the markers, placing results,
writing customData); the queue's thread gets plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvlock_bridge import FileClip, Params
from kvlock_bridge.background import progress_line
from kvlock_bridge.batch import (
    Advanced,
    BackgroundQueue,
    Failed,
    Finished,
    QueuedRender,
    derived_job_id,
    file_identity,
)
from kvlock_bridge.render import SUFFIXES, outputs

from . import colour, host, host_markers
from .colour import ColourPlan
from .form import Form
from .guard import guarded, stem, upload_for
from .host_markers import MarkedShot

if TYPE_CHECKING:
    from collections.abc import Callable

    from .controller import Controller


@dataclass(frozen=True)
class MarkerJob:
    marked: MarkedShot
    colour: ColourPlan

    def label(self) -> str:
        shot = self.marked.shot
        return f"{shot.name} at {shot.timecode(shot.record_start)}"


@dataclass
class MarkerBatch:
    jobs: list[MarkerJob]
    runner: BackgroundQueue
    skipped: list[str] = field(default_factory=list)  # rendered and placed by an earlier run
    problems: list[str] = field(default_factory=list)  # markers that cannot be rendered, with why
    notes: list[str] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)
    misplaced: int = 0  # results Resolve would not place where they belong (they wait in the KV-Lock bin)
    failed: list[str] = field(default_factory=list)
    finished: int = 0
    cancelled: bool = False

    def describe(self) -> str:
        lines = [f"Rendering {len(self.jobs)} KV-Lock marker(s): " + ", ".join(j.label() for j in self.jobs)]
        lines += [f"already rendered: {line}" for line in self.skipped]
        lines += [f"cannot render {line}" for line in self.problems] + self.notes
        return "; ".join(lines)


def _recipe(marked: MarkedShot, matte: FileClip, params: Params) -> dict[str, Any]:
    shot = marked.shot
    return {
        "source": [shot.path, shot.source_start, shot.source_end, file_identity(shot.path)],
        "matte": [matte.path, matte.start, matte.end, file_identity(matte.path)],
        "prompt": marked.prompt,
        "model": params.model,
        "settings": params.settings,
        "codec": params.codec,
    }


def _read(controller: Controller, form: Form) -> tuple[list[tuple[MarkedShot, FileClip, ColourPlan]], Any]:
    project, timeline = host.current_timeline(controller.resolve)
    markers = host_markers.kvlock_markers(timeline, form.prompt.strip())
    if not markers.shots and not markers.problems:
        raise host.HostError("this timeline has no marker named KV-Lock: put one over each shot to edit (its note "
                             "is the prompt; a one-frame marker stands for the whole clip under it)")  # fmt: skip
    parts = []
    for marked in markers.shots:
        try:
            parts.append((marked, *controller.render_parts(form, project, timeline, marked.shot)))
        except host.HostError as exc:
            markers.problems.append(f"{marked.shot.name} at {marked.shot.timecode(marked.shot.record_start)}: {exc}")
    return parts, markers


def _all_there(custom: dict[str, Any]) -> bool:
    """Every file an earlier run recorded for the marker is still there (one take's, or each take's)."""
    files = custom.get("takes") or [custom.get("result")]
    return isinstance(files, list) and all(isinstance(f, str) and Path(f).exists() for f in files)


def prepare_markers(controller: Controller, form: Form) -> MarkerBatch:
    """Read every KV-Lock marker and build the batch; nothing is sent yet."""
    controller.check_idle()
    parts, markers = guarded("reading the timeline's markers", lambda: _read(controller, form))
    renders, jobs, skipped = [], [], []
    client, models = controller.connect()
    model = form.model or (models[0] if models else "tiny")
    for marked, matte, plan in parts:
        shot = marked.shot
        params = Params(prompt=marked.prompt, model=model, settings=form.settings(), rate=shot.rate, codec=plan.codec)
        job_id = derived_job_id(stem(shot.path), _recipe(marked, matte, params))
        if marked.custom.get("job") == job_id and _all_there(marked.custom):
            skipped.append(f"{shot.name} at {shot.timecode(shot.record_start)} ({marked.custom['result']})")
            continue
        source = FileClip(shot.name, shot.path, shot.source_start, shot.source_end)
        files = outputs(controller.output_folder(form, shot) / f"{job_id}{SUFFIXES[plan.codec]}", plan.codec, False)
        renders.append(QueuedRender(source, matte, params, files, job_id, upload_for(shot, plan, source, matte)))
        jobs.append(MarkerJob(marked, plan))
    if not renders:
        client.close()
        done = f"; already rendered: {', '.join(skipped)}" if skipped else ""
        raise host.HostError("no KV-Lock marker left to render" + done + "".join(f"; cannot render {p}" for p in
                             markers.problems))  # fmt: skip
    return MarkerBatch(jobs, BackgroundQueue(client, renders), skipped, markers.problems, markers.notes)


def _place(controller: Controller, job: MarkerJob, job_id: str, takes: list[Path]) -> tuple[str, bool]:
    """Place one result on the UI's loop — several takes as a single edit's are, the first shown and the
    others in its Take Selector — and note it in the marker's customData: the status line, and whether it
    landed where it belongs."""

    def place() -> host.Placement:
        project, timeline = host.current_timeline(controller.resolve)
        placed = host.place_takes(project, timeline, job.marked.shot, takes, lambda c: colour.tag_result(c, job.colour))
        if placed.confirmed:
            host_markers.record_result(timeline, job.marked, job_id, [str(take) for take in takes])
        return placed

    try:
        placed = guarded("placing a marker's result", place)
    except host.HostError as exc:
        return f"{job.label()}: {exc} (the result is at {', '.join(map(str, takes))})", False
    return f"{job.label()}: {placed.message}", placed.confirmed


def poll_markers(controller: Controller, batch: MarkerBatch, report: Callable[[str, float], None]) -> bool:
    """The batch's news since the last tick: progress, results placed, failures; True while it runs."""
    events, done, error = batch.runner.take()
    count = len(batch.jobs)
    for event in events:
        job = batch.jobs[event.index]
        if isinstance(event, Advanced) and event.progress.denoising is not None:
            step = event.progress.denoising
            fraction = (batch.finished + (step.step + 1) / step.total) / count
            report(f"marker {event.index + 1}/{count} ({job.label()}): {progress_line(event.progress)}", fraction)
        elif isinstance(event, Finished):
            batch.finished += 1
            takes = [take.output for take in event.result.takes] or [event.result.output]
            line, landed = _place(controller, job, event.result.job_id, takes)
            batch.placed.append(line)
            batch.misplaced += not landed
        elif isinstance(event, Failed):
            batch.finished += 1
            batch.cancelled = batch.cancelled or event.cancelled
            batch.failed.append(f"{job.label()}: {'cancelled' if event.cancelled else event.reason}")
    if not done:
        return True
    controller.batch = None
    report(_summary(batch, error), 1.0)
    return False


def _summary(batch: MarkerBatch, error: str | None) -> str:
    if batch.cancelled and not batch.placed:
        return "Cancelled"
    parts = [f"{len(batch.placed)} of {len(batch.jobs)} marker(s) rendered", *batch.placed]
    parts += [f"failed: {line}" for line in batch.failed] + [f"cannot render {p}" for p in batch.problems]
    parts += [f"stopped: {error}"] if error else []
    clean = not (batch.failed or batch.problems or error or batch.misplaced)
    return ("Done: " if clean else "Warning: ") + "; ".join(parts)
