"""A movie's display rotation: phones and some cameras store frames as the sensor reads them and tag the turn a
player must apply (the display matrix). Frames are read here as they are shown — the way FFmpeg's tools,
players and Blender's movie strips (Blender 5 reports and draws the turned size) show them — so a matte drawn
over the picture an editor sees lines up with the frames, and the result is written upright with no tag: an
NLE that places it over the source shows both the same way round.

Only quarter turns are read (what cameras write); another angle is refused with what to do. Mirroring in a
display matrix is not applied (no camera writes it; FFmpeg's own tools ignore it unless asked).
"""

from __future__ import annotations

from pathlib import Path

import av
import av.logging
import numpy as np

from ..errors import UnreadableMediaError

SEARCH_PACKETS = 64  # packets decoded at most to meet the first frame (its side data carries the matrix)


def quarter_turns(degrees: float, path: Path) -> int:
    """``degrees`` counter-clockwise as 0, 90, 180 or 270; refused if it is not a quarter turn (within a degree:
    the matrix is fixed-point, and what reads it may truncate)."""
    nearest = round(degrees / 90) * 90
    if abs(degrees - nearest) > 1:
        raise UnreadableMediaError(
            f"{path}: its display matrix turns the picture by {round(degrees)}°; only quarter turns are read — "
            "re-encode it upright (ffmpeg rotates it while re-encoding)"
        )
    return nearest % 360


def display_rotation(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path) -> int:
    """The counter-clockwise turn (0, 90, 180, 270) that shows ``stream``'s frames upright.

    FFmpeg hands a stream's display matrix to every decoded frame, and PyAV reads it from frames only, so the
    first frame is decoded (within the limits the container was opened with). A stream that yields no frame
    in its first packets, or is damaged there, is taken as upright: its reading refuses it if it is damaged.
    """
    with av.logging.Capture():  # damage is reported, with its frame, where frames are read
        for count, packet in enumerate(container.demux(stream)):
            if count >= SEARCH_PACKETS:
                break
            try:
                frames = packet.decode()
            except av.FFmpegError:
                return 0
            if frames:
                return quarter_turns(frames[0].rotation, path)
    return 0


def stored_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """The stored frame's (width, height) for a shown ``width``×``height`` after ``rotation``."""
    return (height, width) if rotation in (90, 270) else (width, height)


def upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """A stored frame (H, W, C) turned ``rotation`` degrees counter-clockwise, as it is shown."""
    if not rotation:
        return pixels
    return np.ascontiguousarray(np.rot90(pixels, rotation // 90))
