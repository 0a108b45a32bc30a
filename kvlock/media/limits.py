"""How large a frame and a clip may be, judged from a file's header before one pixel is decoded.

A media file says how large it is before it is decoded — a PNG's IHDR, a GIF's logical screen, an EXR's
data and display windows, a movie's codec parameters — and it may lie: 68 bytes of PNG can claim
16000×16000 RGBA16, which a decoder would allocate (2 GiB) before finding out the data is missing. So every
reader in :mod:`kvlock.media` asks these limits first, from the header alone:

- ``max_side``: no frame wider or taller than this (8192);
- ``max_frame_bytes``: no frame whose pixels, as decoded, take more than this (256 MiB), and none of more
  than ``max_pixels`` = ``max_frame_bytes`` / 8 pixels (8 bytes: the widest integer pixel, 16-bit RGBA; at
  the default 2^25 = 33.5 million, e.g. 8192×4096 or 7680×4320). An EXR counts every channel over its data
  window (what OpenEXR decodes) and its colour over its display window. Decoders themselves are told to
  refuse frames of more than ``max_pixels`` before they allocate, as a backstop for formats whose header
  only FFmpeg reads;
- ``max_clip_bytes``: no range whose frames, decoded, take more than this in memory (16 GiB), since an edit
  holds its range; a file's claimed length counts here, and the frames are then checked to exist.

So reading or checking a file frame by frame holds two frames of at most ``max_frame_bytes`` at once (the
decoder's frame and its conversion), whatever the file claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import MediaTooLargeError

MIB = 1024**2
GIB = 1024**3
WIDEST_PIXEL = 8  # bytes of the widest integer pixel a decoder writes (16-bit RGBA)


@dataclass(frozen=True)
class MediaLimits:
    """The largest frame and range a reader accepts (see the module docstring)."""

    max_side: int = 8192
    max_frame_bytes: int = 256 * MIB
    max_clip_bytes: int = 16 * GIB

    def __post_init__(self) -> None:
        if self.max_side < 8 or self.max_frame_bytes < 64 * 64 * WIDEST_PIXEL or self.max_clip_bytes < 1:
            raise ValueError(f"media limits too small to read anything: {self}")

    @property
    def max_pixels(self) -> int:
        """Pixels a decoder may allocate for one frame (FFmpeg's ``max_pixels``)."""
        return max(1, self.max_frame_bytes // WIDEST_PIXEL)

    def check_frame(self, path: Path | str, width: int, height: int, pixel_bytes: float, what: str = "") -> None:
        """Refuse a frame of ``width``×``height`` pixels of ``pixel_bytes`` bytes each, as its header claims."""
        shown = f"{what} of {path}" if what else str(path)
        if width < 1 or height < 1:
            raise MediaTooLargeError(
                f"{shown}: its header gives a frame of {width}×{height} pixels; the file is damaged"
            )
        if width > self.max_side or height > self.max_side:
            raise MediaTooLargeError(
                f"{shown}: its header gives frames of {width}×{height} pixels; at most {self.max_side} a side are "
                "read (a damaged or hostile file, or a plate to scale down first)"
            )
        if width * height > self.max_pixels:
            raise MediaTooLargeError(
                f"{shown}: its header gives frames of {width}×{height} pixels; at most {self.max_pixels / 1e6:.1f} "
                "million pixels a frame are read (raise --max-frame-mb)"
            )
        size = width * height * pixel_bytes
        if size > self.max_frame_bytes:
            raise MediaTooLargeError(
                f"{shown}: a frame of {width}×{height} at {pixel_bytes:g} bytes a pixel is {size / MIB:.0f} MiB "
                f"decoded; at most {self.max_frame_bytes / MIB:.0f} MiB a frame is read (raise --max-frame-mb)"
            )

    def check_range(self, path: Path | str, frames: int, frame_bytes: float) -> None:
        """Refuse reading ``frames`` frames of ``frame_bytes`` each into memory at once."""
        size = frames * frame_bytes
        if size > self.max_clip_bytes:
            raise MediaTooLargeError(
                f"{path}: {frames} frames of {frame_bytes / MIB:.1f} MiB are {size / GIB:.1f} GiB decoded; at most "
                f"{self.max_clip_bytes / GIB:.1f} GiB are read at once: give a shorter range (or raise --max-clip-gb)"
            )


DEFAULT_LIMITS = MediaLimits()
