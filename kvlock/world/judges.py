"""Judging a clip of the synthetic world: which colour, shape, size and motion does its object have, and
did the background stay put? Used by ``bench/quality.py``, the model's prompt-following check and CI.

Object pixels: in an edit, the pixels inside the matte that differ from the clip's true background (the
generator renders it); in plain text-to-video there is no true background, so pixels whose colour no
background can have (saturated, or brighter than any light tint). Colour: their mean, matched to the
nearest palette colour. Shape: their bounding box scaled to 32×32 and compared (IoU) with a template of
each shape filling that box. Size: the half-extent that box implies for the judged shape, against the
midpoint of the two sizes. Motion: the slope of the object's centroid over the frames. The judges need no
learned model and are exact on the generator's own clips.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .scenes import COLOURS, MOTIONS, SHAPES, SIZES, SPEED

TEMPLATE = 32


def _templates() -> dict[str, np.ndarray]:
    c = (np.arange(TEMPLATE) + 0.5) / TEMPLATE * 2 - 1  # [-1, 1] across the box
    y, x = np.meshgrid(c, c, indexing="ij")
    arm = 0.33
    return {
        "circle": x**2 + y**2 <= 1.0,
        "square": np.ones((TEMPLATE, TEMPLATE), bool),
        # apex at the top, base at the bottom: the box is the triangle's own bounding box
        "triangle": np.abs(x) <= (y + 1) / 2,
        "cross": (np.abs(y) <= arm) | (np.abs(x) <= arm),
    }


TEMPLATES = _templates()


def object_pixels(frame: np.ndarray, background: np.ndarray, region: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Boolean (H, W): pixels in ``region`` that differ from the true background (frames in [0, 1])."""
    return (np.abs(frame - background).max(axis=-1) > threshold) & region


def classify_colour(frame: np.ndarray, mask: np.ndarray) -> str:
    if mask.sum() < 4:
        return "none"
    mean = frame[mask].mean(axis=0)
    names = list(COLOURS)
    distances = [np.linalg.norm(mean - np.array(COLOURS[n])) for n in names]
    return names[int(np.argmin(distances))]


def classify_shape(mask: np.ndarray) -> str:
    if mask.sum() < 9:
        return "none"
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    scaled = F.interpolate(torch.from_numpy(crop)[None, None], size=(TEMPLATE, TEMPLATE), mode="area")[0, 0]
    box = scaled.numpy() >= 0.5
    ious = {name: (box & t).sum() / max(1, (box | t).sum()) for name, t in TEMPLATES.items()}
    return max(ious, key=ious.get)


def _majority(values: list[str]) -> str:
    return max(sorted(set(values)), key=values.count)


def judge(video: np.ndarray, background: np.ndarray, region: np.ndarray) -> tuple[str, str]:
    """Majority colour and shape over the frames of (T, H, W, 3) ``video`` inside (T, H, W) ``region``."""
    judged = judge_all(video, [object_pixels(video[t], background[t], region[t]) for t in range(len(video))])
    return judged["colour"], judged["shape"]


def foreground_pixels(frame: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels no background of the world can have — saturated (any palette colour but
    white) or brighter than the lightest tint (white) — for clips with no true background to compare to."""
    chroma = frame.max(axis=-1) - frame.min(axis=-1)
    return (chroma > 0.35) | (frame.min(axis=-1) > 0.88)


# the bounding box's longest side over the half-extent r, per shape (scenes._sdf)
_EXTENT = {"circle": 2.0, "square": 1.7, "triangle": math.sqrt(3.0), "cross": 2.0}


def classify_size(mask: np.ndarray, shape: str) -> str:
    if mask.sum() < 9 or shape not in _EXTENT:
        return "none"
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    radius = side / _EXTENT[shape] / mask.shape[0]
    small, large = SIZES["small"], SIZES["large"]
    return "large" if radius > math.sqrt(small * large) else "small"


def classify_motion(masks: list[np.ndarray]) -> str:
    """Fit the centroid's path with a line; below a third of the world's speed it is still."""
    points = [(t, *np.argwhere(m).mean(axis=0)) for t, m in enumerate(masks) if m.sum() >= 9]
    if len(points) < 3:
        return "none"
    t, rows, cols = (np.array(v, dtype=np.float64) for v in zip(*points, strict=True))
    dy, dx = np.polyfit(t, rows, 1)[0], np.polyfit(t, cols, 1)[0]
    speed = SPEED * masks[0].shape[1]
    if max(abs(dx), abs(dy)) < speed / 3:
        return "still"
    step = (float(np.sign(dx)), 0.0) if abs(dx) >= abs(dy) else (0.0, float(np.sign(dy)))
    return next(name for name, direction in MOTIONS.items() if direction == step)


def judge_all(video: np.ndarray, masks: list[np.ndarray]) -> dict[str, str]:
    """Colour, shape and size (majorities over frames) and motion of one object given its per-frame pixels."""
    colours = [classify_colour(video[t], m) for t, m in enumerate(masks)]
    shapes = [classify_shape(m) for m in masks]
    shape = _majority(shapes)
    sizes = [classify_size(m, shape) for m in masks]
    return {
        "colour": _majority(colours),
        "shape": shape,
        "size": _majority(sizes),
        "motion": classify_motion(masks),
    }


def judge_generation(video: np.ndarray) -> dict[str, str]:
    """Judge a plain text-to-video clip (T, H, W, 3) in [0, 1] of one object."""
    return judge_all(video, [foreground_pixels(frame) for frame in video])


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the pixels where ``mask`` (T, H, W) is true; images in [0, 1]."""
    mse = float(((a - b) ** 2)[mask].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM (Gaussian window, luma) over the pixels where ``mask`` is true."""
    weights = torch.tensor([0.2126, 0.7152, 0.0722])
    x = (torch.from_numpy(a).float() * weights).sum(-1)[:, None]
    y = (torch.from_numpy(b).float() * weights).sum(-1)[:, None]
    radius = int(3 * sigma)
    k = torch.exp(-(torch.arange(-radius, radius + 1).float() ** 2) / (2 * sigma**2))
    k = k / k.sum()
    window = (k[:, None] * k[None, :])[None, None]

    def blur(z):
        return F.conv2d(F.pad(z, (radius,) * 4, mode="replicate"), window)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[:, 0].numpy()[mask].mean())


def flicker(video: np.ndarray, source: np.ndarray, mask: np.ndarray) -> float:
    """Mean |Δt output − Δt source| over ``mask``: temporal change the source did not have (0 is steady)."""
    dv, ds = np.diff(video, axis=0), np.diff(source, axis=0)
    both = mask[1:] & mask[:-1]
    return float(np.abs(dv - ds).max(axis=-1)[both].mean())


def shape_names() -> tuple[str, ...]:
    return SHAPES
