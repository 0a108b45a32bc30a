"""The plate's and the matte's own pixels, read off the main thread (no bpy here).

The operator hands over plain descriptions (:class:`MediaStrip`, :class:`RenderedFrames`); the job's worker
thread probes the files, maps timeline frames to media frames (:mod:`.timing`), and builds the clips the
bridge sends: the media by path (``FileClip``) when its frames are one contiguous range of the file, else
:class:`MappedClip`, which decodes the strip's own frames with the project's decoders a few at a time while
they upload. A matte drawn in another strip is carried into the plate's pixels (:mod:`.geometry`).

OpenEXR media is never decoded here (Blender's Python has no OpenEXR package, and an upload carries 8/16-bit
display-referred pixels only): an EXR plate, or an EXR matte made for it, goes by path, and the server reads
its scene-linear values itself; only its size is read, from the header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from kvlock.media.decode import MediaInfo, frame_to_array, probe, read_frames, sequence_files
from kvlock.media.orientation import upright
from kvlock.media.timecode import timecode_at
from kvlock_bridge import FileClip

from .exr_header import display_size
from .geometry import StripGeometry, is_identity, matte_into_plate, plate_to_matte
from .timing import StripTiming, contiguous, media_indices, rate_problem, retime_problem


class MediaProblem(Exception):
    """The media cannot be edited as the strip shows it; the message says what to change."""


@dataclass(frozen=True)
class MediaStrip:
    """A movie or image strip: its media and how it shows it (read from bpy on the main thread)."""

    name: str
    kind: str  # "movie" or "images"
    files: tuple[str, ...]  # the movie, or every element of the image strip in order (absolute paths)
    timing: StripTiming
    look: StripGeometry  # width/height are filled in from the media


@dataclass(frozen=True)
class RenderedFrames:
    """PNG frames the sequencer rendered for this job (one per timeline frame), in canvas or plate space."""

    name: str
    files: tuple[str, ...]
    canvas_space: bool  # True: the canvas (a strip rendered by the sequencer); False: already in plate space


@dataclass(frozen=True)
class Plate:
    """The source as the worker resolved it: what to send, and the space its pixels live in."""

    clip: FileClip | None  # by path, when the server may read it
    upload: MappedClip
    geometry: StripGeometry
    indices: list[int]
    info: MediaInfo
    rate: Fraction
    timecode: str


class MovieReader:
    """A movie's frames in increasing order, decoded forward from where the last read stopped; it seeks only
    to go back or to jump far ahead, so a long-GOP file is not decoded again from a keyframe for every few
    frames. Frames are numbered as the project's decoders number them: round((pts − start) · time_base · rate).
    """

    AHEAD = 48  # a jump further than this seeks instead of decoding through

    def __init__(self, info: MediaInfo) -> None:
        self.info = info
        self._container: av.container.InputContainer | None = None
        self._decoded: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._position = -1
        self._last: tuple[int, np.ndarray] | None = None

    def read(self, index: int) -> np.ndarray:
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        for from_start in (False, True):
            if from_start or self._decoded is None or not self._position < index <= self._position + self.AHEAD:
                self._open(0 if from_start else index)
            for number, frame in self._decoded:
                if number < index:
                    self._position = number
                    continue
                if number == index:
                    self._position = number
                    pixels = frame_to_array(frame, self.info.has_alpha, self.info.deep)
                    self._last = number, upright(pixels, self.info.rotation)  # as Blender shows it
                    return self._last[1]
                break  # the seek landed past the frame: decode from the start instead
        raise MediaProblem(f"{self.info.path}: frame {index} could not be decoded; the file may be damaged")

    def _open(self, index: int) -> None:
        self.close()
        container = av.open(str(self.info.path))
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb, origin, rate = stream.time_base, stream.start_time or 0, self.info.rate
        if index > 0:
            container.seek(origin + int(Fraction(index) / rate / tb), stream=stream, backward=True, any_frame=False)
        self._container = container
        self._decoded = (
            (round((f.pts - origin) * tb * rate), f) for f in container.decode(stream) if f.pts is not None
        )
        self._position = -1

    def close(self) -> None:
        """Finish the decode generator while its container is open, then close the container."""
        if self._decoded is not None:
            self._decoded.close()
        if self._container is not None:
            self._container.close()
        self._container, self._decoded = None, None


class MappedClip:
    """A bridge clip over media frames ``indices`` (frame i of the clip is media frame ``indices[i]``).

    Frames are decoded on demand, one at a time (a movie forward through one open decoder), so a long range
    never sits in memory; repeats (held frames) reuse the decoded frame. ``convert`` turns decoded pixels
    into what the clip sends (RGB without alpha, or a matte in plate space).
    """

    def __init__(
        self,
        name: str,
        info: MediaInfo,
        indices: list[int],
        convert: Callable[[np.ndarray], np.ndarray] | None = None,
        size: tuple[int, int] | None = None,
        pixel: str | None = None,
    ) -> None:
        self.name, self.info, self.indices = name, info, indices
        self.convert = convert or (lambda pixels: pixels[..., :3])
        self.width, self.height = size or (info.width, info.height)
        self.pixel = pixel or ("rgb16" if info.deep else "rgb8")
        self.frames = len(indices)
        self.error: Exception | None = None  # what went wrong while uploading (gRPC only says the upload broke)
        self._movie = MovieReader(info) if info.kind == "video" else None

    def fresh(self) -> MappedClip:
        """The same clip with its own decoder. A refused request's upload thread can still be inside
        ``frame`` of the old one when the upload is tried again, so a retry never shares a decoder."""
        return MappedClip(self.name, self.info, self.indices, self.convert, (self.width, self.height), self.pixel)

    def frame(self, index: int) -> np.ndarray:
        wanted = self.indices[index]
        try:
            if self._movie is None:
                pixels = read_frames(self.info, wanted, wanted + 1)[0]
            else:
                pixels = self._movie.read(wanted)
                if index == self.frames - 1:
                    self._movie.close()  # the upload reads in order: the last frame is the end of it
            return self.convert(pixels)
        except Exception as exc:
            self.error = exc
            if self._movie is not None:
                self._movie.close()
            raise


def matte_values(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the alpha of a matte that has a real one, else its luma (Rec. 709)."""
    floating = np.issubdtype(pixels.dtype, np.floating)
    scale = 1.0 if floating else float(np.iinfo(pixels.dtype).max)
    x = np.clip(np.nan_to_num(pixels.astype(np.float32) / scale), 0.0, 1.0)
    if x.shape[-1] == 4 and (x[..., 3] < 1.0).any():
        return x[..., 3]
    return x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722


