"""Loading a matte for a source range: from a grayscale video, an RGBA video's alpha, an image sequence
or one still, with threshold / invert / dilate options.

Length rules (the documented repairs, in :mod:`.matte_frames`, which also honours a matte's own range): a
still is used for every frame; a matte clip as long as the source is read over the same range; a matte exactly
as long as the range (already trimmed) is used as is. Anything else is an error that gives both lengths. A
matte of another size is an error, unless ``resize`` is asked for and the aspect ratios agree (a
proxy-resolution matte): then it is scaled, with a warning.

NumPy only (no torch): the client wheel ships this module to hosts' own Pythons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MatteError
from .decode import MediaInfo, read_frames
from .matte_frames import matte_frames

CHANNELS = ("auto", "alpha", "luma", "red", "green", "blue")


@dataclass(frozen=True)
class MatteOptions:
    channel: str = "auto"
    threshold: float | None = None
    invert: bool = False
    dilate: int = 0
    resize: bool = False


def _max_filter(values: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """The maximum over a window of 2·radius + 1 along ``axis`` (the window cut at the edges, as a
    max-pool padded with −∞ cuts it): 2·radius shifted maxima, whatever the frame's size."""
    out = values.copy()
    length = values.shape[axis]
    for shift in range(1, min(radius, length - 1) + 1):
        ahead = [slice(None)] * values.ndim
        behind = [slice(None)] * values.ndim
        ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
        np.maximum(out[tuple(ahead)], values[tuple(behind)], out=out[tuple(ahead)])
        np.maximum(out[tuple(behind)], values[tuple(ahead)], out=out[tuple(behind)])
    return out


def dilate(matte: np.ndarray, radius: int) -> np.ndarray:
    """A (N, H, W) matte grown by ``radius`` pixels: a square max filter, done as a max over rows then over
    columns (2·radius work per pixel instead of radius²)."""
    return _max_filter(_max_filter(matte, radius, 1), radius, 2)


def _resample_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of an antialiased linear resample: a triangle filter, widened by the
    scale when shrinking so every input pixel counts (the filter PIL's and torch's antialiased bilinear use)."""
    scale = size_in / size_out
    support = max(1.0, scale)
    centres = (np.arange(size_out) + 0.5) * scale
    taps = np.arange(size_in) + 0.5
    weights = np.clip(1.0 - np.abs(taps[None, :] - centres[:, None]) / support, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def resize(matte: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (N, H, W) float matte resampled to (N, height, width), antialiased."""
    rows = _resample_weights(matte.shape[1], height).astype(np.float32)
    cols = _resample_weights(matte.shape[2], width).astype(np.float32)
    return np.einsum("hy,nyx,wx->nhw", rows, matte.astype(np.float32), cols, optimize=True)


def pick_channel(pixels: np.ndarray, channel: str) -> np.ndarray:
    """(N, H, W, C) pixels → (N, H, W) float32 in [0, 1] from the chosen channel (EXR mattes: clipped, NaN → 0)."""
    if np.issubdtype(pixels.dtype, np.integer):
        x = pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max)
    else:
        x = np.clip(np.nan_to_num(pixels.astype(np.float32)), 0.0, 1.0)
    if channel == "auto":
        channel = "alpha" if x.shape[-1] == 4 and (x[..., 3] < 1.0).any() else "luma"
    if channel == "alpha":
        if x.shape[-1] != 4:
            raise MatteError("matte has no alpha channel; use --matte-channel luma (or red/green/blue)")
        return x[..., 3]
    if channel == "luma":
        return x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722
    return x[..., {"red": 0, "green": 1, "blue": 2}[channel]]


def refine(matte: np.ndarray, options: MatteOptions) -> np.ndarray:
    """Invert, threshold and dilate (in pixels) a (N, H, W) float matte."""
    if options.invert:
        matte = 1.0 - matte
    if options.threshold is not None:
        matte = (matte >= options.threshold).astype(np.float32)
    if options.dilate > 0:
        matte = dilate(np.ascontiguousarray(matte, dtype=np.float32), options.dilate)
    return np.clip(matte, 0.0, 1.0).astype(np.float32, copy=False)


def matte_plan(
    matte: MediaInfo,
    source: MediaInfo,
    start: int,
    end: int,
    options: MatteOptions = MatteOptions(),
    own: tuple[int, int] | None = None,
) -> tuple[int, int, list[str]]:
    """Check the options and sizes; return the matte's frames [first, last) that cover source [start, end).

    ``own`` is the matte file's own [first, last) when the caller knows it (a slipped matte clip). Nothing is
    decoded, so a caller can then read the matte in pieces (:func:`read_matte`).
    """
    if options.channel not in CHANNELS:
        raise MatteError(f"matte channel must be one of {CHANNELS}, got {options.channel!r}")
    if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
        raise MatteError(f"matte threshold must be in [0, 1], got {options.threshold}")
    first, last, warnings = matte_frames(matte.frames, matte.kind == "still", source.frames, start, end, own)
    if (matte.width, matte.height) != (source.width, source.height):
        same_aspect = abs(matte.width / matte.height - source.width / source.height) < 0.01
        if not (options.resize and same_aspect):
            hint = " or pass --matte-resize" if same_aspect else " (the aspect ratios differ, so it cannot be scaled)"
            raise MatteError(
                f"matte is {matte.width}×{matte.height} but the source is {source.width}×{source.height}; "
                f"render the matte at the source's resolution{hint}"
            )
        warnings.append(f"matte scaled from {matte.width}×{matte.height} to {source.width}×{source.height}")
    return first, last, warnings


def read_matte(
    matte: MediaInfo, source: MediaInfo, first: int, last: int, options: MatteOptions = MatteOptions()
) -> np.ndarray:
    """Matte frames [first, last) as float32 (N, H, W) in [0, 1] at the source's size, refined."""
    values = pick_channel(read_frames(matte, first, last), options.channel)
    if (matte.width, matte.height) != (source.width, source.height):
        values = resize(values, source.height, source.width)
    return refine(values, options)


def load_matte(
    matte: MediaInfo,
    source: MediaInfo,
    start: int,
    end: int,
    options: MatteOptions = MatteOptions(),
    own: tuple[int, int] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The matte for source frames [start, end) as float32 (end − start, H, W) in [0, 1], plus warnings.

    ``own`` is the matte file's own [first, last) when the caller knows it (a slipped matte clip)."""
    first, last, warnings = matte_plan(matte, source, start, end, options, own)
    values = read_matte(matte, source, first, last, options)
    if values.shape[0] == 1 and end - start > 1:
        values = np.repeat(values, end - start, axis=0)
    return values, warnings
