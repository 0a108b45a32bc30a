"""The size of an image, read from its header by hand, before any decoder sees the file.

FFmpeg learns a still image's size by decoding it (``avformat_find_stream_info`` runs the decoder on the
first frame), so a 68-byte PNG whose IHDR claims 16000×16000 RGBA16 costs 2 GiB just to open, and a GIF of
a few bytes with an 8000×8000 logical screen costs 256 MiB a frame. Here the few bytes that state the size
are read directly — PNG's IHDR, GIF's logical screen, TIFF's first IFD, JPEG's SOF, BMP's DIB header, DPX's
image header — so :class:`~kvlock.media.limits.MediaLimits` can refuse the file before it is opened by a
decoder. Files are recognised by their first bytes, not by their names, so a PNG called ``clip.mov`` is
judged as a PNG. EXR headers are read by :mod:`.exr`.

``pixel_bytes`` is what one pixel costs decoded: the larger of the format as stored and the RGB(A) 8/16-bit
pixels the product converts it to.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import UnreadableMediaError

HEAD_BYTES = 1024  # the first bytes, where every header read here begins (JPEG's and TIFF's are followed)
MAX_SEGMENTS = 1000  # JPEG segments walked to find the frame header
EXR_MAGIC = b"\x76\x2f\x31\x01"


@dataclass(frozen=True)
class ImageHeader:
    """An image's size as its header states it."""

    kind: str
    width: int
    height: int
    pixel_bytes: int


def _decoded_bytes(stored_channels: int, bits: int, alpha: bool) -> int:
    """The larger of the stored pixel and the RGB(A) pixel it is converted to."""
    sample = max(1, (bits + 7) // 8)
    target = (4 if alpha else 3) * (2 if bits > 8 else 1)
    return max(stored_channels * sample, target)


def _png(head: bytes, handle: BinaryIO) -> ImageHeader:
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ValueError("the first chunk is not a complete IHDR")
    width, height, bits, colour = struct.unpack(">IIBB", head[16:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None:
        raise ValueError(f"colour type {colour} is not one PNG defines")
    return ImageHeader("png", width, height, _decoded_bytes(channels, bits, alpha=colour in (3, 4, 6)))


def _gif(head: bytes, handle: BinaryIO) -> ImageHeader:
    if len(head) < 10:
        raise ValueError("the logical screen descriptor is cut short")
    width, height = struct.unpack("<HH", head[6:10])
    return ImageHeader("gif", width, height, 4)  # decoded as BGRA over the whole logical screen


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG: the types the size tags use


def _tiff_values(handle: BinaryIO, order: str, kind: int, count: int, field: bytes) -> list[int]:
    if kind not in _TIFF_TYPES or not 0 < count <= 64:
        raise ValueError(f"a size tag has type {kind} and {count} values")
    code, size = _TIFF_TYPES[kind]
    data = field[: count * size]
    if count * size > 4:  # stored elsewhere: the field is an offset
        handle.seek(struct.unpack(order + "I", field)[0])
        data = handle.read(count * size)
    if len(data) != count * size:
        raise ValueError("a size tag points past the end of the file")
    return list(struct.unpack(order + code * count, data))


def _tiff(head: bytes, handle: BinaryIO) -> ImageHeader:
    order = "<" if head[:2] == b"II" else ">"
    if struct.unpack(order + "H", head[2:4])[0] != 42:
        raise ValueError("BigTIFF and other TIFF variants are not read")
    handle.seek(struct.unpack(order + "I", head[4:8])[0])
    raw = handle.read(2)
    if len(raw) != 2:
        raise ValueError("the first IFD is past the end of the file")
    count = struct.unpack(order + "H", raw)[0]
    entries = handle.read(12 * count)
    if len(entries) != 12 * count:
        raise ValueError("the first IFD is cut short")
    tags: dict[int, tuple[int, int, bytes]] = {}
    for k in range(count):
        tag, kind, n = struct.unpack(order + "HHI", entries[12 * k : 12 * k + 8])
        tags[tag] = (kind, n, entries[12 * k + 8 : 12 * k + 12])
    value = {tag: _tiff_values(handle, order, *tags[tag]) for tag in (256, 257, 258, 277) if tag in tags}
    if 256 not in value or 257 not in value:
        raise ValueError("the first IFD has no ImageWidth or ImageLength")
    channels = value.get(277, [1])[0]
    bits = max(value.get(258, [1]))
    return ImageHeader("tiff", value[256][0], value[257][0], _decoded_bytes(channels, bits, alpha=channels in (2, 4)))


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(head: bytes, handle: BinaryIO) -> ImageHeader:
    """Walk the segments (each a marker and a 16-bit length) to the frame header (SOFn), skipping the rest:
    EXIF, ICC profiles and thumbnails may come first and be large."""
    at = 2
    for _ in range(MAX_SEGMENTS):
        handle.seek(at)
        marker = handle.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            raise ValueError(f"no segment marker at byte {at}")
        if marker[1] == 0xFF:  # fill byte
            at += 1
            continue
        length = struct.unpack(">H", marker[2:4])[0]
        if marker[1] in _SOF:
            frame = handle.read(6)
            if len(frame) < 6:
                raise ValueError("the frame header is cut short")
            bits, height, width, channels = struct.unpack(">BHHB", frame)
            return ImageHeader("jpeg", width, height, _decoded_bytes(channels, bits, alpha=False))
        if marker[1] == 0xDA or length < 2:
            raise ValueError("the image data starts before any frame header")
        at += 2 + length
    raise ValueError(f"no frame header in the first {MAX_SEGMENTS} segments")


def _bmp(head: bytes, handle: BinaryIO) -> ImageHeader:
    if len(head) < 30:
        raise ValueError("the bitmap header is cut short")
    size = struct.unpack("<I", head[14:18])[0]
    if size == 12:
        width, height, _, bits = struct.unpack("<HHHH", head[18:26])
    else:
        width, height, _, bits = struct.unpack("<iiHH", head[18:30])
    return ImageHeader("bmp", abs(width), abs(height), max(4, (bits + 7) // 8))


def _dpx(head: bytes, handle: BinaryIO) -> ImageHeader:
    if len(head) < 804:
        raise ValueError("the image header is cut short")
    order = ">" if head[:4] == b"SDPX" else "<"
    width, height = struct.unpack(order + "II", head[772:780])
    descriptor, bits = head[800], head[803]
    channels = 4 if descriptor in (51, 52) else 3
    return ImageHeader("dpx", width, height, _decoded_bytes(channels, bits, alpha=channels == 4))


_MAGIC: tuple[tuple[bytes, Callable[[bytes, BinaryIO], ImageHeader]], ...] = (
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"GIF87a", _gif),
    (b"GIF89a", _gif),
    (b"II*\x00", _tiff),
    (b"MM\x00*", _tiff),
    (b"II+\x00", _tiff),
    (b"MM\x00+", _tiff),
    (b"\xff\xd8\xff", _jpeg),
    (b"BM", _bmp),
    (b"SDPX", _dpx),
    (b"XPDS", _dpx),
)


def image_header(path: Path) -> ImageHeader | None:
    """The size an image file's header states, or None when its first bytes are of no format read here."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
            for magic, reader in _MAGIC:
                if head.startswith(magic):
                    return reader(head, handle)
    except (ValueError, struct.error) as error:
        raise UnreadableMediaError(f"{path}: its image header is damaged ({error})") from None
    except OSError as error:
        raise UnreadableMediaError(f"cannot read {path}: {error.strerror or error}") from None
    return None
