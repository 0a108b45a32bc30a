"""Clips for the README's main command and for tests, generated so an edit runs anywhere without media.

``demo_clip`` is a plain moving disc over stripes at any size; ``demo_case`` is an in-distribution edit for
the shipped model (96×96, 17 frames) with its ground truth, the edit the README demonstrates.
"""

from __future__ import annotations

import numpy as np

from .cases import EditCase, case_from_scenes
from .scenes import ObjectSpec, SceneSpec

DEMO_SOURCE = SceneSpec("stripes", "dark", (ObjectSpec("circle", "red", "large", "right", 0.4, 0.5),), seed=7)
DEMO_TARGET = DEMO_SOURCE.with_object(0, shape="square", colour="blue")
DEMO_SEED = 0


def demo_case() -> EditCase:
    """The README's edit: the red circle becomes a blue square; the generator renders the right answer."""
    return case_from_scenes("demo", "restyle", DEMO_SOURCE, DEMO_TARGET, DEMO_SEED)


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
