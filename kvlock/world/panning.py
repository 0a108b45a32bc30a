"""A panning clip whose background is known exactly: a smooth texture under a camera move and a disc (the
subject) crossing it. The clean plate's tests and its timing (``bench/plate_speed.py``) use it at any size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(…, 3) values in [0.1, 0.9]: sums of sinusoids with periods of 9–40 units, defined everywhere."""
    waves = (
        ((0.21, 0.05, 0.0), (0.6, 0.2, 0.1)),
        ((0.07, 0.16, 1.0), (0.1, 0.5, 0.3)),
        ((-0.11, 0.09, 2.0), (0.3, 0.2, 0.6)),
        ((0.03, -0.25, 0.5), (0.2, 0.3, 0.4)),
    )
    out = np.full((*np.shape(x), 3), 0.5, np.float32)
    for (kx, ky, phase), weights in waves:
        out += 0.1 * np.sin(kx * x + ky * y + phase)[..., None] * np.array(weights, np.float32)
    return out


@dataclass(frozen=True)
class PanningClip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    matte: np.ndarray  # (T, H, W) float32 in {0, 1}: the disc grown by ``grow`` pixels
    background: np.ndarray | None  # (T, H, W, 3) float32 in [0, 1]: exactly what the disc hides
    subject: np.ndarray  # (T, H, W) bool: the disc itself


def panning_clip(
    frames: int = 17,
    height: int = 72,
    width: int = 96,
    pan: tuple[float, float] = (1.3, 0.4),
    subject_start: tuple[float, float] = (30.0, 36.0),
    subject_speed: tuple[float, float] = (2.2, 0.0),
    radius: float = 11.0,
    grow: int = 3,
    keep_background: bool = True,
    texture_scale: float = 1.0,
    other: tuple[float, float, float, float, float] | None = None,
) -> PanningClip:
    """The camera pans by ``pan`` pixels a frame (the texture slides the other way); a flat red disc moves by
    ``subject_speed`` in the frame. ``keep_background=False`` leaves out the true background (large frames);
    ``texture_scale`` pixels make one unit of the texture. ``other`` (x, y, speed x, speed y, radius) adds a
    second, textured disc in front of everything that the matte leaves out (not to be erased): the true
    background then holds it where it is."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out, mattes, backgrounds, subjects = [], [], [], []
    for t in range(frames):
        background = texture((x + pan[0] * t) / texture_scale, (y + pan[1] * t) / texture_scale)
        cx, cy = subject_start[0] + subject_speed[0] * t, subject_start[1] + subject_speed[1] * t
        distance = np.hypot(x - cx, y - cy)
        disc = distance <= radius
        picture = np.where(disc[..., None], np.array([0.9, 0.1, 0.1], np.float32), background)
        matte = distance <= radius + grow
        if other is not None:  # its own texture, moving with it, darker than the background's
            ox, oy = other[0] + other[2] * t, other[1] + other[3] * t
            front = np.hypot(x - ox, y - oy) <= other[4]
            look = 0.5 * texture(2.0 * (x - ox) + 50.0, 2.0 * (y - oy) + 50.0)
            picture = np.where(front[..., None], look, picture)
            background = np.where(front[..., None], look, background)
            matte &= ~front
        out.append(np.rint(picture * 255).astype(np.uint8))
        mattes.append(matte.astype(np.float32))
        if keep_background:
            backgrounds.append(background.astype(np.float32))
        subjects.append(disc)
    kept = np.stack(backgrounds) if keep_background else None
    return PanningClip(np.stack(out), np.stack(mattes), kept, np.stack(subjects))
