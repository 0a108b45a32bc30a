"""Turning a job's stored media into an edit request, and an edit's result into files to deliver.

Both run on the server only: at submission (to validate before a job is accepted) and when the job runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from kvlock import EditRequest, EditResult, EditSettings
from kvlock.colour import encoding_for
from kvlock.errors import InvalidRequest
from kvlock.media.decode import MediaInfo, probe, read_frames
from kvlock.media.matte import MatteOptions, load_matte, pick_channel, refine
from kvlock.media.output import OUTPUT_SUFFIXES, check_output, write_result
from kvlock.media.timecode import format_timecode, parse_timecode
from kvlock.settings import validate_settings
from kvlock.validation import check_frames, normalise_matte

from .jobs import PIXEL_LAYOUTS, ClipSpec, JobSpec

OUTPUT_SUFFIX = OUTPUT_SUFFIXES


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


def _inline_info(clip: ClipSpec, rate: Fraction) -> MediaInfo:
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


def load_job_media(spec: JobSpec, folder: Path) -> tuple[np.ndarray, np.ndarray, list[str], str | None]:
    """Source frames (T, H, W, 3|4; float for EXR), matte (T, H, W) float, warnings and frame 0's timecode."""
    rate = Fraction(*spec.rate)
    options = MatteOptions(**spec.matte_options)
    timecode = spec.timecode
    if spec.source.kind == "file":
        source_info = probe(spec.source.path, rate)
        end = spec.source.end or source_info.frames
        start = spec.source.start
        frames = read_frames(source_info, start, end)  # alpha, if any, passes through the edit untouched
        if source_info.timecode and not timecode:
            number = parse_timecode(source_info.timecode, source_info.rate) + start
            timecode = format_timecode(number, source_info.rate, drop_frame=";" in source_info.timecode)
    else:
        frames = read_inline(spec.source, folder)
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=-1)
        source_info, start, end = _inline_info(spec.source, rate), 0, spec.source.frames
    if spec.matte.kind == "file":  # end 0: no range of its own (it follows the source's)
        own = (spec.matte.start, spec.matte.end) if spec.matte.end else None
        matte, warnings = load_matte(probe(spec.matte.path, rate), source_info, start, end, options, own)
    else:
        raw = read_inline(spec.matte, folder)
        values = (
            raw[..., 0].astype(np.float32) / float(np.iinfo(raw.dtype).max)
            if raw.shape[-1] == 1
            else (pick_channel(raw, options.channel))
        )
        matte, warnings = refine(values, options), []
    return frames, matte, warnings, timecode


def _source_info(spec: JobSpec) -> MediaInfo:
    rate = Fraction(*spec.rate)
    return probe(spec.source.path, rate) if spec.source.kind == "file" else _inline_info(spec.source, rate)


def build_request(spec: JobSpec, folder: Path) -> tuple[EditRequest, list[str], str | None]:
    """Everything validated as the engine will validate it, so a bad job fails before it is queued."""
    validate_settings(EditSettings(**spec.settings))  # before reading any media: the cheap checks first
    info = _source_info(spec)
    if spec.codec == "exr" and info.codec != "exr":
        raise InvalidRequest("codec EXR writes the source's EXR files back with the edit: name an EXR source file")
    output_warnings = check_output(info, spec.codec, info.has_alpha)
    frames, matte, warnings, timecode = load_job_media(spec, folder)
    request, more = assemble_request(spec, frames, matte)
    return request, warnings + more + output_warnings, timecode


def assemble_request(spec: JobSpec, frames: np.ndarray, matte: np.ndarray) -> tuple[EditRequest, list[str]]:
    """The edit request from media already in memory (a Ray worker receives it from the object store)."""
    settings = EditSettings(**spec.settings)
    validate_settings(settings)
    transfer = "scene_linear" if np.issubdtype(frames.dtype, np.floating) else "display"  # floats come from EXR
    frame_warnings = check_frames(frames, transfer)
    _, matte_warnings = normalise_matte(matte, frames)
    if not spec.prompt.strip():
        raise InvalidRequest("prompt is empty: describe what the masked subject should become")
    request = EditRequest(
        frames, matte, spec.prompt, settings, return_region=spec.region, encoding=encoding_for(frames.dtype, transfer)
    )
    return request, frame_warnings + matte_warnings


def write_results(result: EditResult, spec: JobSpec, folder: Path, timecode: str | None) -> list[ResultFile]:
    rate = Fraction(*spec.rate)
    files = []
    info = _source_info(spec)
    start = spec.source.start if spec.source.kind == "file" else 0
    encoding = encoding_for(result.frames.dtype, info.transfer)
    video = f"result{OUTPUT_SUFFIX[spec.codec]}"
    write_result(folder / video, result.frames, info, start, spec.codec, encoding, rate, timecode, overwrite=True)
    files.append(ResultFile(video, "video"))
    if spec.region and result.region is not None:
        codec = "ffv1" if spec.codec in ("h264", "ffv1") else spec.codec
        region = f"region{OUTPUT_SUFFIX[codec]}"
        write_result(folder / region, result.region, info, start, codec, encoding, rate, timecode, True, region=True)
        files.append(ResultFile(region, "region"))
    (folder / "trace.json").write_text(json.dumps(result.trace.to_dict() | {"timecode": timecode}, indent=2))
    files.append(ResultFile("trace.json", "trace"))
    result.trace.plot(folder / "trace.png")
    files.append(ResultFile("trace.png", "plot"))
    (folder / "results.json").write_text(json.dumps([f.__dict__ for f in files]))
    return files


def result_files(folder: Path) -> list[ResultFile]:
    listing = folder / "results.json"
    if not listing.is_file():
        return []
    return [ResultFile(**item) for item in json.loads(listing.read_text())]


def remove_partials(folder: Path) -> None:
    """A worker killed while writing leaves half-written outputs under temporary names; the re-run starts clean."""
    for partial in folder.glob(".*.partial-*"):
        if partial.is_file():
            partial.unlink(missing_ok=True)
