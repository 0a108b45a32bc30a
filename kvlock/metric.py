"""The hallucination metric: how much the foreground's clean estimate still wanders between steps.

h_k = mean over foreground elements of the variance, across the last W steps, of x̂0 (paper §3.2, where
it is written σ²). A sampler that keeps changing its mind about the foreground is at risk of artefacts.
"""

from __future__ import annotations

from collections import deque

import torch


def window_variance(samples: list[torch.Tensor]) -> float:
    """Mean over elements of the (population) variance across ``samples``; 0 with fewer than two."""
    if len(samples) < 2:
        return 0.0
    stack = torch.stack([s.double() for s in samples])
    return float(stack.var(dim=0, unbiased=False).mean())


class HallucinationMeter:
    """Keeps the last W foreground x̂0 estimates of one job and reports h over them.

    Only foreground elements are stored, so memory is W × |foreground latents|, independent of the
    number of steps. The history stays on the device the latents are on and h is computed once per
    update: on a GPU, moving it to the host and reducing it there cost a quarter of a second per step.
    """

    def __init__(self, window: int, foreground: torch.Tensor) -> None:
        if window < 2:
            raise ValueError(f"metric window must be at least 2 steps, got {window}")
        self.window = window
        self.foreground = foreground.bool()
        self._history: deque[torch.Tensor] = deque(maxlen=window)
        self._value = 0.0

    def update(self, x0_estimate: torch.Tensor) -> float:
        """Record this step's x̂0 (full latent) and return h over the window ending here."""
        foreground = self.foreground.to(x0_estimate.device)
        self._history.append(x0_estimate[foreground.expand_as(x0_estimate)].detach().float())
        self._value = window_variance(list(self._history))
        return self._value

    @property
    def value(self) -> float:
        return self._value
