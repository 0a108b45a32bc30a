"""Reading exact frame ranges from movies, image sequences and stills.

Movies (mov/mp4/mkv/avi, anything FFmpeg decodes): seek by pts to the range's start, then decode forward,
numbering each frame by rounding (pts − start) · time_base · rate, so variable-rate or B-frame reordering
never shifts a range. YUV is converted with the stream's tagged matrix and range (untagged: BT.709 from
720 lines up, BT.601 below, as players do). Frame rates stay exact fractions.

Image sequences (PNG, TIFF 8/16-bit, EXR through the OpenEXR package) are a folder, a printf pattern
(``shot.%04d.png``), a hash pattern (``shot.####.png``) or any one numbered file of them; frames are
addressed by position from the first file. EXR frames are returned as stored — float16/float32
scene-linear values, display window, see :mod:`kvlock.media.exr` — and are tagged ``transfer =
"scene_linear"``; everything else is display-referred code values (uint8/uint16). An EXR sequence takes its
rate and timecode from the first file's ``framesPerSecond`` and ``timeCode`` attributes when it has them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import MediaNotFoundError, UnreadableMediaError
from .exr import probe_exr, read_exr

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

    @property
    def numbers(self) -> range:
        """The frame numbers of a sequence's files (0, 1, … for movies)."""
        return range(self.first_number, self.first_number + self.frames)


def _format_depth(fmt: av.VideoFormat) -> tuple[bool, bool]:
    comps = fmt.components
    has_alpha = any(c.is_alpha for c in comps)
    deep = max((c.bits for c in comps), default=8) > 8 or "f32" in fmt.name or "f16" in fmt.name
    return has_alpha, deep


def _target_format(has_alpha: bool, deep: bool) -> str:
    if deep:
        return "rgba64le" if has_alpha else "rgb48le"
    return "rgba" if has_alpha else "rgb24"


def frame_to_array(frame: av.VideoFrame, has_alpha: bool, deep: bool) -> np.ndarray:
    """RGB(A) uint8/uint16 pixels of one decoded frame, with the right YUV matrix and range."""
    target = _target_format(has_alpha, deep)
    if frame.format.is_rgb or frame.format.name.startswith(("gray", "pal")):
        return frame.to_ndarray(format=target)
    space = frame.colorspace if frame.colorspace in (1, 5, 6, 9) else (1 if frame.height >= 720 else 5)
    space = 5 if space == 6 else space  # SMPTE 170M is BT.601's matrix
    full = frame.color_range == 2
    rgb = frame.reformat(
        format=target,
        src_colorspace=space,
        dst_colorspace=space,
        src_color_range=2 if full else 1,
        dst_color_range=2,
    )
    return rgb.to_ndarray()


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


def _read_image(path: Path, has_alpha: bool | None = None, deep: bool | None = None) -> np.ndarray:
    if path.suffix.lower() == ".exr":
        return read_exr(path)
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.FFmpegError, StopIteration) as exc:
        raise UnreadableMediaError(f"cannot decode image {path}: {exc}") from exc
    alpha, is_deep = _format_depth(frame.format)
    return frame_to_array(frame, alpha if has_alpha is None else has_alpha, is_deep if deep is None else deep)


