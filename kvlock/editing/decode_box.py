"""The part of a window's decode that its composite reads: the latent box around the feathered matte, grown by
the VAE's reach.

Outside the feathered matte the output *is* the source, chosen pixel by pixel (docs/design.md §2.5), so of
the decoded edit and of the source's reconstruction only the feathered matte's box is ever read. Decoding
the whole frame twice cost an edit more than plain generation's single decode (docs/benchmarks.md); the
window decodes this box instead:

1. ``composite_region``: the source pixels the composite can change — the matte over the window's frames,
   grown by 2·feather (the feathered matte's support), inside the window's box and the frame.
2. ``resize_reach``: the model pixels the resize back to source resolution reads for them (bilinear, with
   the antialiasing filter's width when shrinking).
3. Their latent cells, grown by the decoder's reach (``probe_decoder``), inside the latent grid.

What a decoder computes over the whole frame — an attention over every position (Wan's VAE has one per
frame in its middle block), a normalisation over the frame (group norm) — must see the whole frame. So the
decoder runs on the whole latent frame up to its last such layer (cheap: that is at latent resolution in
Wan's VAE) and its output is cropped there (a forward hook on that block: the model's code is untouched);
only the layers after it run on the box, and the box's margin is their convolutions' reach: each one's
half-width at the scale it runs at, summed. Inside that margin every pixel is computed from exactly the
values a whole-frame decode computes it from, so the box is the whole-frame decode there to float rounding.
A decoder with no such layer (LTX-Video's) decodes the cropped latents; so does one that tiles (large
frames), its tiles being the same kind of approximation. docs/benchmarks.md gives the difference measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import Box

CONVOLUTIONS = (torch.nn.Conv2d, torch.nn.Conv3d)


@dataclass(frozen=True)
class DecodeBox:
    """Where one window's composite writes (``rows`` × ``cols``: source pixels, absolute) and the latent cells
    it decodes for that (``latent_rows`` × ``latent_cols``), ``scale`` pixels to a cell."""

    rows: slice
    cols: slice
    latent_rows: slice
    latent_cols: slice
    scale: int

    @property
    def model_rows(self) -> slice:
        return slice(self.latent_rows.start * self.scale, self.latent_rows.stop * self.scale)

    @property
    def model_cols(self) -> slice:
        return slice(self.latent_cols.start * self.scale, self.latent_cols.stop * self.scale)

    def cells(self, latent_size: tuple[int, int]) -> float:
        """The share of the latent grid decoded."""
        rows, cols = self.latent_rows.stop - self.latent_rows.start, self.latent_cols.stop - self.latent_cols.start
        return rows * cols / (latent_size[0] * latent_size[1])


def composite_region(matte: np.ndarray, feather: int, box: Box, whole: bool = False) -> tuple[slice, slice] | None:
    """The source pixels a window's composite can change: where any of its frames' feathered matte is
    non-zero — the matte grown by 2·feather (a max over 2·feather + 1, then a mean as wide) — inside its box
    and the frame; ``whole``: all of the box (outputs of whole frames). None where nothing can change.

    ``matte`` is the window's (T, H, W) at source resolution.
    """
    frame_h, frame_w = matte.shape[1:]
    top, bottom = max(0, box.top), min(frame_h, box.top + box.height)
    left, right = max(0, box.left), min(frame_w, box.left + box.width)
    if not whole:
        plane = (matte != 0).any(axis=0)
        rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        if rows.size == 0:
            return None
        reach = 2 * feather
        top, bottom = max(top, int(rows[0]) - reach), min(bottom, int(rows[-1]) + reach + 1)
        left, right = max(left, int(cols[0]) - reach), min(right, int(cols[-1]) + reach + 1)
    if top >= bottom or left >= right:
        return None
    return slice(top, bottom), slice(left, right)


def resize_reach(source: int, target: int, start: int, stop: int, antialias: bool) -> tuple[int, int]:
    """The source positions [first, last) that target positions [start, stop) of a bilinear resize from
    ``source`` to ``target`` samples read (``geometry.resize_video``'s filter, found by resizing the identity)."""
    if source == target:
        return start, stop
    # one image per source position, resized along its height (two columns: torch's antialiased filter
    # mishandles images one pixel wide)
    eye = torch.eye(source)[:, None, :, None].expand(source, 1, source, 2)
    weights = F.interpolate(eye, size=(target, 2), mode="bilinear", align_corners=False, antialias=antialias)
    used = (weights[:, 0, start:stop, 0] != 0).any(dim=1).nonzero()[:, 0]
    return int(used[0]), int(used[-1]) + 1


def latent_span(first: int, last: int, scale: int, margin: int, cells: int) -> slice:
    """Latent cells covering model pixels [first, last), grown by ``margin`` cells, inside [0, cells)."""
    return slice(max(0, first // scale - margin), min(cells, -(-last // scale) + margin))


def decode_box(
    matte: np.ndarray,
    feather: int,
    box: Box,
    model_size: tuple[int, int],
    scale: int,
    margin: int | None,
    whole: bool = False,
) -> DecodeBox | None:
    """The :class:`DecodeBox` of a window whose box ``box`` is edited at ``model_size`` (height, width) pixels,
    ``scale`` pixels to a latent cell, its VAE reaching ``margin`` cells (None: unknown, decode everything)."""
    region = composite_region(matte, feather, box, whole)
    if region is None:
        return None
    model_h, model_w = model_size
    cells_h, cells_w = model_h // scale, model_w // scale
    if margin is None:
        return DecodeBox(*region, slice(0, cells_h), slice(0, cells_w), scale)
    antialias = box.height < model_h or box.width < model_w  # as resize_video shrinks the decode to the box
    rows = resize_reach(model_h, box.height, region[0].start - box.top, region[0].stop - box.top, antialias)
    cols = resize_reach(model_w, box.width, region[1].start - box.left, region[1].stop - box.left, antialias)
    latent_rows = latent_span(*rows, scale, margin, cells_h)
    latent_cols = latent_span(*cols, scale, margin, cells_w)
    return DecodeBox(*region, latent_rows, latent_cols, scale)


@dataclass(frozen=True)
class DecoderReach:
    """How a VAE decoder can be run on a box. ``point`` is the block of the decoder whose output is cropped
    (after its last layer that sees the whole frame; None: it has none, the latents are cropped), at
    ``point_scale`` of the latents' resolution; ``after`` is how many latent cells the convolutions after it
    reach, ``whole`` how many all of them do."""

    point: torch.nn.Module | None
    point_name: str
    point_scale: int
    after: int
    whole: int


def _stages(decoder: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The decoder's blocks in the order they are defined: its children, a list of blocks by its members."""
    stages = []
    for name, child in decoder.named_children():
        if isinstance(child, torch.nn.ModuleList | torch.nn.Sequential):
            stages += [(f"{name}.{i}", m) for i, m in enumerate(child)]
        else:
            stages.append((name, child))
    return stages


def sees_whole_frame(module: torch.nn.Module) -> bool:
    """A layer whose output at a position depends on every position: attention, or group normalisation."""
    name = type(module).__name__
    return isinstance(module, torch.nn.GroupNorm | torch.nn.MultiheadAttention) or "Attention" in name


def probe_decoder(
    vae: torch.nn.Module, decode: Callable[[torch.Tensor], object], latents: torch.Tensor
) -> DecoderReach:
    """Decode ``latents`` (one latent frame, so every layer runs once) watching the decoder: the order its
    blocks finish in, where its whole-frame layers run, and each convolution's reach in latent cells (the
    kernel's half-width × dilation over the scale it runs at, its input's width over the latents')."""
    width = latents.shape[-1]
    events: list[tuple[str, object, float]] = []  # ("stage", (name, module), scale) | ("global", …) | ("conv", …)

    def on_stage(name: str, module: torch.nn.Module) -> Callable[..., None]:
        return lambda _m, _i, output: events.append(("stage", (name, module), _width(output) / width))

    def on_conv(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        half = (module.kernel_size[-1] - 1) / 2 * module.dilation[-1]
        events.append(("conv", None, half * width / inputs[0].shape[-1]))

    decoder = vae.decoder
    hooks = []  # a layer's own event first, then the block's it ends (hooks run in the order they were added)
    for module in vae.modules():  # convolutions around the decoder (post_quant_conv …) reach too
        if isinstance(module, CONVOLUTIONS):
            hooks.append(module.register_forward_hook(on_conv))
        elif sees_whole_frame(module):
            hooks.append(module.register_forward_hook(lambda *_: events.append(("global", None, 0.0))))
    hooks += [m.register_forward_hook(on_stage(n, m)) for n, m in _stages(decoder)]
    try:
        with torch.no_grad():
            decode(latents)
    finally:
        for hook in hooks:
            hook.remove()
    whole = sum(cells for kind, _, cells in events if kind == "conv")
    last = max((i for i, (kind, _, _) in enumerate(events) if kind == "global"), default=-1)
    if last < 0:
        return DecoderReach(None, "", 1, math.ceil(whole - 1e-9), math.ceil(whole - 1e-9))
    at = next((i for i, (kind, _, _) in enumerate(events) if kind == "stage" and i > last), None)
    if at is None:
        return None
    (name, point), scale = events[at][1], events[at][2]
    after = sum(cells for kind, _, cells in events[at + 1 :] if kind == "conv")
    return DecoderReach(point, name, round(scale), math.ceil(after - 1e-9), math.ceil(whole - 1e-9))


def _width(output: object) -> int:
    tensor = output[0] if isinstance(output, tuple | list) else output
    return tensor.shape[-1]


@contextmanager
def cropped_after(point: torch.nn.Module, rows: slice, cols: slice) -> Iterator[None]:
    """While inside, ``point``'s output is cropped to ``rows`` × ``cols`` (at its own resolution), so the
    layers after it run on the box only."""

    def crop(_module: torch.nn.Module, _inputs: object, output: object) -> object:
        if isinstance(output, tuple):  # (hidden states, a causal decoder's cache …): the cache stays its own
            return (output[0][..., rows, cols], *output[1:])
        return output[..., rows, cols]

    handle = point.register_forward_hook(crop)
    try:
        yield
    finally:
        handle.remove()
