"""How a plate's pixel values become the model's display-referred pixels in [0, 1], and how an edit goes back.

The models were trained on display-referred video (sRGB/BT.709-encoded frames). Plates come either that way
already (8/10/12/16-bit code values: divide by white, multiply back) or in scene-linear light (EXR, and any
plate a host says is linear), where values above 1.0 (highlights) and below 0.0 (out-of-gamut colours) are
normal. For those, the model sees the plate through one fixed view transform, and its edit is mapped back
through the exact inverse:

    display = shoulder(srgb_oetf(max(linear, 0)))          linear = srgb_eotf(unshoulder(display))

- ``srgb_oetf`` is the sRGB transfer curve (IEC 61966-2-1), continued above 1.0 by the same power law.
- ``shoulder`` is the identity up to ``knee`` (display 0.8) and above it a rational soft clip,
  k + (1 − k)·u / (1 + c·u) with u = (d − k)/(1 − k), that is smooth at the knee and lands the encoded
  ``ceiling`` (linear 16.0 by default, four stops above diffuse white) exactly on display 1.0. It has a
  closed-form inverse, so a highlight the model leaves alone comes back to within the model's precision,
  expanded again; linear 1.0 is shown at display 0.90.
- What the model cannot be shown — values above the ceiling, below 0.0, NaN or infinite — is clipped for the
  model only. Outside the feathered matte the plate's own values are kept bit for bit whatever they are;
  inside it the edit replaces them, so there they end up in [0, ceiling].

The composite is done in the plate's own encoding (linear light for linear plates), which is what a
compositor would do; only the model's input and output go through the transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

DEFAULT_KNEE = 0.8
DEFAULT_CEILING = 16.0
TRANSFERS = ("display", "scene_linear")


def srgb_oetf(linear: np.ndarray) -> np.ndarray:
    """Linear light (≥ 0) → the sRGB-encoded value, continued above 1.0 by the same power law."""
    x = np.maximum(linear, 0.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def srgb_eotf(encoded: np.ndarray) -> np.ndarray:
    """The inverse of :func:`srgb_oetf` (for encoded values ≥ 0)."""
    d = np.maximum(encoded, 0.0)
    return np.where(d <= 0.04045, d / 12.92, np.power((d + 0.055) / 1.055, 2.4))


def _shoulder_slope(knee: float, top: float) -> float:
    """c of the soft clip that maps encoded ``top`` to display 1.0 (0 when there is nothing above 1)."""
    span = (top - knee) / (1.0 - knee)
    return 1.0 - 1.0 / span if span > 1.0 else 0.0


def shoulder(encoded: np.ndarray, knee: float, top: float) -> np.ndarray:
    """Encoded values in [0, top] → [0, 1]: identity up to ``knee``, a rational soft clip above."""
    d = np.clip(encoded, 0.0, top)
    c = _shoulder_slope(knee, top)
    u = np.maximum(d - knee, 0.0) / (1.0 - knee)
    return np.where(d <= knee, d, knee + (1.0 - knee) * u / (1.0 + c * u))


def unshoulder(display: np.ndarray, knee: float, top: float) -> np.ndarray:
    """The exact inverse of :func:`shoulder`: display values in [0, 1] → encoded values in [0, top]."""
    y = np.clip(display, 0.0, 1.0)
    c = _shoulder_slope(knee, top)
    g = np.maximum(y - knee, 0.0) / (1.0 - knee)
    u = g / np.maximum(1.0 - c * g, 1e-12)
    return np.where(y <= knee, y, knee + (1.0 - knee) * u)


class PixelEncoding(Protocol):
    """What the engine needs to know about a plate's numbers: the way to the model and back."""

    name: str

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        """Plate values → float32 display-referred values in [0, 1] (what the model sees)."""
        ...

    def from_model(self, values: np.ndarray) -> np.ndarray:
        """Model values in [0, 1] → float32 in the plate's own units (rounded to its dtype by the composite)."""
        ...


@dataclass(frozen=True)
class DisplayReferred:
    """Code values that already are display-referred: white is ``white`` (255, 65535, or 1.0 for floats)."""

    white: float = 1.0
    name: str = "display"

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(pixels, dtype=np.float32) / np.float32(self.white), 0.0, 1.0)

    def from_model(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32) * np.float32(self.white)


@dataclass(frozen=True)
class SceneLinear:
    """Scene-linear light where ``white`` in the array is linear 1.0; see the module docstring for the curve."""

    white: float = 1.0
    knee: float = DEFAULT_KNEE
    ceiling: float = DEFAULT_CEILING
    name: str = "scene_linear"

    def __post_init__(self) -> None:
        if not 0.0 < self.knee < 1.0:
            raise ValueError(f"the view transform's knee must be in (0, 1), got {self.knee}")
        if not 1.0 <= self.ceiling <= 65504.0:
            raise ValueError(f"the highlight ceiling must be in [1, 65504] (linear), got {self.ceiling}")

    @property
    def _top(self) -> float:
        return float(srgb_oetf(np.float64(self.ceiling)))

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        linear = np.asarray(pixels, dtype=np.float64) / self.white
        linear = np.nan_to_num(linear, nan=0.0, posinf=self.ceiling, neginf=0.0)
        return shoulder(srgb_oetf(linear), self.knee, self._top).astype(np.float32)

    def from_model(self, values: np.ndarray) -> np.ndarray:
        encoded = unshoulder(np.asarray(values, dtype=np.float64), self.knee, self._top)
        return (srgb_eotf(encoded) * self.white).astype(np.float32)


def white_of(dtype: np.dtype) -> float:
    """The value of white (display) or of linear 1.0 for a pixel type: its maximum for integers, 1.0 for floats."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def encoding_for(
    dtype: np.dtype, transfer: str = "display", ceiling: float = DEFAULT_CEILING
) -> DisplayReferred | SceneLinear:
    """The encoding of a plate of ``dtype`` whose values are ``transfer`` ("display" or "scene_linear").

    An integer linear plate cannot hold values above 1.0, so its ceiling is 1.0 (no shoulder at all).
    """
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, got {transfer!r}")
    white = white_of(np.dtype(dtype))
    if transfer == "display":
        return DisplayReferred(white)
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    return SceneLinear(white, ceiling=1.0 if integer else ceiling)


def display_code_values(pixels: np.ndarray, encoding: PixelEncoding, dtype: np.dtype = np.uint16) -> np.ndarray:
    """A plate as display-referred integers (what a display-referred codec can store): the model's view of it."""
    white = white_of(np.dtype(dtype))
    return np.rint(encoding.to_model(pixels) * white).astype(dtype)
