"""Turning a job's stored media into an edit request, and an edit's result into files to deliver.

Both run on the server only, when the job runs (a submission is checked by ``upload_checks``, in pieces).
Files named by the client are read through descriptors opened and judged again now (``media_roots``), and
must be the very files the job was accepted with.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from kvlock import EditRequest, EditResult, EditSettings
from kvlock.errors import InvalidRequest
from kvlock.media.decode import MediaInfo, probe, read_frames
from kvlock.media.encode import CODECS, write_video
from kvlock.media.matte import MatteOptions, load_matte, pick_channel, refine
from kvlock.media.timecode import format_timecode, parse_timecode
from kvlock.settings import validate_settings
from kvlock.validation import check_frames, normalise_matte

from .jobs import PIXEL_LAYOUTS, ClipSpec, JobSpec
from .media_roots import MediaRoots

OUTPUT_SUFFIX = {codec: spec.suffix for codec, spec in CODECS.items()}


@dataclass(frozen=True)
class ResultFile:
    name: str  # relative to the job folder
    kind: str  # video, region, trace, plot


def read_inline(clip: ClipSpec, folder: Path) -> np.ndarray:
    """Raw uploaded frames → (N, H, W, C) uint8/uint16, mapped read-only from disk (16-bit little-endian)."""
    channels, size = PIXEL_LAYOUTS[clip.pixel]
    dtype = np.dtype("<u2") if size == 2 else np.dtype(np.uint8)
    data = np.memmap(folder / clip.path, dtype=dtype, mode="r", shape=(clip.frames, clip.height, clip.width, channels))
    return data if dtype.isnative else data.astype(dtype.newbyteorder("="))


def inline_matte_values(raw: np.ndarray, channel: str) -> np.ndarray:
    """Uploaded matte pixels (N, H, W, 1|3) → (N, H, W) float32 in [0, 1] before refinement."""
    if raw.shape[-1] == 1:
        return raw[..., 0].astype(np.float32) / float(np.iinfo(raw.dtype).max)
    return pick_channel(raw, channel)


def pin(held: ExitStack, clip: ClipSpec, roots: MediaRoots, folder: Path) -> Path:
    """Open a file clip's files (checked by descriptor, same identity as accepted); the path to read them by."""
    return held.enter_context(roots.pinned(clip.path, clip.fingerprint, where=folder)).path


def inline_info(clip: ClipSpec, rate: Fraction) -> MediaInfo:
    return MediaInfo(
        Path("<upload>"),
        "video",
        clip.frames,
        rate,
        clip.width,
        clip.height,
        False,
        clip.pixel.endswith("16"),
        None,
        "raw",
    )


def load_job_media(
    spec: JobSpec, folder: Path, roots: MediaRoots
) -> tuple[np.ndarray, np.ndarray, list[str], str | None]:
    """Source frames (T, H, W, 3), matte (T, H, W) float, warnings and the source timecode of frame 0."""
    with ExitStack() as held:
        return _load(spec, folder, roots, held)


def _load(
    spec: JobSpec, folder: Path, roots: MediaRoots, held: ExitStack
) -> tuple[np.ndarray, np.ndarray, list[str], str | None]:
    rate = Fraction(*spec.rate)
    options = MatteOptions(**spec.matte_options)
    timecode = spec.timecode
    if spec.source.kind == "file":
        source_info = probe(pin(held, spec.source, roots, folder), rate)
        end = spec.source.end or source_info.frames
        start = spec.source.start
        frames = read_frames(source_info, start, end)[..., :3]
        if source_info.timecode and not timecode:
            number = parse_timecode(source_info.timecode, source_info.rate) + start
            timecode = format_timecode(number, source_info.rate, drop_frame=";" in source_info.timecode)
    else:
        frames = read_inline(spec.source, folder)
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=-1)
        source_info, start, end = inline_info(spec.source, rate), 0, spec.source.frames
    if spec.matte.kind == "file":
        matte_info = probe(pin(held, spec.matte, roots, folder), rate)
        matte, warnings = load_matte(matte_info, source_info, start, end, options)
    else:
        raw = read_inline(spec.matte, folder)
        matte, warnings = refine(inline_matte_values(raw, options.channel), options), []
    return frames, matte, warnings, timecode


def build_request(spec: JobSpec, folder: Path, roots: MediaRoots) -> tuple[EditRequest, list[str], str | None]:
    """The job's edit request, validated as the engine will validate it."""
    validate_settings(EditSettings(**spec.settings))  # before reading any media: the cheap checks first
    frames, matte, warnings, timecode = load_job_media(spec, folder, roots)
    request, more = assemble_request(spec, frames, matte)
    return request, warnings + more, timecode


def assemble_request(spec: JobSpec, frames: np.ndarray, matte: np.ndarray) -> tuple[EditRequest, list[str]]:
    """The edit request from media already in memory (a Ray worker receives it from the object store)."""
    settings = EditSettings(**spec.settings)
    validate_settings(settings)
    check_frames(frames)
    _, matte_warnings = normalise_matte(matte, frames)
    if not spec.prompt.strip():
        raise InvalidRequest("prompt is empty: describe what the masked subject should become")
    return EditRequest(frames, matte, spec.prompt, settings, return_region=spec.region), matte_warnings


def write_results(result: EditResult, spec: JobSpec, folder: Path, timecode: str | None) -> list[ResultFile]:
    rate = Fraction(*spec.rate)
    files = []
    video = f"result{OUTPUT_SUFFIX[spec.codec]}"
    write_video(folder / video, result.frames, rate, spec.codec, timecode=timecode, overwrite=True)
    files.append(ResultFile(video, "video"))
    if spec.region and result.region is not None:
        codec = "ffv1" if spec.codec in ("h264", "ffv1") else spec.codec
        region = f"region{OUTPUT_SUFFIX[codec]}"
        write_video(folder / region, result.region, rate, codec, timecode=timecode, overwrite=True)
        files.append(ResultFile(region, "region"))
    (folder / "trace.json").write_text(json.dumps(result.trace.to_dict() | {"timecode": timecode}, indent=2))
    files.append(ResultFile("trace.json", "trace"))
    result.trace.plot(folder / "trace.png")
    files.append(ResultFile("trace.png", "plot"))
    (folder / "results.json").write_text(json.dumps([f.__dict__ for f in files]))
    return files


class ResultsMissingError(Exception):
    """A finished job's result files are not (all) in its folder any more."""


def result_files(folder: Path, job_id: str = "") -> list[ResultFile]:
    """The files a succeeded job delivers; raise :class:`ResultsMissingError` if any of them is gone."""
    listing = folder / "results.json"
    try:
        items = [ResultFile(**item) for item in json.loads(listing.read_text())]
    except (OSError, ValueError, TypeError) as error:
        raise ResultsMissingError(_gone(job_id, f"its list of results cannot be read ({error})")) from None
    for item in items:
        if not (folder / item.name).exists():
            raise ResultsMissingError(_gone(job_id, f"{item.name} is missing"))
    return items


def _gone(job_id: str, what: str) -> str:
    return (
        f"job {job_id} succeeded but its results are gone from the server's store ({what}; removed outside "
        "the server?); nothing can be fetched: submit the edit again under a new job id"
    )
