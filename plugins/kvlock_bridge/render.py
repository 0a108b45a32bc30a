"""``render``: the one action every host calls — upload, follow, fetch, and place the result on disk.

The output and its companions (``NAME.region.*``, ``NAME.plate.*``, ``NAME.trace.json``, ``NAME.trace.png``) appear
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
    region_suffix = {"prores": ".mov", "png": "", "exr": ""}.get(params.codec, ".mkv")  # as the server writes it
    region_path = output.with_name(f"{_stem(output)}.region{region_suffix}") if params.region else None
    plate_path = output.with_name(f"{_stem(output)}.plate{region_suffix}") if params.plate else None
    paths = companions(output)
    for target in (output, *paths.values(), *(p for p in (region_path, plate_path) if p)):
        check_writable(target, overwrite)

    submitted = client.submit(source, matte, params, job_id=job_id)
    finished = threading.Event()

    def forward_cancel() -> None:
        while cancel is not None and not finished.is_set():
            if cancel.wait(0.1):
                client.cancel(submitted.job_id)
                return

    watcher = threading.Thread(target=forward_cancel, daemon=True)
    watcher.start()
    last = None
    try:
        for update in client.watch(submitted.job_id, previews=previews):
            last = update
            if progress is not None:
                progress(update)
    finally:
        finished.set()
        watcher.join()
    if last is None or last.state != "succeeded":
        state = last.state if last else "lost"
        raise JobFailedError(submitted.job_id, state, last.message if last else "no status arrived")

    staging = output.with_name(f".{output.name}.fetch-{uuid.uuid4().hex[:8]}")
    try:
        fetched = client.fetch(submitted.job_id, staging)
        moves = [("video", output), ("trace", paths["trace"]), ("plot", paths["plot"])]
        if region_path is not None:
            moves.append(("region", region_path))
        if plate_path is not None:
            moves.append(("plate", plate_path))
        for kind, target in moves:
            with atomic_path(target, overwrite) as temp:
                shutil.move(str(fetched[kind]), str(temp))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RenderResult(
        submitted.job_id, output, region_path, paths["trace"], paths["plot"], submitted.duplicate, plate_path
    )
