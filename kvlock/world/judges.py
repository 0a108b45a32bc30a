"""Judging an edit of a synthetic clip: did the object take the asked colour and shape, and did the
background stay put? Used by ``bench/quality.py`` and the CI quality check.

Colour: the mean of the pixels inside the matte that differ from the clip's true background, matched to
the nearest palette colour. Shape: the same pixels' bounding box, scaled to 32×32 and compared (IoU) with
a template of each shape filling that box. Both read the true background the generator rendered, so they
need no learned model and are exact on the generator's own clips.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .scenes import COLOURS, SHAPES

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


def judge(video: np.ndarray, background: np.ndarray, region: np.ndarray) -> tuple[str, str]:
    """Majority colour and shape over the frames of (T, H, W, 3) ``video`` inside (T, H, W) ``region``."""
    colours, shapes = [], []
    for t in range(video.shape[0]):
        mask = object_pixels(video[t], background[t], region[t])
        colours.append(classify_colour(video[t], mask))
        shapes.append(classify_shape(mask))
    return max(set(colours), key=colours.count), max(set(shapes), key=shapes.count)


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
