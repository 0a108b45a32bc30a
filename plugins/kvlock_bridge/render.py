"""``render``: the one action every host calls — upload, follow, fetch, and place the result on disk; and its
steps (``outputs``, ``follow``, ``collect``) for callers that queue many jobs before following any.

The output and its companions (``NAME.region.*``, ``NAME.trace.json``, ``NAME.trace.png``) appear
under their final names only when complete; an existing file is never replaced unless asked.
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

from .client import Client, Progress
from .clips import Clip, FileClip, Params
from .errors import JobFailedError

SUFFIXES = {"ffv1": ".mkv", "prores": ".mov", "h264": ".mp4", "png": "", "exr": ""}


@dataclass(frozen=True)
class RenderResult:
    job_id: str
    output: Path
    region: Path | None
    trace: Path
    plot: Path
    duplicate: bool

    def trace_data(self) -> dict[str, Any]:
        return json.loads(self.trace.read_text())


MOVIES = {suffix for suffix in SUFFIXES.values() if suffix}


def _stem(output: Path) -> str:
    """A movie's name without its suffix; a folder's (PNG, EXR) whole name, dots and all (``plate.kvlock``)."""
    return output.name[: -len(output.suffix)] if output.suffix.lower() in MOVIES else output.name


def companions(output: Path) -> dict[str, Path]:
    stem = _stem(output)
    return {"trace": output.with_name(f"{stem}.trace.json"), "plot": output.with_name(f"{stem}.trace.png")}


@dataclass(frozen=True)
class Outputs:
    """Where one render's files go: the result, its region (when asked), its trace and the trace's plot."""

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
    region_suffix = {"prores": ".mov", "png": "", "exr": ""}.get(codec, ".mkv")  # as the server writes it
    region_path = output.with_name(f"{_stem(output)}.region{region_suffix}") if region else None
    paths = companions(output)
    return Outputs(output, region_path, paths["trace"], paths["plot"])


def follow(
    client: Client,
    job_id: str,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    previews: bool = False,
) -> Progress:
    """Watch a job to its end, forwarding ``cancel`` to the server; its last update, or ``JobFailedError``
    unless it succeeded."""
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
    if last is None or last.state != "succeeded":
        state = last.state if last else "lost"
        raise JobFailedError(job_id, state, last.message if last else "no status arrived")
    return last


def collect(
    client: Client, job_id: str, files: Outputs, overwrite: bool = False, duplicate: bool = False
) -> RenderResult:
    """Fetch a finished job's files and move each under its final name (none appears half written)."""
    output = files.video
    staging = output.with_name(f".{output.name}.fetch-{uuid.uuid4().hex[:8]}")
    try:
        fetched = client.fetch(job_id, staging)
        moves = [("video", output), ("trace", files.trace), ("plot", files.plot)]
        if files.region is not None:
            moves.append(("region", files.region))
        for kind, target in moves:
            with atomic_path(target, overwrite) as temp:
                shutil.move(str(fetched[kind]), str(temp))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RenderResult(job_id, output, files.region, files.trace, files.plot, duplicate)


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
    """Submit, follow and collect one render: ``submit``, ``follow`` and ``collect`` in one call."""
    files = outputs(output, params.codec, params.region)
    for target in files.paths():
        check_writable(target, overwrite)
    submitted = client.submit(source, matte, params, job_id=job_id)
    follow(client, submitted.job_id, progress, cancel, previews)
    return collect(client, submitted.job_id, files, overwrite, submitted.duplicate)