def rendered_matte_values(pixels: np.ndarray) -> np.ndarray:
    """A sequencer render's matte: its luma over black (straight RGBA PNG, so luma × alpha)."""
    x = pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max)
    luma = x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722
    return luma * x[..., 3] if x.shape[-1] == 4 else luma


def quantise(values: np.ndarray, deep: bool) -> np.ndarray:
    top = 65535 if deep else 255
    return np.rint(np.clip(values, 0.0, 1.0) * top).astype(np.uint16 if deep else np.uint8)


def is_exr(strip: MediaStrip) -> bool:
    return strip.kind == "images" and strip.files[0].lower().endswith(".exr")


def _exr_info(strip: MediaStrip, rate: Fraction) -> MediaInfo:
    """What the add-on needs of an EXR sequence (size and frames), from the first element's header."""
    width, height = display_size(strip.files[0])
    files = tuple(Path(f) for f in strip.files)
    return MediaInfo(files[0], "sequence", len(files), rate, width, height, False, True, None, "exr", files,
                     transfer="scene_linear")  # fmt: skip


def open_media(strip: MediaStrip, scene_rate: Fraction) -> tuple[MediaInfo, int]:
    """The strip's media as the decoders see it, and its length in frames less the hold offsets."""
    problem = retime_problem(strip.name, strip.timing)
    if problem:
        raise MediaProblem(problem)
    try:
        info = _exr_info(strip, scene_rate) if is_exr(strip) else probe(strip.files[0], scene_rate)
    except Exception as exc:  # MediaNotFoundError, UnreadableMediaError, ExrHeaderError, FFmpeg's own
        raise MediaProblem(f"{strip.name}: cannot read {strip.files[0]}: {exc}") from None
    if strip.kind == "images":  # exactly the strip's elements, in its order (not whatever else is in the folder)
        files = tuple(Path(f) for f in strip.files)
        info = dataclasses.replace(info, kind="sequence", frames=len(files), files=files, rate=scene_rate)
    length = info.frames - strip.timing.trim_start - strip.timing.trim_end
    if strip.kind == "movie":
        problem = rate_problem(strip.name, strip.timing, info.frames, info.rate, scene_rate)
        if problem:
            raise MediaProblem(problem)
    return info, length


def strip_frames(strip: MediaStrip, info: MediaInfo, length: int, start: int, end: int) -> list[int]:
    indices = media_indices(strip.timing, length, start, end)
    if max(indices) >= info.frames:
        raise MediaProblem(f"{strip.name} shows media frame {max(indices)} but its media has {info.frames}")
    return indices


