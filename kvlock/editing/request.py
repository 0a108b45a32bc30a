"""What an edit is asked (:class:`EditRequest`) and what it gives back (:class:`EditResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..media.colour import PixelEncoding, encoding_for
from ..plate import PlateFrames
from ..settings import EditSettings
from ..trace import Trace


@dataclass
class EditRequest:
    """Source frames (T, H, W, 3|4) uint8/uint16/float, a matte (T, H, W) or one still, and the prompts.

    With ``settings.erase`` the prompt may be empty (it describes the background, if anything).

    ``encoding`` says what the numbers mean (:mod:`kvlock.media.colour`): by default display-referred code
    values; ``SceneLinear()`` for linear-light plates (EXR), which may hold values above 1.0 and below 0.0. A
    4th channel is the plate's alpha: the model edits colour only, so alpha is returned exactly as given.
    """

    frames: np.ndarray
    matte: np.ndarray
    prompt: str
    settings: EditSettings = field(default_factory=EditSettings)
    return_region: bool = False
    return_raw: bool = False  # also the decoded edit before compositing (for measuring the lock itself)
    encoding: PixelEncoding | None = None
    return_plate: bool = False  # also the clean plate of every frame and its seen/invented map (kvlock.plate)

    def pixel_encoding(self) -> PixelEncoding:
        return self.encoding if self.encoding is not None else encoding_for(self.frames.dtype, "display")


@dataclass
class EditResult:
    """Edited frames in the source's size and dtype, the trace, and per-window diagnostics."""

    frames: np.ndarray
    trace: Trace
    latents: list[torch.Tensor]
    region: np.ndarray | None = None
    raw: np.ndarray | None = None
    plate: PlateFrames | None = None

    @property
    def warnings(self) -> list[str]:
        return self.trace.warnings

    @property
    def take(self) -> int:
        """Which take (1-based) of the edit's takes this is."""
        return self.trace.take
