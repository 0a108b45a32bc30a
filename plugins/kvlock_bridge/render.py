"""``render``: the one action every host calls — upload, follow, fetch, and place the result on disk; and its
steps (``outputs``, ``follow``, ``collect``) for callers that queue many jobs before following any.

The output and its companions (``NAME.region.*``, ``NAME.plate.*``, ``NAME.trace.json``, ``NAME.trace.png``) appear
under their final names only when complete; an existing file is never replaced unless asked. A job of
several takes (``EditSettings.takes``) writes ``NAME.take1.mkv`` … ``NAME.takeN.mkv`` beside each other, each
with its companions (``NAME.take1.trace.json`` …); cancelled after some takes were finished, those are
written and returned (``RenderResult.cancelled`` says so). The clean plate is the source's, the same for
every take: one ``NAME.plate.*``, delivered with the first take.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlock.media.atomic import atomic_path, check_writable
from kvlock.settings import EditSettings

from .client import Client, Progress
from .clips import Clip, FileClip, Params
from .errors import BridgeError, JobFailedError, RequestRejectedError

SUFFIXES = {"ffv1": ".mkv", "prores": ".mov", "h264": ".mp4", "png": "", "exr": ""}
REGION_SUFFIXES = {"prores": ".mov", "png": "", "exr": ""}  # else .mkv: as the server writes it


@dataclass(frozen=True)
class TakeOutput:
    """One take's files on disk; ``take`` is 1-based (1 for a job of one take)."""

    take: int
    output: Path
    region: Path | None
    trace: Path
    plot: Path

    def trace_data(self) -> dict[str, Any]:
        return json.loads(self.trace.read_text())

    def paths(self) -> list[Path]:
        return [self.output, *([self.region] if self.region else []), self.trace, self.plot]


@dataclass(frozen=True)
class RenderResult:
    """A finished render: the first take's files (the only take's, usually), every take's in ``takes``, and
    ``cancelled`` — the job's message — when a cancel stopped it after the takes here were finished."""

    job_id: str
    output: Path
    region: Path | None
    trace: Path
    plot: Path
    duplicate: bool
    takes: tuple[TakeOutput, ...] = ()
    cancelled: str = ""
    plate: Path | None = None  # the clean plate (alpha: seen 1, invented 0), when asked for

    def trace_data(self) -> dict[str, Any]:
        return json.loads(self.trace.read_text())


MOVIES = {suffix for suffix in SUFFIXES.values() if suffix}


def _stem(output: Path) -> str:
    """A movie's name without its suffix; a folder's (PNG, EXR) whole name, dots and all (``plate.kvlock``)."""
    return output.name[: -len(output.suffix)] if output.suffix.lower() in MOVIES else output.name


def companions(output: Path) -> dict[str, Path]:
    stem = _stem(output)
    return {"trace": output.with_name(f"{stem}.trace.json"), "plot": output.with_name(f"{stem}.trace.png")}


def take_output(output: Path, take: int, takes: int) -> Path:
    """Where take ``take`` of ``takes`` goes: ``NAME.take2.mkv`` beside ``NAME.mkv``'s place (one take: ``output``)."""
    if takes <= 1:
        return output
    suffix = output.suffix if output.suffix.lower() in MOVIES else ""
    return output.with_name(f"{_stem(output)}.take{take}{suffix}")


def takes_of(params: Params) -> int:
    settings = params.settings
    return settings.takes if isinstance(settings, EditSettings) else int(settings.get("takes") or 1)


def planned(output: Path, params: Params) -> list[TakeOutput]:
    """Every take's files, named before anything is sent."""
    takes = takes_of(params)
    region_suffix = REGION_SUFFIXES.get(params.codec, ".mkv")
    plans = []
    for take in range(1, takes + 1):
        path = take_output(output, take, takes)
        region = path.with_name(f"{_stem(path)}.region{region_suffix}") if params.region else None
        paths = companions(path)
        plans.append(TakeOutput(take, path, region, paths["trace"], paths["plot"]))
    return plans


@dataclass(frozen=True)
class Outputs:
    """Where one render's files go (a job of several takes: its first take's): the result, its region (when
    asked), its trace and the trace's plot."""

    video: Path
    region: Path | None
    trace: Path
    plot: Path

    def paths(self) -> list[Path]:
        return [self.video, *([self.region] if self.region else []), self.trace, self.plot]


def outputs(output: str | Path, codec: str, region: bool) -> Outputs:
    """The files a render of ``codec`` writes at ``output`` (a movie's name, or a folder's for PNG and EXR)."""
    output = Path(output)
    wanted = SUFFIXES[codec]
    if (output.suffix.lower() != wanted) if wanted else (output.suffix.lower() in MOVIES):
        raise ValueError(f"{codec} results are written as {wanted or 'a folder'}, not {output}")
    region_suffix = REGION_SUFFIXES.get(codec, ".mkv")
    region_path = output.with_name(f"{_stem(output)}.region{region_suffix}") if region else None
    paths = companions(output)
    return Outputs(output, region_path, paths["trace"], paths["plot"])


