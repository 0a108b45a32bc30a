"""Following the points behind the subject from frame to frame, taking them where a frame shows them, and
inventing the rest.

Each point p of a frame's hole is followed one frame at a time, backwards and forwards, along the completed
flow between neighbouring frames (``flow``): from frame j to j ± 1 it moves by w = F_{j→j±1}(p). One frame at a
time, because flow is reliable over small steps and not over large ones: DIS matched a texture that repeats
every 10–40 pixels to the wrong period once frames were 16 pixels apart (measured on the tests' panning
clip), and both directions agreed on the wrong match, so no check could tell. A point is dropped from its
trail where

- the two frames' completed flows disagree there (``flow.consistent`` between w and the backward flow where
  p lands): each frame continues the background's motion into its hole from its own side, and where they
  disagree neither can be believed,
- or it leaves the frame.

In each frame it reaches, a point is taken if the frame shows background there: outside that frame's matte
grown by a margin (so neither the subject nor its soft edge is copied), where that frame's own flow passed
the check and does not move apart from its background (``flow.moving_apart``: another subject the matte
leaves out, passing over the point), and a finite value. The nearest frame that shows a point gives it:
frames at distance 1 (before, then after), then 2, and so on.

Points no frame shows are invented by spatial inpainting (:func:`invent`, OpenCV's Navier–Stokes inpainting)
from everything known around them, the points just taken included.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .flow import consistent, sample

INVENT_RADIUS = 5  # pixels of neighbourhood the inpainting weighs


@dataclass(frozen=True)
class Scale:
    """Between a frame's pixels and the working size of its flows (pixel centres map to pixel centres)."""

    height: int
    width: int
    work_height: int
    work_width: int

    @property
    def factors(self) -> tuple[float, float]:
        return self.work_width / self.width, self.work_height / self.height

    def to_work(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fx, fy = self.factors
        return (x + 0.5) * fx - 0.5, (y + 0.5) * fy - 0.5

    def to_full(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fx, fy = self.factors
        return (x + 0.5) / fx - 0.5, (y + 0.5) / fy - 0.5


@dataclass(frozen=True)
class Trail:
    """Points of one frame's hole followed in one direction: which points (``index`` into the hole's list) and
    where they are, in working pixels, in frame ``frame``."""

    index: np.ndarray
    x: np.ndarray
    y: np.ndarray
    frame: int

    def keep(self, which: np.ndarray) -> Trail:
        return Trail(self.index[which], self.x[which], self.y[which], self.frame)

    def __len__(self) -> int:
        return len(self.index)


def hop(trail: Trail, onward: np.ndarray, back: np.ndarray, to: int) -> Trail:
    """The trail one frame on: ``onward`` is the completed flow from its frame to frame ``to``, ``back`` the
    one from ``to`` back (working size). Points whose two flows disagree or that leave the frame are dropped."""
    w = sample(onward, trail.x, trail.y)
    x, y = trail.x + w[..., 0], trail.y + w[..., 1]
    h, wd = onward.shape[:2]
    inside = (x >= -0.5) & (y >= -0.5) & (x <= wd - 0.5) & (y <= h - 0.5)
    agree = consistent(w, sample(back, x, y))
    moved = Trail(trail.index, x, y, to)
    return moved.keep(inside & agree)


def take(
    trail: Trail, frame: np.ndarray, blocked: np.ndarray, verified: np.ndarray, scale: Scale
) -> tuple[np.ndarray, np.ndarray]:
    """(values (N, C) float32, shown (N,) bool): the trail's points as ``frame`` (H, W, C) shows them, and
    whether it shows background there: not ``blocked`` (its matte, full size), where the frame's own flow back
    passed the check (``verified``, working size), a finite value."""
    vx = np.clip(np.rint(trail.x), 0, verified.shape[1] - 1).astype(np.intp)
    vy = np.clip(np.rint(trail.y), 0, verified.shape[0] - 1).astype(np.intp)
    fx, fy = scale.to_full(trail.x, trail.y)
    fx = np.clip(fx, 0.0, scale.width - 1.0)
    fy = np.clip(fy, 0.0, scale.height - 1.0)
    near_r = np.rint(fy).astype(np.intp)
    near_c = np.rint(fx).astype(np.intp)
    values = sample(frame, fx, fy)
    shown = ~blocked[near_r, near_c] & verified[vy, vx] & np.isfinite(values).all(axis=-1)
    return values, shown


def invent(frame: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``frame`` (H, W, C) float32 with ``hole`` filled from its surroundings (Navier–Stokes inpainting per
    channel, over the hole's box and a margin only). A hole over the whole frame has nothing around it."""
    if not hole.any():
        return frame
    if hole.all():
        raise ValueError("nothing around the hole to invent it from")
    rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
    margin = 4 * INVENT_RADIUS
    r0, r1 = max(0, rows[0] - margin), min(hole.shape[0], rows[-1] + margin + 1)
    c0, c1 = max(0, cols[0] - margin), min(hole.shape[1], cols[-1] + margin + 1)
    crop = np.nan_to_num(frame[r0:r1, c0:c1], nan=0.0, posinf=0.0, neginf=0.0)
    mask = hole[r0:r1, c0:c1].astype(np.uint8)
    out = frame.copy()
    for c in range(frame.shape[-1]):
        filled = cv2.inpaint(np.ascontiguousarray(crop[..., c]), mask, INVENT_RADIUS, cv2.INPAINT_NS)
        out[r0:r1, c0:c1, c] = np.where(mask > 0, filled, frame[r0:r1, c0:c1, c])
    return out
