"""Shared fixtures: one tiny editor per session (building it costs seconds), small synthetic clips."""

from __future__ import annotations

import numpy as np
import pytest

import kvlock.world  # noqa: F401  (registers tiny-random)
from kvlock import Editor


@pytest.fixture(scope="session")
def editor() -> Editor:
    """The random-weight tiny Wan: every exactness property holds for any weights, and it is fastest."""
    return Editor.from_pretrained("tiny-random")


def make_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured uint8 clip: smooth gradients plus noise, so any pixel change is visible."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)), (x + y) % 256], -1)
    clip = np.repeat(base[None], frames, 0).astype(np.int32) + rng.integers(-20, 20, (frames, height, width, 3))
    return np.clip(clip, 0, 255).astype(np.uint8)


def box_matte(frames: int, height: int, width: int, top: int, left: int, h: int, w: int, drift: int = 0) -> np.ndarray:
    """A rectangular matte that moves ``drift`` pixels right per frame."""
    matte = np.zeros((frames, height, width), np.float32)
    for t in range(frames):
        x = min(width - w, left + drift * t)
        matte[t, top : top + h, x : x + w] = 1.0
    return matte
