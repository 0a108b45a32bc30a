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


def _bounds(support: torch.Tensor, margin: int) -> tuple[slice, slice] | None:
    """The rows and columns of ``support`` (..., H, W) holding anything in any frame, grown by ``margin``,
    inside the frame."""
    height, width = support.shape[-2:]
    plane = support.reshape(-1, height, width).any(0)
    rows, cols = plane.any(1).nonzero()[:, 0], plane.any(0).nonzero()[:, 0]
    if rows.numel() == 0:
        return None
    r0, r1 = max(0, int(rows[0]) - margin), min(height, int(rows[-1]) + margin + 1)
    c0, c1 = max(0, int(cols[0]) - margin), min(width, int(cols[-1]) + margin + 1)
    return slice(r0, r1), slice(c0, c1)


def feather_weights(matte: torch.Tensor, feather: int) -> torch.Tensor:
    """(T, H, W) float matte in [0, 1], on any device → the feathered matte: 1 on the matte, 0 beyond
    2·feather pixels.

    Only the matte's bounding box over all frames plus 3·feather is filtered (nothing outside it can become
    non-zero, and every window that can is inside it), so the cost follows the subject's size, not the
    frame's. Each frame comes out exactly as filtered on its own: the windows that a larger box adds to a
    frame hold only zeros of it.
    """
    out = torch.zeros_like(matte, dtype=torch.float32)
    box = _bounds(matte != 0, 3 * feather + 1)
    if box is None:
        return out
    crop = matte[:, box[0], box[1]].float()[:, None]
    if feather > 0:
        k = 2 * feather + 1
        grown = _pool_separable(crop, k, feather, "max")
        crop = torch.maximum(_pool_separable(grown, k, feather, "mean"), crop)
    out[:, box[0], box[1]] = crop[:, 0]
    return out


def inner_weights(matte: torch.Tensor, feather: int) -> torch.Tensor:
    """(T, H, W) float32 on the matte's device: 0 outside the matte and at its edge, rising to 1 at
    ``feather`` pixels inside it.

    Twice the matte's local coverage minus one ((2·feather + 1)² box, the frame's edge not counted as an
    edge of the matte), so the ramp is linear across a straight edge and zero outside the matte.
    """
    inside = matte > 0
    out = torch.zeros(matte.shape, dtype=torch.float32, device=matte.device)
    box = _bounds(inside, feather + 1)
    if box is None:
        return out
    if feather <= 0:
        return inside.float()
    crop = inside[:, box[0], box[1]]
    cover = _pool_separable(crop.float()[:, None], 2 * feather + 1, feather, "mean")[:, 0]
    out[:, box[0], box[1]] = torch.where(crop, torch.clamp(2.0 * cover - 1.0, 0.0, 1.0), 0.0)
    return out


def feather_matte(matte: np.ndarray, feather: int) -> np.ndarray:
    """(H, W) matte in [0, 1] → float32 feathered matte (:func:`feather_weights` of one frame, on the CPU)."""
    return feather_weights(torch.from_numpy(np.ascontiguousarray(matte, dtype=np.float32))[None], feather)[0].numpy()


def inner_ramp(matte: np.ndarray, feather: int) -> np.ndarray:
    """(H, W) float32 :func:`inner_weights` of one frame, on the CPU."""
    return inner_weights(torch.from_numpy(np.ascontiguousarray(matte, dtype=np.float32))[None], feather)[0].numpy()


def source_detail(
    edited: torch.Tensor, reconstruction: torch.Tensor, source: torch.Tensor, inner: torch.Tensor, scale: float
) -> torch.Tensor:
    """E + (1 − inner)·(S − R), clipped to [0, scale]: the edit with the source's own detail wherever the
    VAE's reconstruction would otherwise show (everywhere but deep inside the matte). All in source scale,
    channels last.

    Blended over S with the feathered matte w this gives S + w·(E − R) in the ring — the source where the
    edit changed nothing — and E deep inside the matte.
    """
    keep = (1.0 - inner)[..., None]
    return torch.clamp(edited + keep * (source.float() - reconstruction), 0.0, scale)


def with_source_detail(
    edited: np.ndarray, reconstruction: np.ndarray, source: np.ndarray, inner: np.ndarray, scale: float
) -> np.ndarray:
    """:func:`source_detail` of numpy arrays."""
    parts = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (edited, reconstruction, source, inner))
    return source_detail(*parts, scale).numpy()


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


def full_scale(dtype: np.dtype | torch.dtype) -> float:
    """The value of white for an integer pixel type, 1.0 for floats."""
    if isinstance(dtype, torch.dtype):
        return 1.0 if dtype.is_floating_point else float(torch.iinfo(dtype).max)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def blend(
    source: torch.Tensor, edited: torch.Tensor, weight: torch.Tensor, limits: tuple[int, int] | None
) -> torch.Tensor:
    """Blend one or more frames, channels last: ``edited`` (float, source's scale) over ``source`` where
    ``weight`` > 0; ``limits`` are the plate's integer range (None: a float plate).

    Pixels with weight 0 are copied from ``source`` untouched (whatever they hold, NaN included); the rest
    are rounded back to its integer range. A non-finite source value under the feather is replaced by the
    edit rather than blended, so nothing the edit touches comes out NaN or infinite.
    """
    w = weight[..., None].float()
    edit = edited.float()
    base = source.float()
    if limits is None:
        base = torch.where(torch.isfinite(base), base, edit)
    blended = base * (1.0 - w) + edit * w
    if limits is not None:
        blended = torch.clamp(torch.round(blended), *limits)
    return torch.where(w > 0, blended.to(source.dtype), source)


def composite_frame(source: np.ndarray, edited: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """:func:`blend` of numpy frames, in ``source``'s dtype."""
    limits = _limits(source.dtype)
    plate = torch.from_numpy(np.ascontiguousarray(source))
    out = blend(plate, torch.from_numpy(np.asarray(edited, np.float32)), torch.from_numpy(np.asarray(weight)), limits)
    return out.numpy()


def _limits(dtype: np.dtype) -> tuple[int, int] | None:
    if not np.issubdtype(dtype, np.integer):
        return None
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def region_rgba(edited: torch.Tensor, weight: torch.Tensor, scale: float, integer: bool) -> torch.Tensor:
    """The edit as straight (unpremultiplied) RGBA in the plate's scale, alpha = feathered matte, for
    compositing; rounded for integer plates."""
    rgba = torch.cat([edited.float(), weight[..., None] * scale], dim=-1)
    return torch.clamp(torch.round(rgba), 0, scale) if integer else rgba


def edited_region_rgba(edited: np.ndarray, weight: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """:func:`region_rgba` of numpy arrays, in ``dtype``."""
    rgba = region_rgba(torch.from_numpy(np.asarray(edited)), torch.from_numpy(np.asarray(weight)), full_scale(dtype),
                       np.issubdtype(dtype, np.integer))  # fmt: skip
    return rgba.numpy().astype(dtype)
