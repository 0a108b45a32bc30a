"""Putting edited pixels back into the original frames at source resolution.

The feathered matte grows the matte outward by ``feather`` pixels and ramps to zero over another
``feather``, so the matte itself is fully edited and the seam is soft. Wherever it is zero, the output
*is* the source pixel: chosen with ``np.where``, not blended, so it is bit-exact (DESIGN §2.5).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _pool_separable(m: torch.Tensor, k: int, pad: int, op: str) -> torch.Tensor:
    """A k×k max or mean pool as two 1-D passes (k + k work per pixel instead of k·k)."""
    if op == "max":
        m = F.max_pool2d(m, (k, 1), stride=1, padding=(pad, 0))
        return F.max_pool2d(m, (1, k), stride=1, padding=(0, pad))
    m = F.avg_pool2d(m, (k, 1), stride=1, padding=(pad, 0), count_include_pad=False)
    return F.avg_pool2d(m, (1, k), stride=1, padding=(0, pad), count_include_pad=False)


def feather_matte(matte: np.ndarray, feather: int) -> np.ndarray:
    """(H, W) matte in [0, 1] → float32 feathered matte: 1 on the matte, 0 beyond 2·feather pixels.

    Only the matte's bounding box plus 3·feather is filtered (nothing outside it can become non-zero,
    and every window that can is inside it), so the cost follows the subject's size, not the frame's.
    """
    m = np.ascontiguousarray(matte, dtype=np.float32)
    out = np.zeros_like(m)
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    if rows.size == 0:
        return out
    margin = 3 * feather + 1
    r0, r1 = max(0, rows[0] - margin), min(m.shape[0], rows[-1] + margin + 1)
    c0, c1 = max(0, cols[0] - margin), min(m.shape[1], cols[-1] + margin + 1)
    crop = torch.from_numpy(m[r0:r1, c0:c1].copy())[None, None]
    if feather > 0:
        k = 2 * feather + 1
        grown = _pool_separable(crop, k, feather, "max")
        crop = torch.maximum(_pool_separable(grown, k, feather, "mean"), crop)
    out[r0:r1, c0:c1] = crop[0, 0].numpy()
    return out


def support_box(weight: np.ndarray) -> tuple[slice, slice] | None:
    """The smallest rows × columns box holding every non-zero of ``weight``, or None if it is all zero."""
    rows, cols = np.nonzero(weight.any(axis=1))[0], np.nonzero(weight.any(axis=0))[0]
    if rows.size == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def full_scale(dtype: np.dtype) -> float:
    """The value of white for an integer pixel type, 1.0 for floats."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def composite_frame(source: np.ndarray, edited: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend one frame: ``edited`` (float, source's scale) over ``source`` where ``weight`` > 0.

    Pixels with weight 0 are copied from ``source`` untouched (whatever they hold, NaN included); the rest
    are rounded back to its dtype. A non-finite source value under the feather is replaced by the edit
    rather than blended, so nothing the edit touches comes out NaN or infinite.
    """
    w = weight[..., None].astype(np.float32)
    edit = edited.astype(np.float32)
    base = source.astype(np.float32)
    if np.issubdtype(source.dtype, np.floating):
        base = np.where(np.isfinite(base), base, edit)
    blended = base * (1.0 - w) + edit * w
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
