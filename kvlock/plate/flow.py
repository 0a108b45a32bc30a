"""Dense optical flow between two frames, which of it to trust, and a smooth fill where it cannot be trusted.

Flow is OpenCV's DIS (Kroeger et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016): no learned
weights, sub-pixel on textured images, a few milliseconds at 960 × 540. It runs on 8-bit luma at a working
size (the longer side at most ``flow_side``); vectors are in working pixels throughout this module.

Which vectors to trust: the forward–backward check of Sundaram, Brox and Keutzer ("Dense point trajectories
by GPU-accelerated large displacement optical flow", ECCV 2010, eq. 5): the flow w at p and the backward flow
ŵ at p + w cancel on a pixel seen in both frames, so w is kept when

    |w + ŵ|² < 0.01·(|w|² + |ŵ|²) + 0.5                                   (working pixels²)

and dropped where the pixel is hidden in the other frame (an occlusion) or the match is ambiguous. Under the
matte the subject moves its own way, so the flow there says nothing about the background either.

Where it is not trusted, the background's motion is continued smoothly from the trusted flow around it
(:func:`complete`: push–pull interpolation), which is right for a camera move and for a
background that moves smoothly, and wrong across a depth edge hidden by the subject — the check between two
completed fields (:func:`consistent` in the fill) catches where the two frames' continuations disagree.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

FB_RELATIVE = 0.01  # the check's tolerance: a fraction of the squared lengths …
FB_ABSOLUTE = 0.5  # … plus this many working pixels², for sub-pixel noise on short vectors
FINEST_SIDE = 512  # pixels: the longer side of DIS's finest level at most this
APART_ABSOLUTE, APART_RELATIVE = 1.0, 0.05  # how far from the dominant motion a vector moves on its own


def working_size(height: int, width: int, flow_side: int) -> tuple[int, int]:
    """(height, width) flows are computed at: the frame scaled so its longer side is at most ``flow_side``."""
    scale = min(1.0, flow_side / max(height, width))
    return max(8, round(height * scale)), max(8, round(width * scale))


def luma8(display_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) display-referred values in [0, 1] → (h, w) uint8 Rec. 709 luma at the working size."""
    luma = display_rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    if luma.shape != size:
        luma = cv2.resize(luma, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(luma * 255.0), 0, 255).astype(np.uint8)


def shrink_mask(mask: np.ndarray, size: tuple[int, int], grow: int = 0) -> np.ndarray:
    """A full-size boolean mask at the working size: a working pixel is set if any pixel under it is, then
    grown by ``grow`` working pixels (a disc)."""
    small = mask
    if mask.shape != size:
        small = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA) > 0
    return grow_mask(small, grow)


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """A boolean mask grown by ``pixels`` (a disc of that radius)."""
    if pixels <= 0 or not mask.any():
        return mask.astype(bool)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), disc) > 0


def finest_scale(size: tuple[int, int]) -> int:
    """DIS's finest pyramid level (0: full working size): the level whose longer side is at most
    ``FINEST_SIDE`` pixels. A coarser level on a small frame lets the subject's patches pull the background's
    flow; a finer one on a large frame costs 3–4× the time for no measured gain (bench/plate_speed.py)."""
    return max(0, math.ceil(math.log2(max(size) / FINEST_SIDE)))


class FlowEstimator:
    """DIS flow with the fast preset, down to :func:`finest_scale` (about 0.04 px mean error on a textured
    pan at any size, measured in the tests); ``reach`` is how far, in working pixels, a patch spreads."""

    def __init__(self, size: tuple[int, int]) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        level = finest_scale(size)
        self._dis.setFinestScale(level)
        self.reach = self._dis.getPatchSize() * 2**level

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """(h, w, 2) float32 flow from ``first`` to ``second`` (uint8 luma): first(p) ≈ second(p + w(p))."""
        return self._dis.calc(first, second, None)


def sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``field`` (h, w, C) read bilinearly at points (x, y) of any shape, positions clamped to the field's edge
    → (*shape, C) float32 (any stored dtype: flows are kept as float16)."""
    h, w = field.shape[:2]
    x = np.clip(np.asarray(x, np.float32), 0.0, w - 1.0)
    y = np.clip(np.asarray(y, np.float32), 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.intp), w - 2) if w > 1 else np.zeros(x.shape, np.intp)
    y0 = np.minimum(np.floor(y).astype(np.intp), h - 2) if h > 1 else np.zeros(y.shape, np.intp)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = field[y0, x0].astype(np.float32) * (1 - fx) + field[y0, x1].astype(np.float32) * fx
    bottom = field[y1, x0].astype(np.float32) * (1 - fx) + field[y1, x1].astype(np.float32) * fx
    return top * (1 - fy) + bottom * fy


def consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Sundaram et al.'s check (module docstring) on (..., 2) vectors: does w + ŵ vanish, within tolerance?"""
    fx, fy, bx, by = forward[..., 0], forward[..., 1], backward[..., 0], backward[..., 1]
    miss = (fx + bx) ** 2 + (fy + by) ** 2
    size = fx**2 + fy**2 + bx**2 + by**2
    return miss < FB_RELATIVE * size + FB_ABSOLUTE


def backward_at_target(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """ŵ(p + w(p)) for every pixel p: the backward flow read where the forward flow lands (edges repeated)."""
    h, w = forward.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx, my = xs + forward[..., 0], ys + forward[..., 1]
    return cv2.remap(backward.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def checked(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Where the forward flow passes the forward–backward check: the pixel is seen in both frames, and matched."""
    return consistent(forward, backward_at_target(forward, backward))


def moving_apart(flow: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Where the kept flow disagrees with the frame's dominant motion — a homography fitted by RANSAC to the
    kept vectors (about 8000 of them, on a grid) — by more than ``APART_ABSOLUTE`` working pixels plus
    ``APART_RELATIVE`` of the vector: things that move on their own (another subject the matte leaves out), or
    background far off the dominant plane. Nothing when too few vectors are kept to fit one."""
    h, w = keep.shape
    step = max(1, int(math.sqrt(h * w / 8000)))
    rows, cols = np.mgrid[0:h:step, 0:w:step]
    chosen = keep[rows, cols]
    if chosen.sum() < 16:
        return np.zeros_like(keep)
    start = np.stack([cols[chosen], rows[chosen]], axis=-1).astype(np.float32)
    end = start + flow[rows[chosen], cols[chosen]].astype(np.float32)
    model, _ = cv2.findHomography(start, end, cv2.RANSAC, APART_ABSOLUTE)
    if model is None:
        return np.zeros_like(keep)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([xs, ys], axis=-1)
    predicted = cv2.perspectiveTransform(grid.reshape(-1, 1, 2), model).reshape(h, w, 2) - grid
    miss = np.hypot(flow[..., 0] - predicted[..., 0], flow[..., 1] - predicted[..., 1])
    return keep & (miss > APART_ABSOLUTE + APART_RELATIVE * np.hypot(flow[..., 0], flow[..., 1]))


def complete(flow: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``flow`` where ``keep``; elsewhere a smooth continuation of it, by push–pull (Gortler et al., "The
    Lumigraph", SIGGRAPH 1996, §3.4): the kept vectors averaged down a pyramid of halvings until every cell
    has one, then each level filled from the one below and blended in by how much of it was known. A constant
    field (a pan) comes back exactly; the cost is a few passes over the frame, whatever the hole's size.

    With nothing to keep there is nothing to continue from: the flow is taken as zero (a still background).
    """
    if keep.all():
        return flow
    if not keep.any():
        return np.zeros_like(flow)
    weight = keep.astype(np.float32)
    return _pull(flow.astype(np.float32) * weight[..., None], weight)


def _pull(weighted: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Push–pull on one level: ``weighted`` is value × weight (h, w, C), ``weight`` in [0, 1] (h, w)."""
    h, w = weight.shape
    known = weight > 0
    value = np.where(known[..., None], weighted / np.maximum(weight, 1e-12)[..., None], 0.0).astype(np.float32)
    if known.all() or min(h, w) <= 1:
        return value
    size = (max(1, (w + 1) // 2), max(1, (h + 1) // 2))
    coarse_weight = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    coarse = _pull(cv2.resize(weighted, size, interpolation=cv2.INTER_AREA), coarse_weight)
    filled = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    blend = np.clip(weight, 0.0, 1.0)[..., None]
    return (blend * value + (1.0 - blend) * filled).astype(np.float32)
