"""Turning a job's stored media into an edit request, and an edit's result into files to deliver.

Both run on the server's side only, when the job runs (a submission is checked by ``checks``, in pieces).
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

from kvlock import EditRequest, EditResult
from kvlock.editing.validation import check_frames, normalise_matte
from kvlock.errors import InvalidRequest
from kvlock.media.atomic import atomic_path
from kvlock.media.colour import encoding_for
from kvlock.media.decode import MediaInfo, probe, read_frames
from kvlock.media.matte import load_matte, pick_channel, refine
from kvlock.media.output import OUTPUT_SUFFIXES, check_output, write_result
from kvlock.media.timecode import timecode_at

from .contract import ResultFile
from .media_roots import MediaRoots
from .model import PIXEL_LAYOUTS, ClipSpec, JobSpec


@dataclass(frozen=True)
class JobMedia:
    """A job's decoded media: source frames (T, H, W, 3|4; float for EXR), matte (T, H, W) float, the
    warnings reading them gave, and the timecode of the source's first frame in the range."""

    frames: np.ndarray
    matte: np.ndarray
    warnings: tuple[str, ...]
    timecode: str | None


def read_inline(clip: ClipSpec, folder: Path) -> np.ndarray:
    """Raw uploaded frames → (N, H, W, C) uint8/uint16, mapped read-only from disk (16-bit little-endian)."""
    channels, size = PIXEL_LAYOUTS[clip.pixel]
    dtype = np.dtype("<u2") if size == 2 else np.dtype(np.uint8)
    data = np.memmap(folder / clip.path, dtype=dtype, mode="r", shape=(clip.frames, clip.height, clip.width, channels))
    return data if dtype.isnative else data.astype(dtype.newbyteorder("="))


def inline_matte_values(raw: np.ndarray, channel: str) -> np.ndarray:
    """Uploaded matte pixels (N, H, W, 1|3) → (N, H, W) float32 in [0, 1] before refinement (a gray matte is
    its own value, whatever the channel)."""
    return pick_channel(raw, channel)


def pin(held: ExitStack, clip: ClipSpec, roots: MediaRoots, folder: Path) -> Path:
    """Open a file clip's files (checked by descriptor, same identity as accepted); the path to read them by."""
    return held.enter_context(roots.pinned(clip.path, clip.fingerprint, where=folder)).path


def inline_info(clip: ClipSpec, rate: Fraction, roots: MediaRoots) -> MediaInfo:
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
        limits=roots.limits,
    )


def file_info(held: ExitStack, clip: ClipSpec, roots: MediaRoots, folder: Path, rate: Fraction) -> MediaInfo:
    """A file clip pinned (``held`` keeps its descriptors open) and probed within the roots' limits."""
    return probe(pin(held, clip, roots, folder), rate, roots.limits)


def source_info(spec: JobSpec, folder: Path, roots: MediaRoots, held: ExitStack) -> MediaInfo:
    """The source's media info; a file source is pinned (``held`` keeps its descriptors open)."""
    rate = Fraction(*spec.rate)
    if spec.source.kind == "file":
        return file_info(held, spec.source, roots, folder, rate)
    return inline_info(spec.source, rate, roots)


def check_codec(info: MediaInfo, codec: str) -> list[str]:
    """Refuse an output codec the source cannot be written back in; warnings for what it loses."""
    if codec == "exr" and info.codec != "exr":
        raise InvalidRequest("codec EXR writes the source's EXR files back with the edit: name an EXR source file")
    return check_output(info, codec, info.has_alpha)


def load_job_media(spec: JobSpec, folder: Path, roots: MediaRoots) -> JobMedia:
    """The job's media, decoded (a Ray worker that cannot see the store receives exactly this)."""
    with ExitStack() as held:
        return _load(spec, folder, roots, held, source_info(spec, folder, roots, held))


def _load(spec: JobSpec, folder: Path, roots: MediaRoots, held: ExitStack, info: MediaInfo) -> JobMedia:
    rate = Fraction(*spec.rate)
    timecode = spec.timecode
    if spec.source.kind == "file":
        end = spec.source.end or info.frames
        start = spec.source.start
        frames = read_frames(info, start, end)  # alpha, if any, passes through the edit untouched
        timecode = timecode or timecode_at(info.timecode, info.rate, start)
    else:
        frames = read_inline(spec.source, folder)
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=-1)
        start, end = 0, spec.source.frames
    if spec.matte.kind == "file":  # end 0: no range of its own (it follows the source's)
        own = (spec.matte.start, spec.matte.end) if spec.matte.end else None
        matte_info = file_info(held, spec.matte, roots, folder, rate)
        matte, warnings = load_matte(matte_info, info, start, end, spec.matte_options, own)
        warnings = [*info.warnings, *matte_info.warnings, *warnings]
    else:
        raw = read_inline(spec.matte, folder)
        matte = refine(inline_matte_values(raw, spec.matte_options.channel), spec.matte_options)
        warnings = list(info.warnings)
    return JobMedia(frames, matte, tuple(warnings), timecode)


