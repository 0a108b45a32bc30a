"""An OpenEXR file's header, read in plain Python before OpenEXR decodes a pixel.

Reading an EXR with the ``openexr`` package decodes every channel of the data window, so a 2.4 MB
ZIP-compressed file claiming 20000×20000 costs gigabytes, and so does a display window of 30000² around 64×48
of data (the pixels outside the data window are zeros the reader must allocate). The header states all of it:
the magic number 20000630, a version word whose flags mark tiled, deep and multi-part files, then attributes
(name NUL, type NUL, int32 size, value) up to an empty name (OpenEXR file layout, "Header Attributes").
Read here: ``channels`` (chlist: name NUL, int32 pixel type, uint8 pLinear, 3 reserved, int32 x/y sampling,
…, NUL), ``dataWindow`` and ``displayWindow`` (box2i, inclusive), ``compression`` (uint8), ``timeCode``
(two uint32, SMPTE packed BCD) and ``framesPerSecond`` (rational). Other attributes are skipped by their
size, so a large preview or metadata blob is never held.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UnreadableMediaError

MAGIC = 20000630
DEEP, MULTIPART = 0x800, 0x1000
MAX_ATTRIBUTES = 10_000
MAX_NAME = 256
PIXEL_BYTES = {0: 4, 1: 2, 2: 4}  # UINT, HALF, FLOAT
PIXEL_NAMES = {0: "UINT", 1: "HALF", 2: "FLOAT"}
COMPRESSIONS = ("NO", "RLE", "ZIPS", "ZIP", "PIZ", "PXR24", "B44", "B44A", "DWAA", "DWAB", "HTJ2K256", "HTJ2K32")
WANTED = {  # the attributes read, and the sizes their values may have (a chlist: up to 4096 long names)
    "channels": (1, 4096 * (MAX_NAME + 17) + 1),
    "dataWindow": (16, 16),
    "displayWindow": (16, 16),
    "compression": (1, 1),
    "timeCode": (8, 8),
    "framesPerSecond": (8, 8),
}


@dataclass(frozen=True)
class Window:
    """An EXR box (inclusive corners, absolute pixel coordinates)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def of(cls, box: Any) -> Window:
        (x0, y0), (x1, y1) = box
        return cls(int(x0), int(y0), int(x1), int(y1))

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    def box(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.x0, self.y0), (self.x1, self.y1)

    def union(self, other: Window) -> Window:
        return Window(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1))

    def intersection(self, other: Window) -> Window | None:
        w = Window(max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1), min(self.y1, other.y1))
        return w if w.x0 <= w.x1 and w.y0 <= w.y1 else None

    def slices_in(self, outer: Window) -> tuple[slice, slice]:
        """Rows and columns of this window inside an array that covers ``outer``."""
        return (
            slice(self.y0 - outer.y0, self.y1 - outer.y0 + 1),
            slice(self.x0 - outer.x0, self.x1 - outer.x0 + 1),
        )


@dataclass(frozen=True)
class Channel:
    pixel_type: int  # 0 UINT, 1 HALF, 2 FLOAT
    x_sampling: int
    y_sampling: int


@dataclass(frozen=True)
class ExrHeader:
    """What a single-part file's header says (``multipart`` and ``deep`` files are only recognised)."""

    multipart: bool
    deep: bool
    channels: dict[str, Channel]
    data: Window | None
    display: Window | None
    compression: int | None
    timecode: str | None
    rate: Fraction | None


def _text(handle: BinaryIO) -> str:
    raw = bytearray()
    while (byte := handle.read(1)) not in (b"", b"\0"):
        raw += byte
        if len(raw) > MAX_NAME:
            raise ValueError("an attribute name or type is longer than 255 bytes")
    if byte == b"":
        raise ValueError("the header ends inside an attribute name")
    return raw.decode("latin-1")


def _channels(value: bytes) -> dict[str, Channel]:
    channels, at = {}, 0
    while at < len(value) and value[at] != 0:
        end = value.index(b"\0", at)
        name = value[at:end].decode("latin-1")
        pixel_type, _, xs, ys = struct.unpack_from("<iB3xii", value, end + 1)
        channels[name] = Channel(pixel_type, xs, ys)
        at = end + 1 + 16
    return channels


def _timecode(value: bytes) -> str:
    """SMPTE text of a packed ``timeCode`` (BCD: frame, seconds, minutes, hours; bit 6 drop-frame)."""
    (packed,) = struct.unpack_from("<I", value)

    def bcd(shift: int, tens_bits: int) -> int:
        return ((packed >> (shift + 4)) & ((1 << tens_bits) - 1)) * 10 + ((packed >> shift) & 0xF)

    frame, seconds, minutes, hours = bcd(0, 2), bcd(8, 3), bcd(16, 3), bcd(24, 2)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{';' if packed & 0x40 else ':'}{frame:02d}"


def _parse(name: str, value: bytes) -> Any:
    if name == "channels":
        return _channels(value)
    if name in ("dataWindow", "displayWindow"):
        x0, y0, x1, y1 = struct.unpack_from("<4i", value)
        return Window(x0, y0, x1, y1)
    if name == "compression":
        return value[0]
    if name == "timeCode":
        return _timecode(value)
    num, den = struct.unpack_from("<iI", value)  # framesPerSecond
    return Fraction(num, den) if num > 0 and den > 0 else None


def _attributes(handle: BinaryIO, size: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for _ in range(MAX_ATTRIBUTES):
        name = _text(handle)
        if not name:
            return found
        _text(handle)  # the type: the wanted names have one type each
        (length,) = struct.unpack("<i", handle.read(4))
        if not 0 <= length <= size:
            raise ValueError(f"attribute {name!r} claims {length} bytes")
        if name in WANTED:
            least, most = WANTED[name]
            if not least <= length <= most:
                raise ValueError(f"attribute {name!r} claims {length} bytes")
            value = handle.read(length)
            if len(value) != length:
                raise ValueError(f"attribute {name!r} is cut short")
            found[name] = _parse(name, value)
        else:
            handle.seek(length, 1)
    raise ValueError(f"more than {MAX_ATTRIBUTES} attributes")


def read_header(path: Path) -> ExrHeader:
    """The header of ``path``; raise :class:`UnreadableMediaError` if it is not an EXR or is damaged."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            magic, version = struct.unpack("<iI", handle.read(8))
            if magic != MAGIC:
                raise ValueError("it is not an OpenEXR file")
            if version & MULTIPART:
                return ExrHeader(True, bool(version & DEEP), {}, None, None, None, None, None)
            found = _attributes(handle, size)
    except (ValueError, struct.error) as error:
        raise UnreadableMediaError(f"{path}: its EXR header is damaged ({error})") from None
    except OSError as error:
        raise UnreadableMediaError(f"cannot read {path}: {error.strerror or error}") from None
    return ExrHeader(
        multipart=False,
        deep=bool(version & DEEP),
        channels=found.get("channels", {}),
        data=found.get("dataWindow"),
        display=found.get("displayWindow"),
        compression=found.get("compression"),
        timecode=found.get("timeCode"),
        rate=found.get("framesPerSecond"),
    )
