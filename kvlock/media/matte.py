"""Loading a matte for a source range: from a grayscale video, an RGBA video's alpha, an image sequence
or one still, with threshold / invert / dilate options.

Length rules (the documented repairs, in :mod:`.matte_frames`, which also honours a matte's own range): a
still is used for every frame; a matte clip as long as the source is read over the same range; a matte exactly
as long as the range (already trimmed) is used as is. Anything else is an error that gives both lengths. A
matte of another size is an error, unless ``resize`` is asked for and the aspect ratios agree (a
proxy-resolution matte): then it is scaled, with a warning.

Memory: a matte is turned into float values a strip of rows at a time (:func:`matte_strips`, at most
``STRIP_BYTES`` of floats at once), scaled strip by strip too, so neither reading a matte nor checking one
costs a float copy of every channel of the clip; a still matte stays one frame, for every frame.

NumPy only (no torch): the client wheel ships this module to hosts' own Pythons.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import MatteError
from .decode import MediaInfo, read_frames
from .limits import MIB
from .matte_frames import matte_frames

CHANNELS = ("auto", "alpha", "luma", "red", "green", "blue")
STRIP_BYTES = 16 * MIB  # float values made at once from a matte frame


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


def _unit(pixels: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] (integers by their full range; floats clipped, NaN → 0)."""
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max)
    return np.clip(np.nan_to_num(pixels.astype(np.float32)), 0.0, 1.0)


def translucent(pixels: np.ndarray) -> bool:
    """Whether (…, 4) pixels have an alpha below full anywhere (what makes ``auto`` read the alpha), looked
    at a few rows at a time."""
    if pixels.shape[-1] != 4:
        return False
    alpha = pixels[..., 3].reshape(-1, pixels.shape[-2])
    full = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
    step = max(1, STRIP_BYTES // (8 * alpha.shape[1]))
    return any(bool((np.nan_to_num(alpha[r : r + step]) < full).any()) for r in range(0, len(alpha), step))


def auto_channel(frames: np.ndarray) -> str:
    """The channel ``auto`` reads in these (N, H, W, C) pixels: alpha if any is below full, else luma."""
    return "alpha" if any(translucent(frame) for frame in frames) else "luma"


def pick_channel(pixels: np.ndarray, channel: str) -> np.ndarray:
    """(…, C) pixels → (…) float32 in [0, 1] from the chosen channel (EXR mattes: clipped, NaN → 0). One
    channel (an uploaded gray matte) is its own value."""
    if channel == "auto":
        channel = auto_channel(pixels.reshape(1, -1, 1, pixels.shape[-1]))
    if pixels.shape[-1] == 1:
        return _unit(pixels[..., 0])
    if channel == "alpha":
        if pixels.shape[-1] != 4:
            raise MatteError("matte has no alpha channel; use --matte-channel luma (or red/green/blue)")
        return _unit(pixels[..., 3])
    if channel == "luma":
        x = _unit(pixels[..., :3])
        return x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722
    return _unit(pixels[..., {"red": 0, "green": 1, "blue": 2}[channel]])


def _strip_rows(width: int, channels: int, scale: float = 1.0) -> int:
    """Output rows of one strip, so its input rows' float values stay within ``STRIP_BYTES``."""
    return max(1, int(STRIP_BYTES // (4 * width * channels) / max(1.0, scale)) - 2)


def matte_strips(frame: np.ndarray, channel: str, height: int, width: int) -> Iterator[tuple[slice, np.ndarray]]:
    """One (H, W, C) matte frame's ``channel`` (not ``auto``) as float32 in [0, 1] at ``height``×``width``
    (resampled, antialiased, when the frame is another size), strip of rows by strip: (rows, values)."""
    h, w, c = frame.shape
    if (h, w) == (height, width):
        step = _strip_rows(w, c)
        for r0 in range(0, h, step):
            yield slice(r0, min(h, r0 + step)), pick_channel(frame[r0 : r0 + step], channel)
        return
    rows = _resample_weights(h, height).astype(np.float32)
    cols = _resample_weights(w, width).astype(np.float32)
    step = _strip_rows(w, c, h / height)
    for r0 in range(0, height, step):
        weights = rows[r0 : r0 + step]
        used = np.nonzero(weights.any(axis=0))[0]
        y0, y1 = int(used[0]), int(used[-1]) + 1
        values = pick_channel(frame[y0:y1], channel)
        yield slice(r0, min(height, r0 + step)), (weights[:, y0:y1] @ values @ cols.T).astype(np.float32)


def matte_values(frames: np.ndarray, channel: str, height: int, width: int) -> np.ndarray:
    """(N, H, W, C) matte pixels → (N, height, width) float32 in [0, 1] of ``channel`` (``auto`` decided over
    all of them), made strip by strip."""
    if channel == "auto":
        channel = auto_channel(frames)
    out = np.empty((len(frames), height, width), np.float32)
    for k, frame in enumerate(frames):
        for rows, values in matte_strips(frame, channel, height, width):
            out[k, rows] = values
    return out


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
    pixels = read_frames(matte, first, last)
    return refine(matte_values(pixels, options.channel, source.height, source.width), options)


def load_matte(
    matte: MediaInfo,
    source: MediaInfo,
    start: int,
    end: int,
    options: MatteOptions = MatteOptions(),
    own: tuple[int, int] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The matte for source frames [start, end) as float32 (end − start, H, W) in [0, 1], plus warnings; a
    single still matte stays (1, H, W), standing for every frame (``normalise_matte`` broadcasts it), so a
    range of any length costs one matte frame.

    ``own`` is the matte file's own [first, last) when the caller knows it (a slipped matte clip)."""
    first, last, warnings = matte_plan(matte, source, start, end, options, own)
    return read_matte(matte, source, first, last, options), warnings
