"""Translation between the wire contract's messages and the server's domain (JobSpec, LiveStatus …).

Header validation lives here because it is about the message: ids, sizes, formats, paths. Everything
that needs the pixels is checked after the upload, by the engine's own validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from kvlock.errors import InvalidRequest
from kvlock.media.decode import probe
from kvlock.media.matte import CHANNELS
from kvlock.settings import EditSettings, validate_settings
from kvlock_wire import editor_pb2 as pb

from .jobs import JOB_ID, ClipSpec, JobRecord, JobSpec, JobState
from .runner import LiveStatus
from .security import MediaRoots

PIXELS = {pb.RGB8: "rgb8", pb.RGB16: "rgb16", pb.GRAY8: "gray8", pb.GRAY16: "gray16"}
CODECS = {
    pb.CODEC_UNSPECIFIED: "ffv1",
    pb.FFV1: "ffv1",
    pb.PRORES: "prores",
    pb.PNG: "png",
    pb.H264: "h264",
    pb.EXR: "exr",
}
STATES = {
    JobState.QUEUED: pb.QUEUED,
    JobState.RUNNING: pb.RUNNING,
    JobState.SUCCEEDED: pb.SUCCEEDED,
    JobState.FAILED: pb.FAILED,
    JobState.CANCELLED: pb.CANCELLED,
}
STATES_BACK = {v: k for k, v in STATES.items()}


class OversizedError(Exception):
    """An upload larger than the server accepts."""


@dataclass(frozen=True)
class Limits:
    max_side: int = 8192
    max_frames: int = 100_000
    max_upload_bytes: int = 16 * 1024**3


def settings_to_dict(message: pb.Settings) -> dict:
    return {f.name: getattr(message, f.name) for f in fields(EditSettings) if message.HasField(f.name)}


def _inline(clip: pb.InlineClip, name: str, file_name: str, limits: Limits, allowed: set[int]) -> ClipSpec:
    if clip.format not in allowed:
        kinds = ", ".join(pb.PixelFormat.Name(f) for f in sorted(allowed))
        raise InvalidRequest(f"{name}: pixel format must be one of {kinds}")
    if not (8 <= clip.width <= limits.max_side and 8 <= clip.height <= limits.max_side):
        raise InvalidRequest(f"{name}: frame size {clip.width}×{clip.height} is outside 8–{limits.max_side} pixels")
    if not 1 <= clip.frames <= limits.max_frames:
        raise InvalidRequest(f"{name}: {clip.frames} frames is outside 1–{limits.max_frames}")
    spec = ClipSpec("inline", file_name, clip.frames, clip.width, clip.height, PIXELS[clip.format])
    if spec.nbytes > limits.max_upload_bytes:
        raise OversizedError(
            f"{name}: {spec.nbytes / 1e9:.2f} GB of frames is more than this server accepts "
            f"({limits.max_upload_bytes / 1e9:.2f} GB); send a shorter range or name a file the server can read"
        )
    return spec


def _file(clip: pb.FileClip, name: str, roots: MediaRoots, ranged: bool = True) -> ClipSpec:
    """A file under the media roots (every file of a sequence too), over its own range when ``ranged``."""
    path = roots.check(clip.path)
    info = probe(path)  # raises MediaNotFoundError / UnreadableMediaError
    roots.check_all(info.files)
    if not ranged:
        return ClipSpec("file", str(path), info.frames, info.width, info.height)
    end = clip.end or info.frames
    if not 0 <= clip.start < end <= info.frames:
        raise InvalidRequest(f"{name}: range [{clip.start}, {end}) is outside the file's [0, {info.frames})")
    return ClipSpec(
        "file", str(path), end - clip.start, info.width, info.height, "rgb16" if info.deep else "rgb8", clip.start, end
    )


def spec_from_header(header: pb.EditHeader, roots: MediaRoots, limits: Limits, known_model) -> JobSpec:
    """Check everything the header alone can tell; raise a typed error naming what to fix."""
    if not JOB_ID.match(header.job_id):
        raise InvalidRequest(f"job_id {header.job_id!r} must be 1–64 characters of A–Z, a–z, 0–9, '.', '_', '-'")
    known_model(header.model or "tiny")
    if not header.prompt.strip():
        raise InvalidRequest("prompt is empty: describe what the masked subject should become")
    settings = settings_to_dict(header.settings)
    validate_settings(EditSettings(**settings))
    which_source, which_matte = header.WhichOneof("source"), header.WhichOneof("matte")
    if which_source is None or which_matte is None:
        raise InvalidRequest("the header must name a source and a matte (inline frames or a file)")
    rgb = {pb.RGB8, pb.RGB16}
    if which_source == "source_inline":
        source = _inline(header.source_inline, "source", "source.raw", limits, rgb)
    else:
        source = _file(header.source_file, "source", roots)
    if which_matte == "matte_inline":
        matte = _inline(header.matte_inline, "matte", "matte.raw", limits, rgb | {pb.GRAY8, pb.GRAY16})
        if (matte.width, matte.height) != (source.width, source.height):
            raise InvalidRequest(
                f"matte frames are {matte.width}×{matte.height} but the source's are {source.width}×{source.height}"
            )
        if matte.frames not in (1, source.frames):
            raise InvalidRequest(f"matte has {matte.frames} frames; send {source.frames} (one per source frame) or 1")
    else:  # a matte that names its own frames keeps them; one that names none follows the source's range
        own = header.matte_file.HasField("start") or header.matte_file.HasField("end")
        matte = _file(header.matte_file, "matte", roots, ranged=own)
        if own and matte.frames not in (1, source.frames):
            raise InvalidRequest(
                f"matte range [{matte.start}, {matte.end}) has {matte.frames} frames but the source's has "
                f"{source.frames}: give the matte as many frames as the source (or one, used for every frame)"
            )
    options = header.matte_options
    channel = options.channel if options.HasField("channel") else "auto"
    if channel not in CHANNELS:
        raise InvalidRequest(f"matte channel must be one of {CHANNELS}, got {channel!r}")
    matte_options = {
        "channel": channel,
        "invert": options.invert,
        "dilate": options.dilate,
        "resize": options.resize,
        "threshold": options.threshold if options.HasField("threshold") else None,
    }
    rate = (header.rate.num, header.rate.den) if header.rate.num > 0 and header.rate.den > 0 else (24, 1)
    return JobSpec(
        job_id=header.job_id,
        model=header.model or "tiny",
        prompt=header.prompt,
        source=source,
        matte=matte,
        settings=settings,
        matte_options=matte_options,
        priority=header.priority,
        rate=rate,
        timecode=header.timecode or None,
        codec=CODECS[header.output.codec],
        region=header.output.region,
    )


def update_message(job_id: str, live: LiveStatus) -> pb.JobUpdate:
    return pb.JobUpdate(
        job_id=job_id,
        state=STATES[live.state],
        window=live.window,
        windows=live.windows,
        step=live.step,
        total_steps=live.total_steps,
        sigma=live.sigma,
        h=math.nan if live.h is None else live.h,  # NaN: not measured yet (before the control window)
        alpha=live.alpha,
        omega=live.omega,
        s_star=live.s_star,
        eta_seconds=live.eta_seconds,
        mode=live.mode,
        message=live.message,
        preview_png=live.preview_png,
        queue_position=live.queue_position,
    )


def job_info(record: JobRecord) -> pb.JobInfo:
    return pb.JobInfo(
        job_id=record.job_id,
        state=STATES[record.state],
        model=record.spec.model,
        prompt=record.spec.prompt,
        priority=record.spec.priority,
        created=record.created,
        started=record.started or 0.0,
        finished=record.finished or 0.0,
        message=record.message,
        attempts=record.attempts,
        fetched=record.fetched is not None,
        frames=record.spec.source.frames,
    )


__all__ = ["Limits", "OversizedError", "spec_from_header"]
