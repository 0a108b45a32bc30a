"""Checks on the pixels of a request, run before any model work.

Each problem either raises a :class:`MatteError`/:class:`InvalidRequest` that says what to fix, or, where
a safe repair exists, applies it and returns a warning naming the repair.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidRequest, MatteError

PIXEL_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)


def check_prompt(prompt: object) -> str:
    """The edit prompt, or the error every entry point gives for a missing one."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt is empty: describe what the masked subject should become")
    return prompt


def check_frames(frames: np.ndarray, transfer: str = "display") -> list[str]:
    """Check (T, H, W, 3|4) source frames (a 4th channel is alpha, kept as is); return warnings.

    Display-referred floats must be finite and in [0, 1]. Scene-linear floats may hold anything — values
    above 1.0, negative, even NaN or infinite (renders do): those are kept outside the matte and only the
    model sees them clipped, which the warning says.
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        shape = getattr(frames, "shape", type(frames).__name__)
        raise InvalidRequest(f"frames must be an array of shape (T, H, W, 3) (RGB) or (T, H, W, 4) (RGBA), got {shape}")
    if frames.shape[0] < 1 or frames.shape[1] < 8 or frames.shape[2] < 8:
        raise InvalidRequest(f"frames must hold at least one frame of 8×8 pixels, got {frames.shape}")
    if frames.dtype.type not in PIXEL_DTYPES:
        raise InvalidRequest(f"frames must be uint8, uint16 or float, got {frames.dtype}")
    if not np.issubdtype(frames.dtype, np.floating):
        return []
    colour = frames[..., :3]
    finite = np.isfinite(colour)
    if transfer == "scene_linear":
        bad = int(finite.size - np.count_nonzero(finite))
        if not bad:
            return []
        return [
            f"{bad} colour values are NaN or infinite: the model sees them as 0 (NaN, −inf) or the highlight "
            "ceiling (+inf); they are kept outside the matte and replaced inside it"
        ]
    if not finite.all():
        raise InvalidRequest("frames contain NaN or infinite values")
    if colour.min() < 0.0 or colour.max() > 1.0:
        raise InvalidRequest(
            f"float frames must be in [0, 1], got [{colour.min():.3g}, {colour.max():.3g}]; scene-linear "
            "plates need EditRequest(encoding=SceneLinear())"
        )
    return []


def _unit_float(matte: np.ndarray) -> np.ndarray:
    """A bool, integer or float matte as float32 in [0, 1]; NaN, infinities and values outside refused."""
    if matte.dtype == np.bool_:
        return matte.astype(np.float32)
    if np.issubdtype(matte.dtype, np.integer):
        return matte.astype(np.float32) / float(np.iinfo(matte.dtype).max)
    if not np.issubdtype(matte.dtype, np.floating):
        raise MatteError(f"matte dtype {matte.dtype} is not supported; use bool, uint8, uint16 or float")
    if not np.isfinite(matte).all():
        raise MatteError("matte contains NaN or infinite values")
    if matte.min() < 0.0 or matte.max() > 1.0:
        raise MatteError(f"float matte must be in [0, 1], got [{matte.min():.3g}, {matte.max():.3g}]")
    return matte.astype(np.float32)


def _three_axes(matte: object) -> np.ndarray:
    """(T, H, W) from a (T, H, W), (T, H, W, 1) or (H, W) array."""
    if not isinstance(matte, np.ndarray):
        raise MatteError(f"matte must be an array, got {type(matte).__name__}")
    if matte.ndim == 4 and matte.shape[-1] == 1:
        matte = matte[..., 0]
    if matte.ndim == 2:
        matte = matte[None]
    if matte.ndim != 3:
        raise MatteError(f"matte must have shape (T, H, W) or (T, H, W, 1), got {matte.shape}")
    return matte


def normalise_matte(matte: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Return the matte as float32 (T, H, W) in [0, 1] matching ``frames``, plus warnings for repairs.

    A single still stands for every frame as a read-only view, so a long range costs one frame of memory."""
    warnings: list[str] = []
    matte = _three_axes(matte)
    t, h, w = frames.shape[:3]
    if matte.shape[1:] != (h, w):
        raise MatteError(
            f"matte is {matte.shape[2]}×{matte.shape[1]} but the frames are {w}×{h}; "
            "render the matte at the source's resolution"
        )
    if matte.shape[0] not in (1, t):
        raise MatteError(
            f"matte has {matte.shape[0]} frames but the source range has {t}; "
            "give one matte frame per source frame (or a single still for all)"
        )
    matte = _unit_float(matte)
    if matte.shape[0] != t:
        warnings.append(f"one matte frame for {t} source frames: repeated it for every frame")
        matte = np.broadcast_to(matte, (t, h, w))
    if not matte.any():
        raise MatteError("matte is empty (all zero): there is nothing to edit; check the matte's channel or invert")
    if (matte > 0).all():
        warnings.append(
            "matte covers every pixel: nothing to lock, the edit is a plain regeneration of the whole frame"
        )
    return matte, warnings