def watch_job(
    client: Client,
    job_id: str,
    progress: Callable[[Progress], None] | None,
    cancel: threading.Event | None,
    previews: bool,
) -> Progress | None:
    """Relay the job's progress until it ends (a set ``cancel`` cancels it); its last update."""
    finished = threading.Event()

    def forward_cancel() -> None:
        while cancel is not None and not finished.is_set():
            if cancel.wait(0.1):
                client.cancel(job_id)
                return

    watcher = threading.Thread(target=forward_cancel, daemon=True)
    watcher.start()
    last = None
    try:
        for update in client.watch(job_id, previews=previews):
            last = update
            if progress is not None:
                progress(update)
    finally:
        finished.set()
        watcher.join()
    return last


def collect_takes(
    client: Client, job_id: str, plans: list[TakeOutput], staging: Path, overwrite: bool, plate: Path | None = None
) -> list[TakeOutput]:
    """Fetch the job's takes into ``staging`` and move each to its names; the takes the job delivered. The
    clean plate (``plate``), the same for every take, comes with the first."""
    fetched = client.fetch_takes(job_id, staging)
    several = len(plans) > 1
    done = [plan for plan in plans if (plan.take if several else 0) in fetched]
    for plan in done:
        files = fetched[plan.take if several else 0]
        moves = [("video", plan.output), ("trace", plan.trace), ("plot", plan.plot)]
        if plan.region is not None:
            moves.append(("region", plan.region))
        if plate is not None and plan.take == 1:
            moves.append(("plate", plate))
        for kind, target in moves:
            with atomic_path(target, overwrite) as temp:
                shutil.move(str(files[kind]), str(temp))
    return done


def follow(
    client: Client,
    job_id: str,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    previews: bool = False,
) -> Progress:
    """Watch a job to its end, forwarding ``cancel`` to the server; its last update, or ``JobFailedError``
    unless it succeeded."""
    last = watch_job(client, job_id, progress, cancel, previews)
    if last is None or last.state != "succeeded":
        state = last.state if last else "lost"
        raise JobFailedError(job_id, state, last.message if last else "no status arrived")
    return last


def collect(
    client: Client, job_id: str, files: Outputs, params: Params, overwrite: bool = False, duplicate: bool = False
) -> RenderResult:
    """Fetch a finished job's files and move each under its final name (none appears half written); a job of
    several takes delivers every take, under ``planned``'s names beside ``files.video``'s place."""
    plans = planned(files.video, params)
    staging = files.video.with_name(f".{files.video.name}.fetch-{uuid.uuid4().hex[:8]}")
    try:
        done = collect_takes(client, job_id, plans, staging, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if len(done) < len(plans):
        missing = ", ".join(str(plan.take) for plan in plans if plan not in done)
        raise BridgeError(f"{job_id} delivered no file for take(s) {missing}; fetch it again")
    first = done[0]
    return RenderResult(job_id, first.output, first.region, first.trace, first.plot, duplicate, tuple(done))


def render(
    client: Client,
    source: Clip | FileClip,
    matte: Clip | FileClip,
    params: Params,
    output: str | Path,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    job_id: str | None = None,
    previews: bool = False,
    overwrite: bool = False,
) -> RenderResult:
    output = Path(output)
    wanted = SUFFIXES[params.codec]
    if (output.suffix.lower() != wanted) if wanted else (output.suffix.lower() in MOVIES):
        raise ValueError(f"{params.codec} results are written as {wanted or 'a folder'}, not {output}")
    plans = planned(output, params)
    plate = (
        output.with_name(f"{_stem(output)}.plate{REGION_SUFFIXES.get(params.codec, '.mkv')}") if params.plate else None
    )
    for plan in plans:
        for target in (plan.output, plan.trace, plan.plot, *([plan.region] if plan.region else [])):
            check_writable(target, overwrite)
    if plate is not None:
        check_writable(plate, overwrite)

    submitted = client.submit(source, matte, params, job_id=job_id)
    last = watch_job(client, submitted.job_id, progress, cancel, previews)
    state, message = (last.state, last.message) if last is not None else ("lost", "no status arrived")
    failed = JobFailedError(submitted.job_id, state, message)
    # a cancelled job of several takes may have finished some: they are fetched like a succeeded job's
    if state != "succeeded" and not (state == "cancelled" and len(plans) > 1):
        raise failed
    staging = output.with_name(f".{output.name}.fetch-{uuid.uuid4().hex[:8]}")
    try:
        done = collect_takes(client, submitted.job_id, plans, staging, overwrite, plate)
    except RequestRejectedError:
        if state == "cancelled":  # it finished no take before the cancel
            raise failed from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not done:
        raise failed
    first = done[0]
    return RenderResult(
        submitted.job_id,
        first.output,
        first.region,
        first.trace,
        first.plot,
        submitted.duplicate,
        tuple(done),
        message if state == "cancelled" else "",
        plate,
    )
