"""Held-out edit cases for the quality benchmark: a training-style clip whose object must become a
(shape, colour) pair the model never saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .scenes import HELD_OUT, SceneSpec, render_scene, sample_scene


@dataclass(frozen=True)
class EditCase:
    name: str
    source: SceneSpec
    target: SceneSpec
    frames: np.ndarray  # (T, H, W, 3) uint8
    matte: np.ndarray  # (T, H, W) float: the source object's matte, grown so the new shape fits
    background: np.ndarray  # (T, H, W, 3) float in [0, 1], the true background
    seed: int

    @property
    def prompt(self) -> str:
        return self.target.caption()

    @property
    def source_prompt(self) -> str:
        return self.source.caption()


def edit_cases(count: int, seed: int = 1234, grow: int = 6) -> list[EditCase]:
    """``count`` reproducible cases; each target is a held-out (shape, colour) pair."""
    generator = torch.Generator().manual_seed(seed)
    held = sorted(HELD_OUT)
    cases = []
    for i in range(count):
        source = sample_scene(generator, max_objects=1)
        obj = source.objects[0]
        choices = [(s, c) for s, c in held if (s, c) != (obj.shape, obj.colour)]
        shape, colour = choices[i % len(choices)]
        target = source.with_object(0, shape=shape, colour=colour, size="large")
        source = source.with_object(0, size="large")
        video, mattes, background = render_scene(source)
        grown = F.max_pool2d((mattes[0] > 0).float()[:, None], 2 * grow + 1, 1, grow)[:, 0]
        frames = (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        cases.append(
            EditCase(
                f"case{i:02d}", source, target, frames, grown.numpy(), background.permute(0, 2, 3, 1).numpy(), seed + i
            )
        )
    return cases
