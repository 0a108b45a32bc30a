"""The hallucination metric: how much the foreground's clean estimate still wanders between steps.

h_k = mean over foreground elements of the variance, across the last W steps, of x̂0 (paper §3.2, where it
is written σ²), divided by the variance of the source's own clean latents and by the variance of the
noise levels σ of those W steps. The first division makes h a relative figure: a model whose VAE scales its
latents by c scales both by c², so one τ rule serves every model. The second makes it a rate — how far the
clean estimate moves per unit of noise removed, squared — instead of a distance: x̂0 moves in proportion to
the noise a step removes, so without it the same sampler reads 25× calmer at 50 steps than at 10 (each step
removes a fifth of the noise) and a τ fitted at one step count means nothing at another, or for a 4-step
distilled model. It narrows the gap without closing it (the embedded model's τ is 0.495 at 30 steps and
37.7 at 8: the estimate moves more per unit of noise when steps are few), so τ is still fitted at the step
count a model runs. x̂0 comes from the conditional prediction alone: the guided one carries ω's
extrapolation, which inflates the variance by orders of magnitude and would feed the guidance back into the
metric that sets it. A sampler that keeps changing its mind about the foreground is at risk of artefacts.
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


def level_variance(levels: list[float]) -> float | None:
    """The (population) variance of the noise levels of a window; None with fewer than two."""
    if len(levels) < 2:
        return None
    mean = sum(levels) / len(levels)
    return sum((s - mean) ** 2 for s in levels) / len(levels)


def latent_scale(x0_source: torch.Tensor) -> float:
    """The variance of the source's clean latents: the unit h is measured in (1 for a constant clip)."""
    scale = float(x0_source.double().var(unbiased=False))
    return scale if scale > 1e-12 else 1.0


# a floor under the noise levels' variance: a window of (nearly) equal levels would otherwise divide by ~0
MIN_LEVEL_VARIANCE = 1e-8


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
        self._levels: deque[float] = deque(maxlen=window)
        self._value: float | None = None

    def reset(self) -> None:
        """Forget every sample (the window starts again, e.g. when control begins)."""
        self._history.clear()
        self._levels.clear()
        self._value = None

    def update(self, x0_estimate: torch.Tensor, sigma: float) -> float | None:
        """Record this step's x̂0 (full latent) at noise level ``sigma``; return h over the window ending here."""
        foreground = self.foreground.to(x0_estimate.device)
        self._history.append(x0_estimate[foreground.expand_as(x0_estimate)].detach().float())
        self._levels.append(float(sigma))
        variance, spread = window_variance(list(self._history)), level_variance(list(self._levels))
        if variance is None or spread is None:
            self._value = None
        else:
            self._value = variance / (self.scale * max(spread, MIN_LEVEL_VARIANCE))
        return self._value

    @property
    def value(self) -> float | None:
        return self._value

    @property
    def full(self) -> bool:
        return len(self._history) == self.window
