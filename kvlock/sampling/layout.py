"""Which tokens a step's passes and the K/V bank work on, on this device.

On one device that is the token mask's own indices (:class:`OneDevice`); under sequence parallelism
(``kvlock.execution.sequence_parallel``) each rank gets its share of them. The loop only ever asks a
layout for its :class:`PassTokens` and to make a tensor agree across devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..lock.token_mask import TokenMask


@dataclass(frozen=True)
class PassTokens:
    """The tokens one device's passes work with.

    ``background``: indices, among the tokens of a full pass on this device, of the background tokens the
    bank captures and fuses. ``foreground``: the token indices a foreground-only pass runs (None: no
    foreground-only pass can be laid out; full fused passes are used instead). ``joined``: how many of this
    device's foreground-pass tokens join the K/V (None: all of them). ``background_pass``: whether a source
    pass over the background tokens alone can run here (one device: the background is ``background``).
    """

    background: torch.Tensor
    foreground: torch.Tensor | None
    joined: int | None = None
    background_pass: bool = False


class Layout(Protocol):
    """How the tokens of a window are spread over the devices that run it."""

    def pass_tokens(self, masks: TokenMask) -> PassTokens: ...

    def agree(self, tensor: torch.Tensor) -> torch.Tensor:
        """The same values on every device (the decisions of the loop depend on them)."""
        ...


class OneDevice:
    """Every token on this device."""

    def pass_tokens(self, masks: TokenMask) -> PassTokens:
        return PassTokens(masks.background_index, masks.foreground_index, background_pass=True)

    def agree(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor
