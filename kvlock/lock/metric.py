"""The hallucination metric: how much the foreground's clean estimate still wanders between steps.

h_k = mean over foreground elements of the variance, across the last W steps, of x̂0 (paper §3.2, where it
is written σ²), divided by the variance of the source's own clean latents. The division makes h a
relative figure: a model whose VAE scales its latents by c scales both by c², so one τ rule serves every
model. x̂0 comes from the conditional prediction alone: the guided one carries ω's extrapolation, which
inflates the variance by orders of magnitude and would feed the guidance back into the metric that sets
it. A sampler that keeps changing its mind about the foreground is at risk of artefacts.
"""

from __future__ import annotations

from collections import deque

import torch


def window_variance(samples: list[torch.Tensor]) -> float | None:
    """Mean over elements of the (population) variance across ``samples``; None with fewer than two."""
    if len(samples) < 2:
        return None
    stack = torch.stack([s.double() for s in samples])
    return float(stack.var(dim=0, unbiased=False).mean())


def latent_scale(x0_source: torch.Tensor) -> float:
    """The variance of the source's clean latents: the unit h is measured in (1 for a constant clip)."""
    scale = float(x0_source.double().var(unbiased=False))
    return scale if scale > 1e-12 else 1.0


class HallucinationMeter:
    """Keeps the last W foreground x̂0 estimates of one job and reports h over them.

    Only foreground elements are stored, so memory is W × |foreground latents|, independent of the
    number of steps. The history stays on the device the latents are on and h is computed once per
    update: on a GPU, moving it to the host and reducing it there cost a quarter of a second per step.
    ``full`` says whether the window holds W samples: only then is h the figure τ was calibrated on.
    """

    def __init__(self, window: int, foreground: torch.Tensor, scale: float = 1.0) -> None:
        if window < 2:
            raise ValueError(f"metric window must be at least 2 steps, got {window}")
        if not scale > 0:
            raise ValueError(f"metric scale must be positive, got {scale}")
        self.window = window
        self.scale = scale
        self.foreground = foreground.bool()
        self._history: deque[torch.Tensor] = deque(maxlen=window)
        self._value: float | None = None

    def reset(self) -> None:
        """Forget every sample (the window starts again, e.g. when control begins)."""
        self._history.clear()
        self._value = None

    def update(self, x0_estimate: torch.Tensor) -> float | None:
        """Record this step's x̂0 (full latent) and return h over the window ending here."""
        foreground = self.foreground.to(x0_estimate.device)
        self._history.append(x0_estimate[foreground.expand_as(x0_estimate)].detach().float())
        variance = window_variance(list(self._history))
        self._value = None if variance is None else variance / self.scale
        return self._value

    @property
    def value(self) -> float | None:
        return self._value

    @property
    def full(self) -> bool:
        return len(self._history) == self.window
