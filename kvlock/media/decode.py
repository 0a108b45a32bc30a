"""Reading exact frame ranges from movies, image sequences and stills.

Movies (mov/mp4/mkv/avi, anything FFmpeg decodes): seek by pts to the range's start, then decode forward,
numbering each frame by rounding (pts − start) · time_base · rate, so variable-rate or B-frame reordering
never shifts a range. YUV is converted with the stream's tagged matrix and range (untagged: BT.709 from
720 lines up, BT.601 below, as players do). Frame rates stay exact fractions. A movie tagged with a display
rotation (phone footage) is read as it is shown, its size the turned one (:mod:`.orientation`).

Image sequences (PNG, TIFF 8/16-bit, EXR through the OpenEXR package) are a folder, a printf pattern
(``shot.%04d.png``), a hash pattern (``shot.####.png``) or any one numbered file of them; frames are
addressed by position from the first file. EXR frames are returned as stored — float16/float32
scene-linear values, display window, see :mod:`kvlock.media.exr` — and are tagged ``transfer =
"scene_linear"``; everything else is display-referred code values (uint8/uint16). An EXR sequence takes its
rate and timecode from the first file's ``framesPerSecond`` and ``timeCode`` attributes when it has them.

Hostile files (:mod:`.limits`, :mod:`.ffmpeg`): a probe reads headers only and refuses a file whose frames
are larger than the limits before a pixel is decoded; frames are read in one forward pass, one at a time
(:func:`iter_frames`), so checking a clip holds one frame whatever its length; a frame the decoder reports
damage in is refused, naming the file and the frame; a file that claims more frames than it holds is refused
when the frames run out. A timecode tag that is not a timecode at the file's rate is ignored, with a warning
in ``MediaInfo.warnings``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import MediaNotFoundError, UnreadableMediaError
from .exr import probe_exr, read_exr
from .ffmpeg import damage, decoded, format_depth, frame_to_array, open_input, stored_pixel_bytes
from .limits import DEFAULT_LIMITS, MediaLimits
from .orientation import display_rotation, stored_size, upright
from .timecode import checked_timecode

__all__ = ["MediaInfo", "frame_to_array", "iter_frames", "probe", "read_frames", "sequence_files"]
IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".exr", ".jpg", ".jpeg", ".dpx", ".bmp"}
DEFAULT_SEQUENCE_RATE = Fraction(24)
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[^.]+)$")


@dataclass(frozen=True)
class MediaInfo:
    """What a media path holds, learnt without decoding it all."""

    path: Path
    kind: str  # "video", "sequence" or "still"
    frames: int
    rate: Fraction
    width: int
    height: int
    has_alpha: bool
    deep: bool  # more than 8 bits per channel
    timecode: str | None
    codec: str
    files: tuple[Path, ...] = ()
    first_number: int = 0
    transfer: str = "display"  # or "scene_linear" (EXR): how the values relate to light, see kvlock.media.colour
    digits: int = 0  # zero-padded width of a sequence's frame numbers
    limits: MediaLimits = field(default=DEFAULT_LIMITS, compare=False)  # what reading its frames may cost
    warnings: tuple[str, ...] = ()  # what the probe ignored (a timecode tag that is not one)
    rotation: int = 0  # a movie's display rotation (degrees counter-clockwise); width, height and frames are as shown

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame as :func:`read_frames` returns it."""
        sample = 4 if self.codec == "exr" else (2 if self.deep else 1)
        return self.width * self.height * (4 if self.has_alpha else 3) * sample

    @property
    def numbers(self) -> range:
        """The frame numbers of a sequence's files (0, 1, … for movies)."""
        return range(self.first_number, self.first_number + self.frames)


# -- sequences -------------------------------------------------------------------------------------------


