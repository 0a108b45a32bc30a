"""OpenFX-style clips and parameters: what a host hands the bridge for one render.

A clip is a named stream of frames (``Source``, ``Matte``) the host can produce on demand, so a host
renders frames only as the upload needs them; or a file the server reads itself when both share a disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from kvlock.settings import EditSettings

PIXELS = {"rgb8": (3, np.uint8), "rgb16": (3, np.dtype("<u2")), "gray8": (1, np.uint8), "gray16": (1, np.dtype("<u2"))}


class Clip(Protocol):
    """Frames a host renders on request; ``frame(i)`` is the i-th frame of the range, row-major."""

    name: str
    frames: int
    width: int
    height: int
    pixel: str

    def frame(self, index: int) -> np.ndarray: ...


@dataclass
class ArrayClip:
    """A clip over frames already in memory: (T, H, W, C) uint8/uint16 (C = 3, or 1 for a matte)."""

    name: str
    data: np.ndarray

    def __post_init__(self) -> None:
        if self.data.ndim == 3:
            self.data = self.data[..., None]
        if self.data.ndim != 4 or self.data.shape[-1] not in (1, 3) or self.data.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f"{self.name}: frames must be uint8/uint16 (T, H, W, 1|3), got {self.data.dtype} {self.data.shape}"
            )

    @property
    def frames(self) -> int:
        return self.data.shape[0]

    @property
    def height(self) -> int:
        return self.data.shape[1]

    @property
    def width(self) -> int:
        return self.data.shape[2]

    @property
    def pixel(self) -> str:
        kind = "rgb" if self.data.shape[-1] == 3 else "gray"
        return f"{kind}{8 if self.data.dtype == np.uint8 else 16}"

    def frame(self, index: int) -> np.ndarray:
        return self.data[index]


@dataclass(frozen=True)
class FileClip:
    """Media the server reads from its own disk (under its media roots).

    ``start``/``end`` are this file's own frames, [start, end) (end None or 0: to its end). For a matte they
    count the matte file's frames, not the source's, so a matte clip slipped against its source keeps its own
    offset. A source with neither set is read whole; a matte with neither set follows the source's range.
    """

    name: str
    path: str
    start: int | None = None
    end: int | None = None

    @property
    def ranged(self) -> bool:
        return self.start is not None or bool(self.end)


@dataclass
class Params:
    """The render's parameters; ``settings`` is an ``EditSettings`` (checked here, before anything is sent)
    or a dict of its fields by name (the server checks it). With ``settings`` erase the prompt may be empty."""

    prompt: str
    model: str = "tiny"
    settings: EditSettings | dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    codec: str = "ffv1"
    region: bool = False
    plate: bool = False  # also the clean plate, alpha = seen (1) or invented (0)
    matte_options: dict[str, Any] = field(default_factory=dict)
    rate: Fraction = Fraction(24)
    timecode: str = ""


def frames_needed(start: int, end: int) -> list[int]:
    """The source frames a render of [start, end) needs: exactly those (KV-Lock has no temporal margin)."""
    if end <= start:
        raise ValueError(f"empty frame range [{start}, {end})")
    return list(range(start, end))


def frame_bytes(clip: Clip, index: int) -> bytes:
    """One frame as the wire's raw layout (16-bit little-endian), checked against the clip's declaration."""
    channels, dtype = PIXELS[clip.pixel]
    array = np.asarray(clip.frame(index))
    if array.ndim == 2:
        array = array[..., None]
    expected = (clip.height, clip.width, channels)
    if array.shape != expected:
        raise ValueError(f"{clip.name} frame {index} is {array.shape}, expected {expected}")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