def _image_info(path: Path, kind: str, files: list[Path], first: int, rate: Fraction | None) -> MediaInfo:
    match = _NUMBERED.match(files[0].name)
    digits = len(match.group(2)) if match else 0
    if files[0].suffix.lower() == ".exr":
        exr = probe_exr(files[0])
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
        )
    pixels = _read_image(files[0])
    return MediaInfo(
        path=path,
        kind=kind,
        frames=len(files),
        rate=rate or DEFAULT_SEQUENCE_RATE,
        width=pixels.shape[1],
        height=pixels.shape[0],
        has_alpha=pixels.shape[-1] == 4,
        deep=pixels.dtype != np.uint8,
        timecode=None,
        codec=files[0].suffix.lower().lstrip("."),
        files=tuple(files),
        first_number=first,
        digits=digits,
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
    if stream.frames:
        return stream.frames
    if stream.duration is not None and stream.time_base is not None:
        return round(stream.duration * stream.time_base * rate)
    if container.duration is not None:
        return round(Fraction(container.duration, av.time_base) * rate)
    return sum(1 for _ in container.decode(stream))


def _open_movie(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise UnreadableMediaError(f"cannot open {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise UnreadableMediaError(f"{path} has no video stream")
    return container


def _movie_info(path: Path) -> MediaInfo:
    with _open_movie(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise UnreadableMediaError(f"{path}: the video stream has no frame rate")
        ctx = stream.codec_context
        try:
            fmt = av.VideoFormat(ctx.pix_fmt) if ctx.pix_fmt else None
        except ValueError:
            fmt = None
        has_alpha, deep = _format_depth(fmt) if fmt is not None else (False, False)
        return MediaInfo(
            path=path,
            kind="video",
            frames=_frame_count(container, stream, Fraction(rate)),
            rate=Fraction(rate),
            width=ctx.width,
            height=ctx.height,
            has_alpha=has_alpha,
            deep=deep,
            timecode=_stream_timecode(container, stream),
            codec=ctx.name,
        )


def probe(path: str | Path, sequence_rate: Fraction | None = None) -> MediaInfo:
    """Describe a movie, an image sequence or a still; raise if it does not exist or cannot be read.

    ``sequence_rate`` is an image sequence's frame rate; None takes the EXR's own, else 24.
    """
    path = Path(path).expanduser()
    if path.is_dir() or "#" in path.name or re.search(r"%0?\d*d", path.name):
        sequence = sequence_files(path)
        if sequence is None:
            raise MediaNotFoundError(f"no image sequence at {path}")
        return _image_info(path, "sequence", *sequence, sequence_rate)
    if not path.exists():
        raise MediaNotFoundError(f"{path} does not exist")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        sequence = sequence_files(path)
        if sequence is not None and len(sequence[0]) > 1:
            return _image_info(path, "sequence", *sequence, sequence_rate)
        return _image_info(path, "still", [path], sequence[1] if sequence else 0, sequence_rate)
    return _movie_info(path)


def read_frames(info: MediaInfo, start: int, end: int) -> np.ndarray:
    """Frames [start, end) as (N, H, W, 3|4) uint8/uint16, or float16/float32 for EXR (alpha kept if present)."""
    if not 0 <= start < end <= max(info.frames, 1):
        raise ValueError(f"frame range [{start}, {end}) is outside [0, {info.frames}) of {info.path}")
    if info.kind != "video":
        frames = [_read_image(p, info.has_alpha, info.deep) for p in info.files[start:end]]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise UnreadableMediaError(f"images of {info.path} differ in size or channels: {sorted(shapes)}")
        return np.stack(frames)
    with _open_movie(info.path) as container:
        frames = _decode_range(container, info, start, end)
    if len(frames) != end - start:
        raise UnreadableMediaError(
            f"{info.path}: expected {end - start} frames from {start}, decoded {len(frames)}; the file may be "
            "damaged or have a variable frame rate"
        )
    return np.stack(frames)


def _decode_range(container: av.container.InputContainer, info: MediaInfo, start: int, end: int) -> list[np.ndarray]:
    """Frames [start, end) of the movie, found by pts: from a seek to the nearest keyframe before ``start``,
    and again from the first frame if that seek landed past it (streams whose index misleads the seek)."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    tb = stream.time_base
    origin = stream.start_time or 0
    frames: list[np.ndarray] = []
    for attempt in ("seek", "from_start"):
        frames.clear()
        if attempt == "seek" and start > 0:
            container.seek(
                origin + int(Fraction(start) / info.rate / tb), stream=stream, backward=True, any_frame=False
            )
        elif attempt == "from_start":
            container.seek(origin, stream=stream, backward=True, any_frame=False)
        first_seen = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            index = round((frame.pts - origin) * tb * info.rate)
            first_seen = index if first_seen is None else first_seen
            if index >= end:
                break
            if index >= start:
                frames.append(frame_to_array(frame, info.has_alpha, info.deep))
        if first_seen is not None and first_seen <= start:
            break
    return frames
