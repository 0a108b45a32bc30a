"""Putting edited pixels back into the original frames at source resolution.

The feathered matte grows the matte outward by ``feather`` pixels and ramps to zero over another
``feather``, so the matte itself is fully edited and the seam is soft. Wherever it is zero, the output
*is* the source pixel: chosen with ``np.where``, not blended, so it is bit-exact (docs/design.md §2.5).

What is blended in is not the decoded edit E itself. Outside the matte the latents are the source's, so E
there is the VAE's reconstruction R of the source (blurred detail, shifted colours) plus whatever the edit
spills across the matte's edge; blending E into the feather ring would show R as a halo. So the ring gets
the source plus the edit's change, S + (E − R), and R is let in only inside the matte, fading in over
``feather`` pixels from its edge (``inner_ramp``), where the new subject belongs: ``with_source_detail``.
Nothing of the old subject comes back through it, since R holds the old subject as much as S does.
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


def inner_ramp(matte: np.ndarray, feather: int) -> np.ndarray:
    """(H, W) float32: 0 outside the matte and at its edge, rising to 1 at ``feather`` pixels inside it.

    Twice the matte's local coverage minus one ((2·feather + 1)² box, the frame's edge not counted as an
    edge of the matte), so the ramp is linear across a straight edge and zero outside the matte.
    """
    inside = np.ascontiguousarray(matte > 0)
    out = np.zeros(inside.shape, np.float32)
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    if rows.size == 0:
        return out
    if feather <= 0:
        out[inside] = 1.0
        return out
    margin = feather + 1
    r0, r1 = max(0, rows[0] - margin), min(inside.shape[0], rows[-1] + margin + 1)
    c0, c1 = max(0, cols[0] - margin), min(inside.shape[1], cols[-1] + margin + 1)
    crop = torch.from_numpy(inside[r0:r1, c0:c1].astype(np.float32))[None, None]
    cover = _pool_separable(crop, 2 * feather + 1, feather, "mean")[0, 0].numpy()
    out[r0:r1, c0:c1] = np.where(inside[r0:r1, c0:c1], np.clip(2.0 * cover - 1.0, 0.0, 1.0), 0.0)
    return out


def with_source_detail(
    edited: np.ndarray, reconstruction: np.ndarray, source: np.ndarray, inner: np.ndarray, scale: float
) -> np.ndarray:
    """E + (1 − inner)·(S − R), clipped to [0, scale]: the edit with the source's own detail wherever the
    VAE's reconstruction would otherwise show (everywhere but deep inside the matte). All in source scale.

    Blended over S with the feathered matte w this gives S + w·(E − R) in the ring — the source where the
    edit changed nothing — and E deep inside the matte.
    """
    keep = (1.0 - inner)[..., None]
    restored = edited + keep * (source.astype(np.float32) - reconstruction)
    return np.clip(restored, 0.0, scale)


def handover_weight(k: int, context: int) -> float:
    """How much of this window's result frame ``k`` of a window shows, its lead-in being ``context`` frames.

    Linear over the lead-in, (k + 1) / (context + 1), and 1 from the first frame the window owns: the
    previous result and this window's continuation of its round trip differ by the VAE's error, and a
    ramp spreads that over context + 1 frame steps instead of one. Frame 0 of the clip (no lead-in) is 1.
    """
    if k >= context:
        return 1.0
    return (k + 1) / (context + 1)


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
