"""Putting an edit back into the source, window by window (the compositing maths is ``compositing``).

Frame by frame, so memory stays one source frame per window however long or large the clip. Outside the
feathered matte the output is the source frame itself, so only the matte's box is blended; its cost follows
the subject's size. Frames no window edits stay the source.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import EditCancelled
from ..media.colour import PixelEncoding
from ..plate import INVENTED, ORIGINAL, PlateFrames
from .compositing import (
    composite_frame,
    edited_region_rgba,
    feather_matte,
    handover_weight,
    inner_ramp,
    support_box,
    with_source_detail,
)
from .geometry import Window, resize_video
from .request import EditRequest


@dataclass
class Decoded:
    """One window's decoded edit E and reconstruction R of its source, (T, 3, h, w) in [0, 1], from its
    first frame (the lead-in included, for the hand-over); R is None when nothing needs it (no feather)."""

    edit: torch.Tensor
    reconstruction: torch.Tensor | None


class Composer:
    """The output of an edit, filled window by window: each window composites the frames it owns.

    Frame by frame, so memory stays one source frame per window however long or large the clip. Outside
    the feathered matte the output is the source frame itself, so only the matte's box is blended; its
    cost follows the subject's size. Frames no window edits stay the source. The edit and the source's
    detail (``with_source_detail``) are combined in the model's space; the result goes back to the plate's
    encoding and is blended there (linear light for linear plates). A plate's alpha channel is copied,
    never edited.
    """

    def __init__(
        self, request: EditRequest, encoding: PixelEncoding, matte: np.ndarray, feather: int, keep_seen: bool = False
    ) -> None:
        src = request.frames
        self.source, self.encoding, self.matte, self.feather = src, encoding, matte, feather
        self.out = src.copy()
        self.region = np.zeros((*src.shape[:3], 4), dtype=src.dtype) if request.return_region else None
        self.raw = encoding.to_model(src[..., :3]) if request.return_raw else None
        # the clean plate of the window being composited (None: the edit started from the source as filmed), and
        # whether the pixels it saw in other frames are kept as filmed (an erase)
        self.plate: PlateFrames | None = None
        self.keep_seen = keep_seen

    def add(self, plan: Window, decoded: Decoded | None, cancel: threading.Event | None = None, steps: int = 0) -> None:
        """Composite the window's frames; a cancel is honoured between frames, as between steps.

        Frames it owns are written; its lead-in's frames ramp from the previous window's result to this
        one's (``handover_weight``), inside the feathered matte only, so the background stays the source's.
        """
        if decoded is None:
            return
        for j in range(plan.start, plan.end):
            if cancel is not None and cancel.is_set():
                raise EditCancelled(steps, steps)
            k = j - plan.start
            self._frame(j, plan, decoded, k, handover_weight(k, plan.context))

    def _plate_pixels(self, j: int, r: slice, c: slice) -> np.ndarray | None:
        if self.plate is None:
            return None
        return self.plate.frames[j - self.plate.start][r, c, :3]

    def _keep(self, j: int, r: slice, c: slice) -> np.ndarray:
        """How much of the clean plate an erase keeps as filmed inside the hole: all of what another frame
        showed, none of what was invented once ``feather`` pixels inside it (a ramp, so the model's paint meets
        the film softly); outside the hole nothing (the composite's own feather ring applies there)."""
        assert self.plate is not None
        origin = self.plate.origin[j - self.plate.start][r, c]
        ramp = inner_ramp(self.plate.origin[j - self.plate.start] == INVENTED, self.feather)[r, c]
        return np.where(origin == ORIGINAL, 0.0, 1.0 - ramp).astype(np.float32)

    def _frame(self, j: int, plan: Window, decoded: Decoded, k: int, weight: float = 1.0) -> None:
        src = self.source[j]
        height, width = src.shape[:2]
        feathered = feather_matte(self.matte[j], self.feather)
        # only the feathered matte's box can differ from the source, unless full-frame outputs are wanted
        whole = (slice(0, height), slice(0, width))
        box = whole if self.region is not None or self.raw is not None else support_box(feathered)
        if box is None:
            return
        r, c = box
        pb = plan.box
        r0, r1 = max(pb.top, r.start), min(pb.top + pb.height, r.stop)
        c0, c1 = max(pb.left, c.start), min(pb.left + pb.width, c.stop)
        source = src[r, c, :3]
        plate = self._plate_pixels(j, r, c)
        base = self.encoding.to_model(source if plate is None else plate)  # what the model started from
        edited, reconstruction = base.copy(), base.copy()
        covered = np.zeros(base.shape[:2], bool)
        if r0 < r1 and c0 < c1:
            inside = (slice(r0 - r.start, r1 - r.start), slice(c0 - c.start, c1 - c.start))
            part = (slice(r0 - pb.top, r1 - pb.top), slice(c0 - pb.left, c1 - pb.left))
            for target, pixels in ((edited, decoded.edit), (reconstruction, decoded.reconstruction)):
                if pixels is not None:
                    frame = resize_video(pixels[k : k + 1], pb.height, pb.width)[0].permute(1, 2, 0).numpy()
                    target[inside] = frame[part]
            covered[inside] = True
        alpha = np.where(covered, feathered[r, c], 0.0).astype(np.float32)
        layer = edited
        if decoded.reconstruction is not None:
            inner = inner_ramp(self.matte[j], self.feather)[r, c]
            layer = with_source_detail(edited, reconstruction, base, inner, 1.0)
        plate_layer = np.where(covered[..., None], self.encoding.from_model(layer), source)
        if self.keep_seen and plate is not None:
            keep = self._keep(j, r, c)[..., None]
            plate_layer = keep * plate.astype(np.float32) + (1.0 - keep) * plate_layer
        frame = composite_frame(source, plate_layer, alpha)
        if weight >= 1.0:
            self.out[j][r, c, :3] = frame
            if self.region is not None:
                self.region[j] = edited_region_rgba(plate_layer, alpha, src.dtype)
            if self.raw is not None:
                self.raw[j] = edited
            return
        # the hand-over: only where this window's composite can differ from the source
        ramp = np.where(alpha > 0, np.float32(weight), np.float32(0.0))
        self.out[j][r, c, :3] = composite_frame(self.out[j][r, c, :3], frame.astype(np.float32), ramp)
        if self.region is not None:
            region = edited_region_rgba(plate_layer, alpha, src.dtype)
            self.region[j] = composite_frame(self.region[j], region.astype(np.float32), ramp)
        if self.raw is not None:
            self.raw[j] = self.raw[j] + weight * (edited - self.raw[j])
