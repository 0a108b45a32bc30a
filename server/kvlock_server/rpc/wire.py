"""Translation between the wire contract's messages and the server's domain (JobSpec, LiveStatus …).

Header validation lives here because it is about the message: ids, sizes, formats, paths, rates,
timecodes, string lengths and every setting's range — all bounded here, before any byte is uploaded or
any work starts, so a client's mistake is always INVALID_ARGUMENT naming the field, never a hang or an
internal error later. A file named by path is opened and judged here from its headers alone (frame size and
claimed length against :class:`~kvlock.media.limits.MediaLimits`; nothing is decoded past them), so the
service runs this within its bound on validations. Everything that needs the pixels is checked after the
upload (``jobs.checks``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

from kvlock.editing.validation import check_prompt
from kvlock.errors import InvalidRequest
from kvlock.loading.lora_catalog import LoraEntry
from kvlock.media.decode import probe
from kvlock.media.limits import DEFAULT_LIMITS, MediaLimits
from kvlock.media.matte import CHANNELS, MatteOptions
from kvlock.media.timecode import MAX_TIMECODE_CHARS, parse_timecode
from kvlock.settings import MAX_LORAS, MAX_TEXT, EditSettings, LoraChoice
from kvlock_wire import editor_pb2 as pb

from ..jobs.media_roots import MediaRoots
from ..jobs.model import PIXEL_LAYOUTS, ClipSpec, JobRecord, JobSpec, JobState, check_job_id
from ..jobs.runner import LiveStatus

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
    """What one request may ask for. ``media`` bounds every clip's frames (uploaded or named by path) and
    the range of a file read by path; ``max_upload_bytes`` the bytes of an upload."""

    media: MediaLimits = DEFAULT_LIMITS
    max_frames: int = 100_000
    max_upload_bytes: int = 16 * 1024**3
    max_model_name: int = 256
    max_dilate: int = 64
    max_fps: int = 1000
    max_rate_term: int = 1_000_000

    @property
    def max_side(self) -> int:
        return self.media.max_side


def _text(value: str, field: str, most: int) -> str:
    if len(value) > most:
        raise InvalidRequest(f"{field} is {len(value)} characters; at most {most} are accepted")
    return value


def _rate(rate: pb.Rational, limits: Limits) -> tuple[int, int]:
    """The header's frame rate as an exact fraction; unset (0/0) is 24/1."""
    if rate.num == 0 and rate.den == 0:
        return 24, 1
    most = limits.max_rate_term
    if not (1 <= rate.num <= most and 1 <= rate.den <= most):
        raise InvalidRequest(f"rate {rate.num}/{rate.den}: numerator and denominator must be in [1, {most}]")
    if not 1 <= Fraction(rate.num, rate.den) <= limits.max_fps:
        raise InvalidRequest(f"rate {rate.num}/{rate.den} must be in [1, {limits.max_fps}] frames per second")
    return rate.num, rate.den


def _timecode(text: str, rate: tuple[int, int]) -> str | None:
    if not text:
        return None
    _text(text, "timecode", MAX_TIMECODE_CHARS)
    try:
        parse_timecode(text, Fraction(*rate))
    except ValueError as error:
        raise InvalidRequest(f"timecode: {error}") from None
    return text.strip()


def _matte_options(options: pb.MatteOptions, limits: Limits) -> MatteOptions:
    channel = options.channel if options.HasField("channel") else "auto"
    if channel not in CHANNELS:
        raise InvalidRequest(f"matte_options.channel must be one of {CHANNELS}, got {channel[:40]!r}")
    threshold = options.threshold if options.HasField("threshold") else None
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise InvalidRequest(f"matte_options.threshold must be in [0, 1], got {threshold}")
    if not 0 <= options.dilate <= limits.max_dilate:
        raise InvalidRequest(f"matte_options.dilate must be in [0, {limits.max_dilate}] pixels, got {options.dilate}")
    return MatteOptions(channel, threshold, options.invert, options.dilate, options.resize)