def _server_range(strip: MediaStrip, info: MediaInfo, indices: list[int]) -> tuple[str, int, int] | None:
    """(path, start, end) naming the same frames to a server that probes the path itself, if one range does."""
    if strip.kind == "movie":
        span = contiguous(indices)
        return (strip.files[0], *span) if span else None
    try:
        found = sequence_files(Path(strip.files[0]))  # the numbered run the server will find beside the first element
    except Exception:
        return None
    if found is None:
        return None
    position = {p.resolve(): i for i, p in enumerate(found[0])}
    wanted = [position.get(info.files[i].resolve(), -1) for i in indices]
    span = contiguous(wanted) if min(wanted) >= 0 else None
    return (strip.files[0], *span) if span else None


def resolve_plate(strip: MediaStrip, start: int, end: int, scene_rate: Fraction) -> Plate:
    """The source strip's own frames for timeline frames [start, end), by path where one range names them."""
    info, length = open_media(strip, scene_rate)
    indices = strip_frames(strip, info, length, start, end)
    span = _server_range(strip, info, indices)
    clip = FileClip(strip.name, span[0], span[1], span[2]) if span else None
    movie = strip.kind == "movie"
    return Plate(
        clip=clip,
        upload=MappedClip(strip.name, info, indices),
        geometry=dataclasses.replace(strip.look, width=info.width, height=info.height),
        indices=indices,
        info=info,
        rate=info.rate if movie else scene_rate,
        timecode=(timecode_at(info.timecode, info.rate, indices[0]) or "") if movie else "",
    )


def rendered_plate(frames: RenderedFrames, canvas: tuple[int, int], scene_rate: Fraction) -> Plate:
    """A strip the sequencer rendered (no media of its own): opaque canvas-sized frames."""
    info = _rendered_info(frames, scene_rate)
    for i in range(info.frames):
        alpha = read_frames(info, i, i + 1)[0, ..., 3]
        if (alpha < np.iinfo(alpha.dtype).max).any():
            raise MediaProblem(
                f"{frames.name} is partly transparent where it is rendered (text, or a strip over nothing): "
                "KV-Lock edits opaque frames, so put it over a background first (e.g. in a meta strip with a "
                "colour strip beneath)"
            )
    indices = list(range(info.frames))
    return Plate(None, MappedClip(frames.name, info, indices), StripGeometry(*canvas), indices, info, scene_rate, "")


def _rendered_info(frames: RenderedFrames, rate: Fraction) -> MediaInfo:
    first = probe(frames.files[0], rate)
    files = tuple(Path(f) for f in frames.files)
    return dataclasses.replace(first, kind="sequence", frames=len(files), files=files, rate=rate)


def media_matte(
    strip: MediaStrip, plate: Plate, canvas: tuple[int, int], start: int, end: int, scene_rate: Fraction
) -> tuple[MappedClip, FileClip | None]:
    """The matte strip's own frames at the plate's pixels; and the matte by path, naming its own frames, when
    it sits exactly on the plate (same size and place, no crop), so the server reads the same pixels itself."""
    info, length = open_media(strip, scene_rate)
    indices = strip_frames(strip, info, length, start, end)
    geometry = dataclasses.replace(strip.look, width=info.width, height=info.height)
    deep = info.deep

    def convert(pixels: np.ndarray) -> np.ndarray:
        return quantise(matte_into_plate(matte_values(pixels), geometry, plate.geometry, canvas), deep)

    size = (plate.geometry.width, plate.geometry.height)
    clip = MappedClip(strip.name, info, indices, convert, size, "gray16" if deep else "gray8")
    aligned = is_identity(plate_to_matte(plate.geometry, geometry, canvas), plate.geometry, geometry)
    span = _server_range(strip, info, indices) if aligned else None
    if is_exr(strip) and span is None:
        raise MediaProblem(
            f"the matte {strip.name} is EXR and does not sit exactly on the plate (same size and place, its frames "
            "one run of its files): the add-on cannot decode EXR to carry it into the plate's pixels; give it the "
            "plate's size and placement, or render it to PNG"
        )
    return clip, FileClip(strip.name, *span) if span else None


def rendered_matte(frames: RenderedFrames, plate: Plate, canvas: tuple[int, int], scene_rate: Fraction) -> MappedClip:
    """A matte the sequencer rendered (canvas space) or rasterised at the plate's size (plate space)."""
    info = _rendered_info(frames, scene_rate)
    space = StripGeometry(*canvas) if frames.canvas_space else plate.geometry

    def convert(pixels: np.ndarray) -> np.ndarray:
        return quantise(matte_into_plate(rendered_matte_values(pixels), space, plate.geometry, canvas), False)

    size = (plate.geometry.width, plate.geometry.height)
    return MappedClip(frames.name, info, list(range(info.frames)), convert, size, "gray8")