def sequence_files(path: Path) -> tuple[list[Path], int] | None:
    """The numbered files a sequence path names, sorted by number, and the first number."""
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and _NUMBERED.match(p.name)]
        prefixes = {(_NUMBERED.match(p.name).group(1), p.suffix.lower()) for p in files}
        if len(prefixes) > 1:
            raise UnreadableMediaError(f"{path} holds more than one image sequence; name one file of it instead")
    else:
        name = path.name
        hashes = re.search(r"#+", name)
        printf = re.search(r"%0?(\d*)d", name)
        if hashes or printf:
            span = (hashes or printf).span()
            pattern = re.escape(name[: span[0]]) + r"(\d+)" + re.escape(name[span[1] :]) + "$"
        else:
            match = _NUMBERED.match(name)
            if not match:
                return None
            pattern = re.escape(match.group(1)) + r"(\d+)" + re.escape(match.group(3)) + "$"
        regex = re.compile(pattern)
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            return None
        files = [p for p in folder.iterdir() if regex.match(p.name)]
    if not files:
        return None
    numbered = sorted(files, key=lambda p: int(_NUMBERED.match(p.name).group(2)))
    numbers = [int(_NUMBERED.match(p.name).group(2)) for p in numbered]
    gaps = [b for a, b in itertools.pairwise(numbers) if b != a + 1]
    if gaps:
        raise UnreadableMediaError(f"image sequence {path} has missing frames before number {gaps[0]}")
    return numbered, numbers[0]


def _read_image(path: Path, limits: MediaLimits, has_alpha: bool | None = None, deep: bool | None = None) -> np.ndarray:
    """One image file's pixels; its header is checked against ``limits`` before it is decoded."""
    if path.suffix.lower() == ".exr":
        return read_exr(path, limits)
    with open_input(path, limits) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        for frame, errors in decoded(container, stream, path):
            if errors:
                raise damage(path, 0, errors)
            if (frame.width, frame.height) != (width, height):
                raise UnreadableMediaError(
                    f"{path}: decoded {frame.width}×{frame.height}, its header says {width}×{height}"
                )
            alpha, is_deep = format_depth(frame.format)
            return frame_to_array(frame, alpha if has_alpha is None else has_alpha, is_deep if deep is None else deep)
    raise UnreadableMediaError(f"cannot decode image {path}: it holds no picture")


def _checked_format(path: Path, ctx: av.codec.context.CodecContext, limits: MediaLimits) -> tuple[bool, bool]:
    """Alpha and depth of a stream, refused if one of its frames, decoded and converted, passes ``limits``."""
    try:
        fmt = av.VideoFormat(ctx.pix_fmt)
    except ValueError:
        raise UnreadableMediaError(f"{path}: pixel format {ctx.pix_fmt!r} is unknown to this reader") from None
    has_alpha, deep = format_depth(fmt)
    converted = (4 if has_alpha else 3) * (2 if deep else 1)
    limits.check_frame(path, ctx.width, ctx.height, max(stored_pixel_bytes(fmt), converted))
    return has_alpha, deep


def _image_info(
    path: Path, kind: str, files: list[Path], first: int, rate: Fraction | None, limits: MediaLimits
) -> MediaInfo:
    match = _NUMBERED.match(files[0].name)
    digits = len(match.group(2)) if match else 0
    if files[0].suffix.lower() == ".exr":
        exr = probe_exr(files[0], limits)
        return MediaInfo(
            path=path,
            kind=kind,
            frames=len(files),
            rate=rate or exr.rate or DEFAULT_SEQUENCE_RATE,
            width=exr.display.width,
            height=exr.display.height,
            has_alpha=exr.has_alpha,
            deep=True,
            timecode=exr.timecode,
            codec="exr",
            files=tuple(files),
            first_number=first,
            transfer="scene_linear",
            digits=digits,
            limits=limits,
        )
    with open_input(files[0], limits) as container:  # the header is checked; nothing is decoded past it
        ctx = container.streams.video[0].codec_context
        has_alpha, deep = _checked_format(files[0], ctx, limits)
        width, height = ctx.width, ctx.height
    return MediaInfo(
        path=path,
        kind=kind,
        frames=len(files),
        rate=rate or DEFAULT_SEQUENCE_RATE,
        width=width,
        height=height,
        has_alpha=has_alpha,
        deep=deep,
        timecode=None,
        codec=files[0].suffix.lower().lstrip("."),
        files=tuple(files),
        first_number=first,
        digits=digits,
        limits=limits,
    )


