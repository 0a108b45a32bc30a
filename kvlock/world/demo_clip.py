"""Clips for the README's main command and for tests, generated so an edit runs anywhere without media.

``demo_clip`` is a plain moving disc over stripes at any size; ``demo_scene`` is an in-distribution
scene for the shipped model (96×96, 17 frames) with the edit the README demonstrates.
"""

from __future__ import annotations

import numpy as np

from .scenes import ObjectSpec, SceneSpec, render_scene

DEMO_SOURCE = SceneSpec("stripes", "dark", (ObjectSpec("circle", "red", "large", "right", 0.4, 0.5),), seed=7)
DEMO_TARGET = DEMO_SOURCE.with_object(0, shape="square", colour="blue")


def demo_scene() -> tuple[np.ndarray, np.ndarray, str, str]:
    """(frames uint8 (17, 96, 96, 3), matte uint8 (17, 96, 96), source caption, edit prompt)."""
    video, mattes, _ = render_scene(DEMO_SOURCE)
    frames = (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return frames, (mattes[0].numpy() * 255).round().astype(np.uint8), DEMO_SOURCE.caption(), DEMO_TARGET.caption()


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
