"""The size of an OpenEXR image, read from its header in plain Python.

Blender's Python has no OpenEXR package and the add-on never decodes an EXR plate itself (the server reads
its float values by path), but mapping a matte into the plate's pixels needs the plate's size: the display
window's. The header is the magic number 20000630, a version word, then attributes (name NUL, type NUL,
int32 size, value) up to an empty name; ``displayWindow`` is a box2i, four int32 (xMin, yMin, xMax, yMax),
inclusive (OpenEXR file layout, "Header Attributes"). A multi-part file's first header is read.
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = 20000630
LIMIT = 1 << 20  # a header larger than this is not a header


class ExrHeaderError(ValueError):
    """The file is not an OpenEXR image, or its header has no display window."""


def _text(data: bytes, at: int) -> tuple[str, int]:
    end = data.find(b"\0", at)
    if end < 0:
        raise ExrHeaderError("the header ends inside an attribute name")
    return data[at:end].decode("latin-1"), end + 1


def display_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image's display window."""
    with open(path, "rb") as f:
        data = f.read(LIMIT)
    if len(data) < 8 or struct.unpack_from("<i", data)[0] != MAGIC:
        raise ExrHeaderError(f"{path} is not an OpenEXR file")
    at = 8
    while at < len(data):
        name, at = _text(data, at)
        if not name:
            break
        kind, at = _text(data, at)
        if at + 4 > len(data):
            break
        (size,) = struct.unpack_from("<i", data, at)
        at += 4
        if name == "displayWindow" and kind == "box2i" and size == 16 and at + 16 <= len(data):
            x_min, y_min, x_max, y_max = struct.unpack_from("<4i", data, at)
            return x_max - x_min + 1, y_max - y_min + 1
        at += size
    raise ExrHeaderError(f"{path} has no display window in its header")
