"""Opening and decoding client media with FFmpeg (PyAV) so that no file can cost more than the limits allow
and no damage passes silently.

- **Before a decoder runs.** FFmpeg decodes a still image to learn its size when it opens it, so an image
  (recognised by its first bytes, whatever its name) has its header checked against the limits first
  (:mod:`.headers`, :mod:`.exr_header`). Every file is then opened with FFmpeg's ``max_pixels`` set to the
  limits' pixel count, so no decoder allocates a larger frame, whatever a header says later in the stream.
- **One thread, errors attributed.** A decoder that meets damage (slice CRC mismatches in FFV1, invalid
  NAL units, truncated data) often conceals it and logs an error instead of failing, so a file that is 99 %
  garbage decodes "fine". Decoding here runs on the calling thread only (``thread_count = 1``: no frame
  threads holding extra frames, and every message is logged on this thread), with FFmpeg's error-level
  messages captured per packet and handed out with the next frame the decoder returns; the caller decides
  whether that frame matters (:func:`decoded`).
- Every FFmpeg exception is turned into :class:`~kvlock.errors.UnreadableMediaError` naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import av.logging
import numpy as np

from ..errors import UnreadableMediaError
from .exr import checked_header
from .exr_header import MAGIC as EXR_MAGIC
from .headers import image_header
from .limits import MediaLimits

MAX_REPORTED = 3  # decoder messages quoted in a refusal


def _log_errors() -> None:
    """Have FFmpeg hand error-level messages to PyAV (which ignores all of them by default), each one
    (identical messages of two threads are otherwise merged into one and could be lost to a capture)."""
    level = av.logging.get_level()
    if level is None or level < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)


def check_header(path: Path, limits: MediaLimits) -> None:
    """Refuse an image (by its first bytes) whose header claims frames beyond ``limits``."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if len(magic) == 4 and int.from_bytes(magic, "little") == EXR_MAGIC:
        checked_header(path, limits)
        return
    header = image_header(path)
    if header is not None:
        limits.check_frame(path, header.width, header.height, header.pixel_bytes)


def open_input(path: Path, limits: MediaLimits) -> av.container.InputContainer:
    """``path`` opened for decoding its first video stream, its header checked first (see the module)."""
    _log_errors()
    try:
        check_header(path, limits)
    except OSError as error:
        raise UnreadableMediaError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        with av.logging.Capture() as logs:  # said while probing: quoted only if the file is refused
            container = av.open(str(path), options={"max_pixels": str(limits.max_pixels)})
    except av.FFmpegError as exc:
        raise UnreadableMediaError(f"cannot open {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise UnreadableMediaError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    stream.codec_context.thread_count = 1
    ctx = stream.codec_context
    if not (ctx.width and ctx.height and ctx.pix_fmt):  # the decoder refused the size before allocating it
        container.close()
        said = "; ".join(_errors(logs)[:MAX_REPORTED]) or "no reason given"
        raise UnreadableMediaError(
            f"{path}: the decoder cannot open its frames ({said}): they are over {limits.max_pixels / 1e6:.1f} "
            "million pixels (raise --max-frame-mb), or the file is damaged"
        )
    return container


def format_depth(fmt: av.VideoFormat) -> tuple[bool, bool]:
    """Whether frames of ``fmt`` have alpha, and more than 8 bits per channel."""
    comps = fmt.components
    has_alpha = any(c.is_alpha for c in comps)
    deep = max((c.bits for c in comps), default=8) > 8 or "f32" in fmt.name or "f16" in fmt.name
    return has_alpha, deep


def stored_pixel_bytes(fmt: av.VideoFormat) -> int:
    """An upper bound of the bytes a decoder's frame of ``fmt`` takes per pixel (chroma planes counted full)."""
    return sum((c.bits + 7) // 8 for c in fmt.components) or 4


def _target_format(has_alpha: bool, deep: bool) -> str:
    if deep:
        return "rgba64le" if has_alpha else "rgb48le"
    return "rgba" if has_alpha else "rgb24"


def frame_to_array(frame: av.VideoFrame, has_alpha: bool, deep: bool) -> np.ndarray:
    """RGB(A) uint8/uint16 pixels of one decoded frame, with the right YUV matrix and range."""
    target = _target_format(has_alpha, deep)
    try:
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
    except (ValueError, av.FFmpegError) as exc:
        raise UnreadableMediaError(f"a {frame.format.name} frame cannot be converted to RGB: {exc}") from None


_WHEN = re.compile(r"^at \d+(\.\d+)? seconds$")  # FFmpeg's second line of a message: when, not what


def _errors(logs: list[tuple[int, str, str]]) -> list[str]:
    said = (message.strip() for level, _, message in logs if level <= av.logging.ERROR)
    return [text for text in said if text and not _WHEN.match(text)]


def decoded(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    path: Path,
    number: Callable[[av.VideoFrame], int] = lambda frame: 0,
) -> Iterator[tuple[av.VideoFrame | None, list[str]]]:
    """Every frame the decoder returns, in order, with the error messages it logged since the frame before;
    at the end ``(None, messages)`` if it logged any after the last frame. ``number`` names a frame in a
    refusal.

    Messages are captured around each packet only, never across a ``yield``, so two of these read in turn on
    one thread keep their messages apart."""
    pending: list[str] = []
    packets = container.demux(stream)
    last = -1
    while True:
        with av.logging.Capture() as logs:
            try:
                packet = next(packets, None)
                frames = packet.decode() if packet is not None else []
            except av.FFmpegError as exc:
                raise UnreadableMediaError(f"{path}: frame {last + 1} cannot be decoded: {exc}") from None
        pending += _errors(logs)
        if packet is None:
            if pending:
                yield None, pending
            return
        for frame in frames:
            if frame.pts is not None:
                last = number(frame)
            yield frame, pending
            pending = []


def damage(path: Path, index: int | str, messages: list[str]) -> UnreadableMediaError:
    """The refusal of a frame the decoder reported damage in."""
    more = len(messages) - MAX_REPORTED
    shown = "; ".join(messages[:MAX_REPORTED]) + (f" (and {more} more)" if more > 0 else "")
    return UnreadableMediaError(f"{path}: frame {index} is damaged; the decoder reported: {shown}")
