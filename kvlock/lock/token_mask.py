"""From a pixel matte to the transformer's foreground token mask and a soft latent mask.

A causal video VAE encodes frame 0 alone and then windows of ``t`` frames; each latent cell covers
``s × s`` pixels; the transformer patches ``(pt, ph, pw)`` latent cells into one token and orders tokens
(frame, row, column). A token is foreground when any pixel it covers touches the matte, so pooling is a
max at every level (docs/design.md §2.1). The soft mask is what the latent lock blends with: 1 on latent cells
that touch the matte, fading over one cell outside them, and never outside the foreground tokens, so
every background token is locked exactly.

The matte may come at any resolution: the spatial pooling is an exact max over each latent cell's footprint
(adaptive max pooling to the latent grid), so a cell is foreground exactly when a matte pixel that overlaps
it is non-zero. Resampling the matte to model size first (bilinear, then "> 0") would grow it by a cell
wherever the filter reaches past the matte's edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Compression:
    """How one model family maps pixels to latents to tokens."""

    vae_t: int
    vae_s: int
    patch: tuple[int, int, int]
    causal_first_frame: bool = True

    def latent_frames(self, frames: int) -> int:
        """Latent frames for ``frames`` video frames (a causal VAE encodes frame 0 alone)."""
        return (frames - 1) // self.vae_t + 1 if self.causal_first_frame else frames // self.vae_t


def temporal_window_max(matte: torch.Tensor, t: int, causal_first_frame: bool = True) -> torch.Tensor:
    """Max-pool (T, H, W) in time per VAE window: frame 0 alone when causal, then windows of ``t``."""
    if causal_first_frame:
        head, rest = matte[:1], matte[1:]
        if rest.shape[0] % t:
            raise ValueError(f"{matte.shape[0]} frames do not make whole VAE windows of 1 + {t}·k")
        pooled = rest.unflatten(0, (-1, t)).amax(dim=1)
        return torch.cat([head, pooled])
    if matte.shape[0] % t:
        raise ValueError(f"{matte.shape[0]} frames do not make whole VAE windows of {t}")
    return matte.unflatten(0, (-1, t)).amax(dim=1)


def latent_touch_mask(matte: torch.Tensor, c: Compression, latent_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean (T', H', W'): latent cells whose pixels touch the matte (any value above zero).

    ``matte`` is (T, H, W) at model resolution, or at any resolution with ``latent_size`` = (H', W'), the
    latent grid it maps onto (e.g. the source crop of a window, so its matte is never resampled).
    """
    pooled_t = temporal_window_max(matte.float(), c.vae_t, c.causal_first_frame)
    size = latent_size or (matte.shape[-2] // c.vae_s, matte.shape[-1] // c.vae_s)
    pooled = F.adaptive_max_pool2d(pooled_t.unsqueeze(1), size).squeeze(1)
    return pooled > 0


def token_grid(latent_mask: torch.Tensor, patch: tuple[int, int, int], dilate: int = 0) -> torch.Tensor:
    """Boolean (F, R, C) token grid from a latent mask, grown by ``dilate`` tokens in space."""
    grid = F.max_pool3d(latent_mask.float()[None, None], kernel_size=patch)[0, 0]
    for _ in range(dilate):
        grid = F.max_pool2d(grid.unsqueeze(1), kernel_size=3, stride=1, padding=1).squeeze(1)
    return grid > 0


def tokens_to_latent(grid: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """Expand a (F, R, C) token grid back to latent resolution (F·pt, R·ph, C·pw)."""
    pt, ph, pw = patch
    return grid.repeat_interleave(pt, 0).repeat_interleave(ph, 1).repeat_interleave(pw, 2)


def soft_latent_mask(touch: torch.Tensor, token_latent: torch.Tensor) -> torch.Tensor:
    """Float (T', H', W') in [0, 1]: 1 on touched cells, a one-cell ramp around them, 0 on background tokens."""
    grown = F.max_pool2d(touch.float().unsqueeze(1), kernel_size=3, stride=1, padding=1)
    ramp = F.avg_pool2d(grown, kernel_size=3, stride=1, padding=1, count_include_pad=False).squeeze(1)
    soft = torch.maximum(ramp, touch.float())
    return soft * token_latent.float()


@dataclass(frozen=True)
class TokenMask:
    """The masks one window of an edit needs, all derived from one pixel matte.

    ``grid`` is (F, R, C) tokens; ``flat`` the same in the transformer's order; ``latent`` the token mask
    at latent resolution; ``soft`` the blending mask for the latent lock.
    """

    grid: torch.Tensor
    latent: torch.Tensor
    soft: torch.Tensor

    @property
    def flat(self) -> torch.Tensor:
        return self.grid.flatten()

    @property
    def foreground_index(self) -> torch.Tensor:
        return self.flat.nonzero().squeeze(1)

    @property
    def background_index(self) -> torch.Tensor:
        return (~self.flat).nonzero().squeeze(1)

    @property
    def foreground_fraction(self) -> float:
        return float(self.flat.float().mean())


def build_token_mask(
    matte: torch.Tensor, c: Compression, dilate: int = 0, latent_size: tuple[int, int] | None = None
) -> TokenMask:
    """Matte (T, H, W), values in [0, 1], at model resolution or mapped onto ``latent_size`` → :class:`TokenMask`."""
    touch = latent_touch_mask(matte, c, latent_size)
    grid = token_grid(touch, c.patch, dilate)
    latent = tokens_to_latent(grid, c.patch)
    return TokenMask(grid=grid, latent=latent, soft=soft_latent_mask(touch, latent))