# -- movies ----------------------------------------------------------------------------------------------


def _stream_timecode(container: av.container.InputContainer, stream: av.video.VideoStream) -> str | None:
    for meta in (stream.metadata, container.metadata):
        for key in ("timecode", "TIMECODE"):
            if meta.get(key):
                return meta[key]
    for other in container.streams:
        if other.type == "data" and other.metadata.get("timecode"):
            return other.metadata["timecode"]
    return None


def _frame_count(container: av.container.InputContainer, stream: av.video.VideoStream, rate: Fraction) -> int:
    """How many frames the file claims (read from its index or duration; counted from its packets, without
    decoding, where it states neither). :func:`iter_frames` finds out whether they are there."""
    if stream.frames:
        return stream.frames
    if stream.duration is not None and stream.time_base is not None:
        return round(stream.duration * stream.time_base * rate)
    if container.duration is not None:
        return round(Fraction(container.duration, av.time_base) * rate)
    return sum(1 for packet in container.demux(stream) if packet.size)


def _movie_info(path: Path, limits: MediaLimits) -> MediaInfo:
    with open_input(path, limits) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise UnreadableMediaError(f"{path}: the video stream has no frame rate")
        ctx = stream.codec_context
        has_alpha, deep = _checked_format(path, ctx, limits)
        rotation = display_rotation(container, stream, path)
    with open_input(path, limits) as container:  # afresh: the rotation's decode moved the first one on
        stream = container.streams.video[0]
        width, height = stored_size(ctx.width, ctx.height, rotation)  # shown: a quarter turn swaps the sides
        return MediaInfo(
            path=path,
            kind="video",
            frames=_frame_count(container, stream, Fraction(rate)),
            rate=Fraction(rate),
            width=width,
            height=height,
            has_alpha=has_alpha,
            deep=deep,
            timecode=_stream_timecode(container, stream),
            codec=ctx.name,
            limits=limits,
            rotation=rotation,
        )


def _probe(path: Path, sequence_rate: Fraction | None, limits: MediaLimits) -> MediaInfo:
    if path.is_dir() or "#" in path.name or re.search(r"%0?\d*d", path.name):
        sequence = sequence_files(path)
        if sequence is None:
            raise MediaNotFoundError(f"no image sequence at {path}")
        return _image_info(path, "sequence", *sequence, sequence_rate, limits)
    if not path.exists():
        raise MediaNotFoundError(f"{path} does not exist")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        sequence = sequence_files(path)
        if sequence is not None and len(sequence[0]) > 1:
            return _image_info(path, "sequence", *sequence, sequence_rate, limits)
        return _image_info(path, "still", [path], sequence[1] if sequence else 0, sequence_rate, limits)
    return _movie_info(path, limits)


def probe(path: str | Path, sequence_rate: Fraction | None = None, limits: MediaLimits = DEFAULT_LIMITS) -> MediaInfo:
    """Describe a movie, an image sequence or a still from its headers; raise if it does not exist, cannot
    be read, or has frames larger than ``limits``.

    ``sequence_rate`` is an image sequence's frame rate; None takes the EXR's own, else 24.
    """
    info = _probe(Path(path).expanduser(), sequence_rate, limits)
    timecode, warnings = checked_timecode(info.timecode, info.rate, info.path)
    return replace(info, timecode=timecode, warnings=info.warnings + tuple(warnings))


