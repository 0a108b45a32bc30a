"""Where an edit happens: temporal windows over the clip and the spatial box each window is edited in.

Sources come in any size and length; the model wants frame counts of its own rule (Wan: 4k + 1), sides
that are multiples of 16, and about its native pixel count. A clip longer than the model's window is cut
into overlapping windows that start on multiples of the VAE's temporal factor and are spread evenly, so
the latent frames of every window are slots of one latent timeline of the clip (one noise field serves
all windows, ``first_slot``) and no frame is in three windows. A window's first ``context`` frames are
the previous window's result, locked (``kvlock.editor`` says why); a window shorter than a valid length
is padded by repeating its last frame.

In ``crop_to_matte`` mode each window edits a box around the matte (with a context margin) at model
resolution, so small subjects in large frames get more of the model's detail. The box always has the
grid's aspect (it is padded, never stretched) and at least 1 / ``MAX_UPSCALE`` of the grid's size; where
the frame is too small for that, the box reaches past the frame's edge and those pixels repeat the edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import SettingsError

# The overlap asked for when the request leaves it unset: a lead-in of two or more latent frames (frame 0
# and one window of a 4× causal VAE) carries the motion; lowered for short windows, so that no frame is
# in three windows (17-frame windows: 5 frames).
DEFAULT_OVERLAP = 8
# crop_to_matte: the model grid is at most this many times the box, per side. A small subject gets more
# context around it rather than a blurrier, larger copy of itself; 2× keeps the model's view of the
# source sharp enough to lock to while still giving a small subject twice its pixels.
MAX_UPSCALE = 2.0


@dataclass(frozen=True)
class Box:
    """A pixel rectangle [top, top + height) × [left, left + width) of a source frame (it may reach past
    the frame's edges, see ``crop_frames``)."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


@dataclass(frozen=True)
class Window:
    """Source frames [start, end) edited together, padded to ``model_frames`` for the model.

    The first ``context`` frames are also in the previous window: that window's result stays there, and
    this window sees it as locked source.
    """

    start: int
    end: int
    model_frames: int
    box: Box
    model_height: int
    model_width: int
    context: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start


def max_overlap(window: int, step: int) -> int:
    """The largest overlap (frames) of windows starting ``step`` frames apart that keeps every frame out of
    three windows: windows i and i + 2 must not meet, so two strides must span a window."""
    reach = -(-window // step)  # strides, in steps, from window i to window i + 2 at the least
    return max(0, window - step * (-(-reach // 2)))


def temporal_windows(total: int, window: int, overlap: int | None, step: int) -> list[tuple[int, int]]:
    """Cover [0, total) with windows of ``window`` frames that start on multiples of ``step``.

    Every overlap is at least ``overlap`` (``None``: ``DEFAULT_OVERLAP``, or ``max_overlap`` if smaller)
    and at least one frame; the fewest windows that allow it are spread evenly (strides differ by one step
    at most) with no frame in three windows. The last window ends at the clip's end and may be shorter
    than ``window``. Raises ``SettingsError`` when the overlap asked for cannot be met.
    """
    if total <= window:
        return [(0, total)]
    wanted = min(DEFAULT_OVERLAP, max_overlap(window, step)) if overlap is None else overlap
    longest = (window - max(1, wanted)) // step  # the longest stride that keeps the overlap
    if longest < 1:
        raise SettingsError(
            f"window_overlap {wanted} leaves no new frames in {window}-frame windows that start every {step} "
            f"frames: use at most {max(0, window - step)} frames, or longer windows (window_frames)"
        )
    span = -(-(total - window) // step)  # where the last window starts, in steps, at the least
    strides = -(-span // longest)
    if strides >= 2:
        reach = -(-window // step)
        if 2 * longest < reach:
            raise SettingsError(
                f"window_overlap {wanted} would put frames of this {total}-frame clip in three windows "
                f"({window}-frame windows start every {step} frames): use at most {max_overlap(window, step)}"
            )
        span = max(span, -(-(strides * reach) // 2))  # strides of reach / 2 or more, so i and i + 2 never meet
    starts = [step * ((2 * i * span + strides) // (2 * strides)) for i in range(strides + 1)]
    return [(s, min(s + window, total)) for s in starts]


def first_slot(start: int, step: int) -> int:
    """The latent slot of the clip that latent frame 0 of a window starting at ``start`` takes its noise from.

    A causal VAE encodes frame 0 alone, then frames 4j − 3 … 4j (``step`` = 4) as latent j. So the clip's
    slot 0 is frame 0 and slot n ≥ 1 is frames 4n − 3 … 4n. In a window starting at frame s = 4m, latent
    j ≥ 1 is frames 4(m + j) − 3 … 4(m + j): slot m + j. Its latent 0 is frame 4m alone, the last frame of
    slot m, so it takes slot m's noise. A window's latents are the contiguous slots m … m + J, and the same
    clip frames get the same noise in every window.
    """
    if start % step:
        raise ValueError(f"window start {start} is not a multiple of the VAE's temporal factor {step}")
    return start // step


def grid_size(height: int, width: int, area: int, multiple: int) -> tuple[int, int]:
    """Model (height, width) near ``area`` pixels with the source's aspect, each a multiple of ``multiple``."""
    scale = math.sqrt(area / (height * width))
    return _round_to(height * scale, multiple), _round_to(width * scale, multiple)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


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


def _place(centre: float, length: int, frame: int) -> int:
    """The first pixel of a span of ``length`` around ``centre``, shifted inside [0, frame) where it fits."""
    if length >= frame:
        return (frame - length) // 2  # centred on the frame, past both edges
    return min(max(0, math.floor(centre - length / 2 + 0.5)), frame - length)


def grown_box(box: Box, height: int, width: int, frame_h: int, frame_w: int) -> Box:
    """``box`` grown to at least ``height`` × ``width`` around its centre, inside the frame where it fits."""
    h, w = max(box.height, height), max(box.width, width)
    return Box(_place(box.top + box.height / 2, h, frame_h), _place(box.left + box.width / 2, w, frame_w), h, w)


def box_for_grid(box: Box, grid_h: int, grid_w: int, frame_h: int, frame_w: int) -> Box:
    """``box`` padded to the grid's aspect (never stretched) and to at least 1 / ``MAX_UPSCALE`` of it."""
    h = max(box.height, math.ceil(grid_h / MAX_UPSCALE))
    w = max(box.width, math.ceil(grid_w / MAX_UPSCALE))
    if w * grid_h < h * grid_w:
        w = math.ceil(h * grid_w / grid_h)
    else:
        h = math.ceil(w * grid_h / grid_w)
    return grown_box(box, h, w, frame_h, frame_w)


def crop_geometry(
    box: Box, frame_h: int, frame_w: int, *, area: int, multiple: int, size: tuple[int | None, int | None]
) -> tuple[Box, int, int]:
    """The box a ``crop_to_matte`` window edits, and its model (height, width).

    With a size from the user the grid is that size (a missing side follows the box's aspect). Otherwise
    the grid is the model's pixel count at the box's aspect, after the box has taken in context up to
    1 / ``MAX_UPSCALE`` of it; where the frame is too small for that, the grid shrinks to ``MAX_UPSCALE`` ×
    the box instead. Then the box is padded to the grid's exact aspect (the sides' rounding).
    """
    user_h, user_w = size
    if user_h is not None or user_w is not None:
        grid_h = user_h if user_h is not None else _round_to(user_w * box.height / box.width, multiple)
        grid_w = user_w if user_w is not None else _round_to(user_h * box.width / box.height, multiple)
        return box_for_grid(box, grid_h, grid_w, frame_h, frame_w), grid_h, grid_w
    grid_h, grid_w = grid_size(box.height, box.width, area, multiple)
    need_h, need_w = (min(frame, math.ceil(g / MAX_UPSCALE)) for frame, g in ((frame_h, grid_h), (frame_w, grid_w)))
    wider = grown_box(box, need_h, need_w, frame_h, frame_w)
    grid_h, grid_w = grid_size(wider.height, wider.width, area, multiple)
    grid_h = min(grid_h, max(multiple, math.floor(MAX_UPSCALE * wider.height / multiple) * multiple))
    grid_w = min(grid_w, max(multiple, math.floor(MAX_UPSCALE * wider.width / multiple) * multiple))
    return box_for_grid(wider, grid_h, grid_w, frame_h, frame_w), grid_h, grid_w


def crop_frames(frames: np.ndarray, box: Box, pad: str = "edge") -> np.ndarray:
    """``frames`` (T, H, W, ...) inside ``box``, which may reach past the frame: there ``pad="edge"`` repeats
    the edge pixels and ``pad="zero"`` fills zeros (for mattes: nothing past the frame is edited)."""
    frame_h, frame_w = frames.shape[1:3]
    top, left = max(0, box.top), max(0, box.left)
    bottom, right = min(frame_h, box.top + box.height), min(frame_w, box.left + box.width)
    inside = frames[:, top:bottom, left:right]
    widths = [(0, 0), (top - box.top, box.top + box.height - bottom), (left - box.left, box.left + box.width - right)]
    if not any(a or b for a, b in widths):
        return inside
    widths += [(0, 0)] * (frames.ndim - 3)
    return np.pad(inside, widths, mode="edge") if pad == "edge" else np.pad(inside, widths)


def plan_windows(
    matte: np.ndarray,
    *,
    window: int,
    overlap: int | None,
    step: int,
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
    done = 0  # frames [0, done) belong to earlier windows
    for start, end in temporal_windows(total, window, overlap, step):
        if geometry == "crop_to_matte" and matte[start:end].any():
            near = matte_box(matte[start:end], crop_margin, min_margin, frame_h, frame_w)
            box, mh, mw = crop_geometry(near, frame_h, frame_w, area=area, multiple=multiple, size=size)
        else:
            box = Box(0, 0, frame_h, frame_w)
            mh, mw = grid_size(frame_h, frame_w, area, multiple)
            mh = size[0] if size[0] is not None else mh
            mw = size[1] if size[1] is not None else mw
        plans.append(Window(start, end, valid_frames(end - start), box, mh, mw, max(0, min(done, end) - start)))
        done = max(done, end)
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
