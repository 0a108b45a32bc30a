"""Putting an edit back into the source, window by window (the compositing maths is ``compositing``).

Only the window's :class:`~.decode_box.DecodeBox` region is composited — everywhere else the output is the
source frame itself — and it is composited where the decode already is (the GPU, unless the execution
options say ``composite="cpu"``): the source's pixels of that region go to the device in chunks of frames,
the composite comes back. The edit and the source's detail (``source_detail``) are combined in the model's
space; the result goes back to the plate's encoding and is blended there (linear light for linear plates).
A plate's alpha channel is copied, never edited. Frames no window edits stay the source.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import EditCancelled
from ..media.colour import DisplayReferred, PixelEncoding
from ..plate import INVENTED, ORIGINAL, PlateFrames
from .compositing import blend, feather_weights, full_scale, handover_weight, inner_weights, region_rgba, source_detail
from .decode_box import DecodeBox
from .geometry import Window, resize_video
from .request import EditRequest

CHUNK_BYTES = 256 * 1024**2  # the float working set of one chunk of frames on the device


@dataclass
class Decoded:
    """One window's decoded edit E and reconstruction R of its source, (T, 3, h, w) in [0, 1] over the model
    pixels of ``box`` (its ``model_rows`` × ``model_cols``), from the window's first frame (the lead-in
    included, for the hand-over); R is None when nothing needs it (no feather)."""

    edit: torch.Tensor
    reconstruction: torch.Tensor | None
    box: DecodeBox


@dataclass(frozen=True)
class WindowMattes:
    """The feathered matte (the composite's weight) and the inner ramp (where the reconstruction may show)
    of a window's frames over its region, on the compositing device; shared by every take."""

    weight: torch.Tensor
    inner: torch.Tensor

    @classmethod
    def of(cls, matte: np.ndarray, plan: Window, box: DecodeBox, feather: int, device: torch.device) -> WindowMattes:
        """Filtered over the region and the filters' reach around it (exactly as over the whole frame)."""
        frame_h, frame_w = matte.shape[1:]
        reach = 3 * feather + 1
        rows = slice(max(0, box.rows.start - reach), min(frame_h, box.rows.stop + reach))
        cols = slice(max(0, box.cols.start - reach), min(frame_w, box.cols.stop + reach))
        crop = torch.from_numpy(np.ascontiguousarray(matte[plan.start : plan.end, rows, cols], np.float32)).to(device)
        inside = (slice(box.rows.start - rows.start, box.rows.stop - rows.start),
                  slice(box.cols.start - cols.start, box.cols.stop - cols.start))  # fmt: skip
        weight, inner = feather_weights(crop, feather), inner_weights(crop, feather)
        return cls(weight[:, inside[0], inside[1]], inner[:, inside[0], inside[1]])


def to_device(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """Plate pixels as a tensor on ``device`` (16-bit integers as int32: the devices' widest common kind)."""
    array = np.ascontiguousarray(pixels)
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    return torch.from_numpy(array).to(device)


def to_model(encoding: PixelEncoding, pixels: torch.Tensor) -> torch.Tensor:
    """Plate values → the model's [0, 1] on the pixels' device; a plate's curve other than a plain scale
    runs the encoding's own (numpy) code."""
    if isinstance(encoding, DisplayReferred):
        return torch.clamp(pixels.float() / encoding.white, 0.0, 1.0)
    return torch.from_numpy(encoding.to_model(pixels.cpu().numpy())).to(pixels.device)


def from_model(encoding: PixelEncoding, values: torch.Tensor) -> torch.Tensor:
    """The model's values → the plate's units (float32), on the values' device."""
    if isinstance(encoding, DisplayReferred):
        return values.float() * encoding.white
    return torch.from_numpy(encoding.from_model(values.cpu().numpy())).to(values.device)


class Composer:
    """The output of one take of an edit, filled window by window: each window composites the frames it owns.

    Outside its region every output pixel is the source's, bit for bit (the copy made here); inside, where the
    feathered matte is zero, :func:`~.compositing.blend` copies the source pixel too. ``device`` is where the
    composite runs (the decode's device).
    """

    def __init__(
        self,
        request: EditRequest,
        encoding: PixelEncoding,
        matte: np.ndarray,
        feather: int,
        device: torch.device,
        keep_seen: bool = False,
    ) -> None:
        src = request.frames
        self.source, self.encoding, self.matte, self.feather, self.device = src, encoding, matte, feather, device
        self.out = src.copy()
        self.region = np.zeros((*src.shape[:3], 4), dtype=src.dtype) if request.return_region else None
        self.raw = encoding.to_model(src[..., :3]) if request.return_raw else None
        self.integer = np.issubdtype(src.dtype, np.integer)
        self.limits = (int(np.iinfo(src.dtype).min), int(np.iinfo(src.dtype).max)) if self.integer else None
        # the clean plate of the window being composited (None: the edit started from the source as filmed), and
        # whether the pixels it saw in other frames are kept as filmed (an erase)
        self.plate: PlateFrames | None = None
        self.keep_seen = keep_seen

    @property
    def whole(self) -> bool:
        """Whether whole frames are wanted besides the composite (the region's RGBA, the raw decode)."""
        return self.region is not None or self.raw is not None

    def add(
        self,
        plan: Window,
        decoded: Decoded | None,
        mattes: WindowMattes | None = None,
        cancel: threading.Event | None = None,
        steps: int = 0,
    ) -> None:
        """Composite the window's frames; a cancel is honoured between chunks of frames, as between steps.

        Frames it owns are written; its lead-in's frames ramp from the previous window's result to this
        one's (``handover_weight``), inside the feathered matte only, so the background stays the source's.
        """
        if decoded is None:
            return
        box = decoded.box
        if mattes is None:
            mattes = WindowMattes.of(self.matte, plan, box, self.feather, self.device)
        area = max(plan.box.height * plan.box.width, plan.model_height * plan.model_width)
        chunk = max(1, CHUNK_BYTES // (4 * 3 * 4 * area))  # canvases and resized frames of edit and reconstruction
        for first in range(0, plan.length, chunk):
            if cancel is not None and cancel.is_set():
                raise EditCancelled(steps, steps)
            self._chunk(plan, decoded, mattes, first, min(plan.length, first + chunk))

    def _plate_pixels(self, frames: slice, box: DecodeBox) -> torch.Tensor | None:
        """The clean plate's pixels of ``frames`` over the region, on the device (None: no plate)."""
        if self.plate is None:
            return None
        at = slice(frames.start - self.plate.start, frames.stop - self.plate.start)
        return to_device(self.plate.frames[at, box.rows, box.cols, :3], self.device)

    def _keep(self, frames: slice, box: DecodeBox) -> torch.Tensor:
        """How much of the clean plate an erase keeps as filmed inside the hole: all of what another frame
        showed, none of what was invented once ``feather`` pixels inside it (a ramp, so the model's paint meets
        the film softly); outside the hole nothing (the composite's own feather ring applies there). The ramp
        is filtered over the region and its reach around it, exactly as over the whole frame."""
        assert self.plate is not None
        origin = self.plate.origin[frames.start - self.plate.start : frames.stop - self.plate.start]
        frame_h, frame_w = origin.shape[1:]
        reach = self.feather + 1
        rows = slice(max(0, box.rows.start - reach), min(frame_h, box.rows.stop + reach))
        cols = slice(max(0, box.cols.start - reach), min(frame_w, box.cols.stop + reach))
        crop = torch.from_numpy(np.ascontiguousarray(origin[:, rows, cols])).to(self.device)
        inside = (slice(box.rows.start - rows.start, box.rows.stop - rows.start),
                  slice(box.cols.start - cols.start, box.cols.stop - cols.start))  # fmt: skip
        ramp = inner_weights((crop == INVENTED).float(), self.feather)[:, inside[0], inside[1]]
        return torch.where(crop[:, inside[0], inside[1]] == ORIGINAL, 0.0, 1.0 - ramp)

    def _resized(self, plan: Window, pixels: torch.Tensor, box: DecodeBox, first: int, last: int) -> torch.Tensor:
        """Frames [first, last) of decoded ``pixels`` at source resolution over the region, channels last.

        The decode is put back on a canvas of the window's model grid and the whole box resized, so each
        region pixel is exactly what resizing a whole-frame decode gives: it reads only model pixels inside
        the decoded box (``decode_box.resize_reach``)."""
        pb = plan.box
        canvas = pixels.new_zeros((last - first, pixels.shape[1], plan.model_height, plan.model_width))
        canvas[:, :, box.model_rows, box.model_cols] = pixels[first:last].to(canvas.device)
        resized = resize_video(canvas, pb.height, pb.width)
        rows = slice(box.rows.start - pb.top, box.rows.stop - pb.top)
        cols = slice(box.cols.start - pb.left, box.cols.stop - pb.left)
        return resized[:, :, rows, cols].permute(0, 2, 3, 1)

    def _chunk(self, plan: Window, decoded: Decoded, mattes: WindowMattes, first: int, last: int) -> None:
        box, frames = decoded.box, slice(plan.start + first, plan.start + last)
        source = to_device(self.source[frames, box.rows, box.cols, :3], self.device)
        plate = self._plate_pixels(frames, box)
        base = to_model(self.encoding, source if plate is None else plate)  # what the model started from
        edited = self._resized(plan, decoded.edit, box, first, last)
        alpha = mattes.weight[first:last]
        layer = edited
        if decoded.reconstruction is not None:
            reconstruction = self._resized(plan, decoded.reconstruction, box, first, last)
            layer = source_detail(edited, reconstruction, base, mattes.inner[first:last], 1.0)
        plate_layer = from_model(self.encoding, layer)
        if self.keep_seen and plate is not None:
            keep = self._keep(frames, box)[..., None]
            plate_layer = keep * plate.float() + (1.0 - keep) * plate_layer
        composite = blend(source, plate_layer, alpha, self.limits)
        weights = torch.tensor([handover_weight(k, plan.context) for k in range(first, last)], device=self.device)
        full = bool((weights >= 1.0).all())
        if not full:  # the hand-over: only where this window's composite can differ from the source
            ramp = torch.where(alpha > 0, weights[:, None, None], 0.0)
            before = to_device(self.out[frames, box.rows, box.cols, :3], self.device)
            composite = blend(before, composite.float(), ramp, self.limits)
        self.out[frames, box.rows, box.cols, :3] = self._back(composite)
        if self.region is not None:
            self._region(frames, box, plate_layer, alpha, weights, full)
        if self.raw is not None:
            self._raw(frames, box, edited, weights)

    def _back(self, pixels: torch.Tensor) -> np.ndarray:
        return pixels.cpu().numpy().astype(self.source.dtype, copy=False)

    def _region(
        self,
        frames: slice,
        box: DecodeBox,
        plate_layer: torch.Tensor,
        alpha: torch.Tensor,
        weights: torch.Tensor,
        full: bool,
    ) -> None:
        """The edited region as straight RGBA; outside the box, the source's colour at alpha 0."""
        scale = full_scale(self.source.dtype)
        rgba = region_rgba(plate_layer, alpha, scale, self.integer)
        if full:
            self.region[frames, ..., :3] = self.source[frames, ..., :3]
            self.region[frames, ..., 3] = 0
            self.region[frames, box.rows, box.cols] = self._back(rgba)
            return
        ramp = torch.where(alpha > 0, weights[:, None, None], 0.0)
        before = to_device(self.region[frames, box.rows, box.cols], self.device)
        self.region[frames, box.rows, box.cols] = self._back(blend(before, rgba, ramp, self.limits))

    def _raw(self, frames: slice, box: DecodeBox, edited: torch.Tensor, weights: torch.Tensor) -> None:
        before = torch.from_numpy(np.ascontiguousarray(self.raw[frames, box.rows, box.cols])).to(self.device)
        w = weights[:, None, None, None]
        mixed = torch.where(w >= 1.0, edited, before + w * (edited - before))
        self.raw[frames, box.rows, box.cols] = mixed.cpu().numpy()
