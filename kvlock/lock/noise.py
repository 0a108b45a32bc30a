"""One noise field per edit, in the clip's latent time, shared by all of its windows.

The clip's latent slots form one timeline (``geometry.first_slot`` documents the mapping for a causal VAE):
the field is one Gaussian tensor (1, C, slots, h, w) drawn from the edit's seed, and a window starting at
slot m takes slots m … m + J. So frames two windows share get the same noise in both: the source pass of
the later window sees the noised lead-in as the earlier window's edit passes saw it, and the new frames
continue one trajectory instead of starting an unrelated one. A clip that fits one window gets exactly the
noise a diffusers pipeline draws for the seed, ``torch.randn(shape, generator=Generator("cpu").manual_seed(seed))``.

The field is drawn on the CPU for the latent grid of the window that asks; a window of another grid
(``crop_to_matte`` boxes of another size) draws its own from the same seed — cells of different grids do
not cover the same pixels anyway. One field is kept at a time; it is latent-sized (16 channels per 4 × 8 × 8
pixels: a twelfth of the window's source pixels in uint8), the only per-edit state that grows with the
clip's length besides the output frames themselves.

Takes (``EditSettings.takes``): take k (from 0) draws its field from seed + k and keeps it only inside the
matte (``take_noise``); outside it every take has take 1's noise.
"""

from __future__ import annotations

import torch


class NoiseField:
    """The seeded noise of ``slots`` latent frames; ``window`` hands out a window's contiguous part."""

    def __init__(self, seed: int, slots: int) -> None:
        self.seed, self.slots = seed, slots
        self._grid: tuple[int, ...] | None = None
        self._field: torch.Tensor | None = None

    def window(self, shape: torch.Size | tuple[int, ...], slot: int) -> torch.Tensor:
        """Noise for latents of ``shape`` (B, C, T', h, w) whose latent frame 0 is the clip's ``slot``."""
        batch, channels, frames, height, width = shape
        if slot < 0 or slot + frames > self.slots:
            raise ValueError(f"latent slots {slot}…{slot + frames - 1} are outside the clip's {self.slots} slots")
        grid = (batch, channels, height, width)
        if self._field is None or self._grid != grid:
            generator = torch.Generator("cpu").manual_seed(self.seed)
            self._field = torch.randn((batch, channels, self.slots, height, width), generator=generator)
            self._grid = grid
        return self._field[:, :, slot : slot + frames]


def take_noise(shared: torch.Tensor, own: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """The noise of one take of several: its own on the latent cells of the foreground tokens (``inside``),
    the first take's (``shared``) everywhere else.

    So every take's background is locked to the same noised source at every step — the output outside the
    matte is the source in every take, and one source pass per step serves them all (``sampling.loop``) —
    while the subject starts from other noise in each. Take 1 is ``shared`` itself: exactly the edit one
    take would make.
    """
    return torch.where(inside, own, shared)