REPEATED_SETTINGS = ("loras",)  # message fields without presence: empty means none


def settings_from_message(message: pb.Settings) -> EditSettings:
    """The settings a header sets (the rest left to the model), checked as every ``EditSettings`` is."""
    given = {
        f.name: getattr(message, f.name)
        for f in fields(EditSettings)
        if f.name not in REPEATED_SETTINGS and message.HasField(f.name)
    }
    if len(message.loras) > MAX_LORAS:  # before the items are read: a million of them is refused cheaply
        raise InvalidRequest(f"settings.loras has {len(message.loras)} entries; at most {MAX_LORAS} are accepted")
    loras = tuple(
        LoraChoice(_text(lora.name, "settings.loras.name", 128), lora.weight if lora.HasField("weight") else 1.0)
        for lora in message.loras
    )
    return EditSettings(**given, loras=loras)


def lora_choices_message(loras: tuple[LoraChoice, ...]) -> list[pb.LoraChoice]:
    return [pb.LoraChoice(name=c.name, weight=c.weight) for c in loras]


def lora_message(entry: LoraEntry, status: str, loadable: bool) -> pb.Lora:
    """One listed LoRA; ``status`` and ``loadable`` may say whether it fits the model a client asked about."""
    optional = {"steps": entry.steps} if entry.steps is not None else {}
    if entry.guidance is not None:
        optional["guidance"] = entry.guidance
    return pb.Lora(
        name=entry.name,
        family=entry.family,
        base=entry.base,
        rank=entry.rank,
        size=entry.size,
        experts=entry.experts,
        loadable=loadable,
        status=status,
        model=entry.model,
        **optional,
    )


def _inline(clip: pb.InlineClip, name: str, file_name: str, limits: Limits, allowed: set[int]) -> ClipSpec:
    if clip.format not in allowed:
        kinds = ", ".join(pb.PixelFormat.Name(f) for f in sorted(allowed))
        raise InvalidRequest(f"{name}: pixel format must be one of {kinds}")
    if not (8 <= clip.width <= limits.max_side and 8 <= clip.height <= limits.max_side):
        raise InvalidRequest(f"{name}: frame size {clip.width}×{clip.height} is outside 8–{limits.max_side} pixels")
    if not 1 <= clip.frames <= limits.max_frames:
        raise InvalidRequest(f"{name}: {clip.frames} frames is outside 1–{limits.max_frames}")
    spec = ClipSpec("inline", file_name, clip.frames, clip.width, clip.height, PIXELS[clip.format])
    channels, sample = PIXEL_LAYOUTS[spec.pixel]
    limits.media.check_frame(name, clip.width, clip.height, channels * sample)
    if spec.nbytes > limits.max_upload_bytes:
        raise OversizedError(
            f"{name}: {spec.nbytes / 1e9:.2f} GB of frames is more than this server accepts "
            f"({limits.max_upload_bytes / 1e9:.2f} GB); send a shorter range or name a file the server can read"
        )
    return spec


def _file(
    clip: pb.FileClip, name: str, roots: MediaRoots, limits: Limits, scratch: Path | None, ranged: bool = True
) -> ClipSpec:
    """A file under the media roots (every file of a sequence too), opened and judged by descriptor and
    probed through those descriptors, over its own range when ``ranged``."""
    with roots.pinned(clip.path, where=scratch) as pinned:
        info = probe(pinned.path, limits=roots.limits)  # headers only: MediaNotFoundError / UnreadableMediaError
    if min(info.width, info.height) < 8:
        raise InvalidRequest(f"{name}: frame size {info.width}×{info.height} is under 8 pixels a side")
    path = str(roots.check(clip.path))
    if not ranged:
        return ClipSpec("file", path, info.frames, info.width, info.height, fingerprint=pinned.fingerprint)
    end = clip.end or info.frames
    if not 0 <= clip.start < end <= info.frames:
        raise InvalidRequest(f"{name}: range [{clip.start}, {end}) is outside the file's [0, {info.frames})")
    if end - clip.start > limits.max_frames:
        raise InvalidRequest(f"{name}: {end - clip.start} frames is over {limits.max_frames}; send a shorter range")
    roots.limits.check_range(clip.path, end - clip.start, info.frame_bytes)  # what the job will hold
    pixel = "rgb16" if info.deep else "rgb8"
    return ClipSpec("file", path, end - clip.start, info.width, info.height, pixel, clip.start, end, pinned.fingerprint)


