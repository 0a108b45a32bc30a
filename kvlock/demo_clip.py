"""A procedural test clip with an exact matte: a slowly panning striped background and a moving disc.

Used by the README's main command and by tests, so an edit can run anywhere without media files.
"""

from __future__ import annotations

import numpy as np


def demo_clip(frames: int = 25, height: int = 120, width: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (frames uint8 (T, H, W, 3), matte uint8 (T, H, W) with 255 on the disc)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    clip = np.empty((frames, height, width, 3), np.uint8)
    matte = np.zeros((frames, height, width), np.uint8)
    grain = rng.normal(0.0, 6.0, (height, width, 3)).astype(np.float32)
    radius = min(height, width) * 0.18
    for t in range(frames):
        stripes = 0.5 + 0.5 * np.sin((x + 1.5 * t) / 7.0)
        background = np.stack([60 + 120 * stripes, 90 + 60 * (y / height), 140 - 80 * stripes], -1) + grain
        cx = width * 0.25 + (width * 0.5) * t / max(1, frames - 1)
        cy = height * 0.5 + height * 0.12 * np.sin(t / 4.0)
        disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
        background[disc] = (230, 200, 40)
        clip[t] = np.clip(background, 0, 255).astype(np.uint8)
        matte[t][disc] = 255
    return clip, matte