def iter_frames(info: MediaInfo, start: int, end: int) -> Iterator[np.ndarray]:
    """Frames [start, end) one at a time, in one forward pass over the file: (H, W, 3|4) uint8/uint16, or
    float16/float32 for EXR (alpha kept if present). Raises :class:`UnreadableMediaError` naming the file
    and frame where one is damaged, larger than the file's header said, or missing."""
    if not 0 <= start < end <= max(info.frames, 1):
        raise ValueError(f"frame range [{start}, {end}) is outside [0, {info.frames}) of {info.path}")
    if info.kind == "video":
        yield from _movie_frames(info, start, end)
        return
    shape = None
    for index, path in enumerate(info.files[start:end], start):
        frame = _read_image(path, info.limits, info.has_alpha, info.deep)
        if shape is not None and frame.shape != shape:
            raise UnreadableMediaError(
                f"images of {info.path} differ in size or channels: {path.name} (frame {index}) is "
                f"{frame.shape[1]}×{frame.shape[0]}×{frame.shape[2]}, the first {shape[1]}×{shape[0]}×{shape[2]}"
            )
        shape = frame.shape
        yield frame


def read_frames(info: MediaInfo, start: int, end: int) -> np.ndarray:
    """Frames [start, end) as (N, H, W, 3|4) uint8/uint16, or float16/float32 for EXR (alpha kept if present);
    refused before reading if they would pass ``info.limits.max_clip_bytes``."""
    info.limits.check_range(info.path, max(0, end - start), info.frame_bytes)
    return np.stack(list(iter_frames(info, start, end)))


def _movie_frames(info: MediaInfo, start: int, end: int) -> Iterator[np.ndarray]:
    """Frames [start, end) of the movie, found by pts: from a seek to the nearest keyframe before ``start``,
    and again from the first frame if that seek landed past it (streams whose index misleads the seek)."""
    produced = 0
    with open_input(info.path, info.limits) as container:
        stream = container.streams.video[0]
        tb, origin = stream.time_base, stream.start_time or 0

        def number(frame: av.VideoFrame) -> int:
            return round((frame.pts - origin) * tb * info.rate)

        for attempt in ("seek", "from_start"):
            if attempt == "seek" and start > 0:
                target = origin + int(Fraction(start) / info.rate / tb)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            elif attempt == "from_start":
                container.seek(origin, stream=stream, backward=True, any_frame=False)
            landed, produced = yield from _one_pass(container, stream, info, (start, end), number, attempt == "seek")
            if landed:
                break
    if produced != end - start:
        raise UnreadableMediaError(
            f"{info.path}: it claims {info.frames} frames, but {produced} of the {end - start} from frame {start} "
            "could be decoded; the file is damaged, cut short, or has a variable frame rate"
        )


def _one_pass(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: MediaInfo,
    span: tuple[int, int],
    number: Callable[[av.VideoFrame], int],
    must_land: bool,
) -> Generator[np.ndarray, None, tuple[bool, int]]:
    """Decode forward from where the container stands, yielding the frames of ``span``; return whether the
    first frame was at or before its start (else, when ``must_land``, nothing is yielded) and how many were."""
    start, end = span
    first_seen, produced = None, 0
    for frame, errors in decoded(container, stream, info.path, number):
        if frame is None:  # damage after the last frame the decoder returned
            if produced < end - start:
                raise damage(info.path, start + produced, errors)
            break
        if frame.pts is None:
            continue
        index = number(frame)
        first_seen = index if first_seen is None else first_seen
        if index >= end or (must_land and first_seen > start):
            break
        if index >= start:
            yield _checked(frame, errors, index, info)
            produced += 1
    return first_seen is not None and first_seen <= start, produced


def _checked(frame: av.VideoFrame, errors: list[str], index: int, info: MediaInfo) -> np.ndarray:
    """Frame ``index`` as pixels, unless the decoder reported damage in it or it is not the stream's size."""
    if errors:
        raise damage(info.path, index, errors)
    stored = stored_size(info.width, info.height, info.rotation)
    if (frame.width, frame.height) != stored:
        raise UnreadableMediaError(
            f"{info.path}: frame {index} is {frame.width}×{frame.height} but the stream says "
            f"{stored[0]}×{stored[1]}; the file is damaged"
        )
    return upright(frame_to_array(frame, info.has_alpha, info.deep), info.rotation)
