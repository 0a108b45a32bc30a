"""Putting edited pixels back into the original frames at source resolution.

The feathered matte grows the matte outward by ``feather`` pixels and ramps to zero over another
``feather``, so the matte itself is fully edited and the seam is soft. Wherever it is zero, the output
*is* the source pixel: chosen with ``np.where``, not blended, so it is bit-exact (DESIGN §2.5).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def feather_matte(matte: np.ndarray, feather: int) -> np.ndarray:
    """(H, W) matte in [0, 1] → float32 feathered matte: 1 on the matte, 0 beyond 2·feather pixels."""
    m = torch.from_numpy(np.ascontiguousarray(matte, dtype=np.float32))[None, None]
    if feather > 0:
        k = 2 * feather + 1
        grown = F.max_pool2d(m, k, stride=1, padding=feather)
        blurred = F.avg_pool2d(grown, k, stride=1, padding=feather, count_include_pad=False)
        m = torch.maximum(blurred, m)
    return m[0, 0].numpy()


def full_scale(dtype: np.dtype) -> float:
    """The value of white for an integer pixel type, 1.0 for floats."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def composite_frame(source: np.ndarray, edited: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend one frame: ``edited`` (float, source's scale) over ``source`` where ``weight`` > 0.

    Pixels with weight 0 are copied from ``source`` untouched; the rest are rounded back to its dtype.
    """
    w = weight[..., None].astype(np.float32)
    blended = source.astype(np.float32) * (1.0 - w) + edited.astype(np.float32) * w
    if np.issubdtype(source.dtype, np.integer):
        info = np.iinfo(source.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    return np.where(w > 0, blended.astype(source.dtype), source)


def edited_region_rgba(edited: np.ndarray, weight: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The edit as straight (unpremultiplied) RGBA in ``dtype``, alpha = feathered matte, for compositing."""
    scale = full_scale(dtype)
    rgba = np.concatenate([edited, weight[..., None] * scale], axis=-1)
    if np.issubdtype(dtype, np.integer):
        rgba = np.clip(np.rint(rgba), 0, scale)
    return rgba.astype(dtype)
