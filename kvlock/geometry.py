"""Where an edit happens: temporal windows over the clip and the spatial box each window is edited in.

Sources come in any size and length; the model wants frame counts of its own rule (Wan: 4k + 1), sides
that are multiples of 16, and about its native pixel count. A clip longer than the model's window is cut
into overlapping windows, each padded to a valid length by repeating its last frame; their results are
cross-faded in the overlaps. In ``crop_to_matte`` mode each window edits a box around the matte (with a
context margin) at model resolution, so small subjects in large frames get the model's full detail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Box:
    """A pixel rectangle [top, top + height) × [left, left + width) of a source frame."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


@dataclass(frozen=True)
class Window:
    """Source frames [start, end) edited together, padded to ``model_frames`` for the model."""

    start: int
    end: int
    model_frames: int
    box: Box
    model_height: int
    model_width: int

    @property
    def length(self) -> int:
        return self.end - self.start


def temporal_windows(total: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Cover [0, total) with windows of at most ``window`` frames overlapping by ``overlap``.

    The last window is aligned to the end of the clip so no window is shorter than it must be.
    """
    if total <= window:
        return [(0, total)]
    overlap = min(overlap, window - 1)
    stride = window - overlap
    starts = [*list(range(0, total - window, stride)), total - window]
    return [(s, s + window) for s in starts]


def crossfade_weights(windows: list[tuple[int, int]], total: int) -> list[np.ndarray]:
    """Per-window frame weights that ramp linearly across each overlap and sum to 1 on every frame."""
    raw = []
    for i, (start, end) in enumerate(windows):
        w = np.ones(end - start, dtype=np.float64)
        if i > 0:
            lead = windows[i - 1][1] - start
            if lead > 0:
                w[:lead] = np.minimum(w[:lead], (np.arange(lead) + 1) / (lead + 1))
        if i + 1 < len(windows):
            tail = end - windows[i + 1][0]
            if tail > 0:
                w[-tail:] = np.minimum(w[-tail:], (tail - np.arange(tail)) / (tail + 1))
        raw.append(w)
    total_w = np.zeros(total)
    for (start, end), w in zip(windows, raw, strict=True):
        total_w[start:end] += w
    return [w / total_w[start:end] for (start, end), w in zip(windows, raw, strict=True)]


def grid_size(height: int, width: int, area: int, multiple: int) -> tuple[int, int]:
    """Model (height, width) near ``area`` pixels with the source's aspect, each a multiple of ``multiple``."""
    scale = math.sqrt(area / (height * width))
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    return h, w


def matte_box(matte: np.ndarray, margin: float, min_margin: int, frame_h: int, frame_w: int) -> Box:
    """Bounding box of the matte over all frames, grown by ``margin`` of its size (at least ``min_margin``)."""
    rows = np.flatnonzero(matte.any(axis=(0, 2)))
    cols = np.flatnonzero(matte.any(axis=(0, 1)))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dy = max(min_margin, math.ceil((bottom - top) * margin))
    dx = max(min_margin, math.ceil((right - left) * margin))
    top, left = max(0, top - dy), max(0, left - dx)
    bottom, right = min(frame_h, bottom + dy), min(frame_w, right + dx)
    return Box(int(top), int(left), int(bottom - top), int(right - left))


def plan_windows(
    matte: np.ndarray,
    *,
    window: int,
    overlap: int,
    valid_frames: Callable[[int], int],
    geometry: str,
    area: int,
    multiple: int,
    size: tuple[int | None, int | None],
    crop_margin: float,
    min_margin: int,
) -> list[Window]:
    """Lay out every window of an edit; ``matte`` is (T, H, W) boolean at source resolution."""
    total, frame_h, frame_w = matte.shape
    plans = []
    for start, end in temporal_windows(total, window, overlap):
        if geometry == "crop_to_matte" and matte[start:end].any():
            box = matte_box(matte[start:end], crop_margin, min_margin, frame_h, frame_w)
        else:
            box = Box(0, 0, frame_h, frame_w)
        mh, mw = grid_size(box.height, box.width, area, multiple)
        mh = size[0] if size[0] is not None else mh
        mw = size[1] if size[1] is not None else mw
        plans.append(Window(start, end, valid_frames(end - start), box, mh, mw))
    return plans


def resize_video(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, C, H, W) float → (T, C, height, width); antialiased when shrinking, bilinear when growing."""
    if video.shape[-2:] == (height, width):
        return video
    shrinking = height < video.shape[-2] or width < video.shape[-1]
    return F.interpolate(video, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)


def pad_frames(video: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat the last frame (dim 0) until there are ``frames``."""
    missing = frames - video.shape[0]
    if missing <= 0:
        return video
    return torch.cat([video, video[-1:].expand(missing, *video.shape[1:])])