def spec_from_header(
    header: pb.EditHeader,
    roots: MediaRoots,
    limits: Limits,
    known_model: Callable[[str], str],
    scratch: Path | None = None,
    check_loras: Callable[[str, tuple[LoraChoice, ...]], object] | None = None,
) -> JobSpec:
    """Check everything the header alone can tell; raise a typed error naming what to fix.

    Cheap checks come first, so a bad field is reported before any file is opened.
    """
    check_job_id(header.job_id)
    model = _text(header.model, "model", limits.max_model_name) or "tiny"
    prompt = _text(header.prompt, "prompt", MAX_TEXT)
    settings = settings_from_message(header.settings)
    if not settings.erase:  # an erase's prompt is optional: it describes the background
        check_prompt(prompt)
    matte_options = _matte_options(header.matte_options, limits)
    rate = _rate(header.rate, limits)
    timecode = _timecode(header.timecode, rate)
    if header.output.codec not in CODECS:
        names = ", ".join(pb.Codec.Name(c) for c in CODECS if c)
        raise InvalidRequest(f"output.codec {header.output.codec} is not a codec this server writes; use {names}")
    location = known_model(model)
    if check_loras is not None:
        check_loras(location, settings.loras)  # names listed, files LoRAs that fit the model: before any upload
    which_source, which_matte = header.WhichOneof("source"), header.WhichOneof("matte")
    if which_source is None or which_matte is None:
        raise InvalidRequest("the header must name a source and a matte (inline frames or a file)")
    rgb = {pb.RGB8, pb.RGB16}
    if which_source == "source_inline":
        source = _inline(header.source_inline, "source", "source.raw", limits, rgb)
    else:
        source = _file(header.source_file, "source", roots, limits, scratch)
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
        matte = _file(header.matte_file, "matte", roots, limits, scratch, ranged=own)
        if own and matte.frames not in (1, source.frames):
            raise InvalidRequest(
                f"matte range [{matte.start}, {matte.end}) has {matte.frames} frames but the source's has "
                f"{source.frames}: give the matte as many frames as the source (or one, used for every frame)"
            )
    return JobSpec(
        job_id=header.job_id,
        model=model,
        prompt=header.prompt,
        source=source,
        matte=matte,
        settings=settings,
        matte_options=matte_options,
        priority=header.priority,
        rate=rate,
        timecode=timecode,
        codec=CODECS[header.output.codec],
        region=header.output.region,
        plate=header.output.plate,
    )


def update_message(job_id: str, live: LiveStatus) -> pb.JobUpdate:
    """The contract's message for a job's state; the step's figures while it runs (h NaN: not measured yet)."""
    p = live.progress
    figures = {}
    if p is not None:
        figures = dict(
            window=p.window,
            windows=p.windows,
            step=p.step,
            total_steps=p.total,
            sigma=p.sigma,
            alpha=p.alpha,
            omega=p.omega,
            s_star=p.s_star,
            eta_seconds=p.eta_seconds,
            mode=p.mode,
            preview_png=p.preview_png,
            take=p.take,
            takes=p.takes,
            takes_in_turn=p.in_turn,
        )
    return pb.JobUpdate(
        job_id=job_id,
        state=STATES[live.state],
        message=live.message,
        queue_position=live.queue_position,
        h=math.nan if p is None or p.h is None else p.h,
        **figures,
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