def build_request(spec: JobSpec, folder: Path, roots: MediaRoots) -> tuple[EditRequest, list[str], str | None]:
    """The edit request from the job's stored media, the warnings for the trace, and the first timecode.

    The codec is checked before any media is decoded."""
    with ExitStack() as held:
        info = source_info(spec, folder, roots, held)
        output_warnings = check_codec(info, spec.codec)
        media = _load(spec, folder, roots, held, info)
    request, warnings, timecode = request_from_media(spec, media)
    return request, warnings + output_warnings, timecode


def request_from_media(spec: JobSpec, media: JobMedia) -> tuple[EditRequest, list[str], str | None]:
    """The edit request from media already in memory (a Ray worker receives it from the object store)."""
    frames = media.frames
    transfer = "scene_linear" if np.issubdtype(frames.dtype, np.floating) else "display"  # floats come from EXR
    frame_warnings = check_frames(frames, transfer)
    _, matte_warnings = normalise_matte(media.matte, frames)
    request = EditRequest(
        frames,
        media.matte,
        spec.prompt,
        spec.settings,
        return_region=spec.region,
        encoding=encoding_for(frames.dtype, transfer),
        return_plate=spec.plate,
    )
    return request, list(media.warnings) + frame_warnings + matte_warnings, media.timecode


def take_name(name: str, take: int, takes: int) -> str:
    """A result file's name for take ``take`` (1-based) of ``takes``: ``result.take2.mkv``, ``trace.take2.json``;
    a job of one take keeps the plain names."""
    if takes <= 1:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}.take{take}{dot}{suffix}"


def start_results(folder: Path) -> None:
    """A run starts with no results listed (a run again after a restart writes every take anew)."""
    (folder / "results.json").unlink(missing_ok=True)


def write_results(
    result: EditResult, spec: JobSpec, folder: Path, timecode: str | None, roots: MediaRoots
) -> list[ResultFile]:
    """Write one take's result files into ``folder`` and add them to its ``results.json`` (EXR output reads
    the pinned source files as templates); the files written."""
    with ExitStack() as held:
        return _write(result, spec, folder, timecode, source_info(spec, folder, roots, held))


def _write(result: EditResult, spec: JobSpec, folder: Path, timecode: str | None, info: MediaInfo) -> list[ResultFile]:
    rate = Fraction(*spec.rate)
    take, takes = result.take, spec.settings.takes
    numbered = take if takes > 1 else 0
    files = []
    start = spec.source.start if spec.source.kind == "file" else 0
    encoding = encoding_for(result.frames.dtype, info.transfer)
    video = take_name(f"result{OUTPUT_SUFFIXES[spec.codec]}", take, takes)
    write_result(folder / video, result.frames, info, start, spec.codec, encoding, rate, timecode, overwrite=True)
    files.append(ResultFile(video, "video", numbered))
    codec = "ffv1" if spec.codec in ("h264", "ffv1") else spec.codec  # the companions keep alpha
    if spec.region and result.region is not None:
        region = take_name(f"region{OUTPUT_SUFFIXES[codec]}", take, takes)
        write_result(folder / region, result.region, info, start, codec, encoding, rate, timecode, True, region=True)
        files.append(ResultFile(region, "region", numbered))
    if spec.plate and result.plate is not None and take == 1:  # the source's, the same for every take: once
        plate = f"plate{OUTPUT_SUFFIXES[codec]}"
        rgba = result.plate.rgba()
        write_result(folder / plate, rgba, info, start, codec, encoding, rate, timecode, True, region=True)
        files.append(ResultFile(plate, "plate", numbered))
    trace, plot = take_name("trace.json", take, takes), take_name("trace.png", take, takes)
    with atomic_path(folder / trace, overwrite=True) as temp:
        temp.write_text(json.dumps(result.trace.to_dict() | {"timecode": timecode}, indent=2))
    files.append(ResultFile(trace, "trace", numbered))
    with atomic_path(folder / plot, overwrite=True) as temp:
        result.trace.plot(temp)
    files.append(ResultFile(plot, "plot", numbered))
    listing = folder / "results.json"
    before = json.loads(listing.read_text()) if listing.is_file() else []
    with atomic_path(listing, overwrite=True) as temp:  # a take is listed only once all its files exist
        temp.write_text(json.dumps(before + [f.__dict__ for f in files]))
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


def remove_partials(folder: Path) -> None:
    """A worker killed while writing leaves half-written outputs under temporary names; the re-run starts clean."""
    for partial in folder.glob(".*.partial-*"):
        if partial.is_file():
            partial.unlink(missing_ok=True)
