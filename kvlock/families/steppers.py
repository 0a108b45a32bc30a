"""How a family's scheduler walks the noise levels, behind one small interface the edit loop uses.

The loop needs five things from a noise process, whatever the model was trained with: the timesteps to
run, a noise level per step for the trace, the source latents noised to a step's level (the source pass
and the background lock), the clean estimate x̂0 from a prediction (the metric and the previews), and
the scheduler's step. Flow-matching models (Wan, LTX-Video) and v-prediction DDIM/DPM models
(CogVideoX) differ in exactly these, so each gets a stepper and the loop stays the same.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any, Protocol

import torch


class Stepper(Protocol):
    """One window's walk from noise to clean latents. ``levels`` has one entry per step plus the end (0)."""

    timesteps: torch.Tensor
    levels: list[float]

    def begin(self, first: int) -> None:
        """Start at step ``first`` (strength below 1 skips the noisiest steps)."""
        ...

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        """``x0`` noised to the level the latents have when step ``i`` starts (``i == steps``: clean)."""
        ...

    def clean_estimate(self, z: torch.Tensor, prediction: torch.Tensor, i: int) -> torch.Tensor: ...

    def step(self, prediction: torch.Tensor, i: int, z: torch.Tensor) -> torch.Tensor:
        """The latents at the start of step ``i + 1``."""
        ...


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _fresh(scheduler: Any) -> Any:
    return copy.deepcopy(scheduler)


class FlowMatchStepper:
    """Rectified flow: z_σ = (1 − σ)·x0 + σ·n, the model predicts the velocity v = n − x0."""

    def __init__(self, scheduler: Any, steps: int, device: torch.device, **set_timesteps: Any) -> None:
        self.scheduler = _fresh(scheduler)
        self.scheduler.set_timesteps(steps, device=device, **set_timesteps)
        self.timesteps = self.scheduler.timesteps
        self.levels = [float(s) for s in self.scheduler.sigmas.tolist()]

    def begin(self, first: int) -> None:
        self.scheduler.set_begin_index(first)

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        sigma = self.levels[i]
        return (1.0 - sigma) * x0 + sigma * noise

    def clean_estimate(self, z: torch.Tensor, prediction: torch.Tensor, i: int) -> torch.Tensor:
        return z - self.levels[i] * prediction

    def step(self, prediction: torch.Tensor, i: int, z: torch.Tensor) -> torch.Tensor:
        return self.scheduler.step(prediction, self.timesteps[i], z, return_dict=False)[0]


class FlowEulerStepper:
    """Rectified flow walked by plain Euler steps over listed noise levels, as step-distilled models are
    sampled: they were trained to land on exactly these levels (their ``kvlock.json`` lists them), so the
    pipeline's own multistep scheduler, whose corrector assumes a smooth trajectory, does not apply."""

    def __init__(self, sigmas: tuple[float, ...], train_timesteps: int, device: torch.device) -> None:
        self.levels = [float(s) for s in sigmas] + [0.0]
        self.timesteps = torch.tensor([s * train_timesteps for s in sigmas], device=device, dtype=torch.float32)

    def begin(self, first: int) -> None:
        pass  # every step is independent of the ones before it

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        sigma = self.levels[i]
        return (1.0 - sigma) * x0 + sigma * noise

    def clean_estimate(self, z: torch.Tensor, prediction: torch.Tensor, i: int) -> torch.Tensor:
        return z - self.levels[i] * prediction

    def step(self, prediction: torch.Tensor, i: int, z: torch.Tensor) -> torch.Tensor:
        return z + (self.levels[i + 1] - self.levels[i]) * prediction.to(z.dtype)


class VPredictionStepper:
    """Variance-preserving diffusion with v-prediction (CogVideoX's DDIM and DPM schedulers).

    z_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·n and x̂0 = √ᾱ_t·z − √(1 − ᾱ_t)·v. The level reported is √(1 − ᾱ_t), the
    noise's share. The DPM scheduler is multistep and stochastic: it keeps the previous x̂0 and draws its
    noise from ``generator``, exactly as the family's own pipeline calls it — in the model's own latent
    layout (``to_model``/``from_model``), so the same generator gives the same noise as the pipeline.
    """

    def __init__(
        self,
        scheduler: Any,
        steps: int,
        device: torch.device,
        generator: torch.Generator | None = None,
        to_model: Callable[[torch.Tensor], torch.Tensor] = _same,
        from_model: Callable[[torch.Tensor], torch.Tensor] = _same,
    ) -> None:
        self.to_model, self.from_model = to_model, from_model
        self.scheduler = _fresh(scheduler)
        self.scheduler.set_timesteps(steps, device=device)
        self.timesteps = self.scheduler.timesteps
        self.generator = generator
        self.multistep = "old_pred_original_sample" in inspect.signature(self.scheduler.step).parameters
        self._previous_x0: torch.Tensor | None = None
        self._first = 0
        cumprod = self.scheduler.alphas_cumprod
        final = float(getattr(self.scheduler, "final_alpha_cumprod", 1.0))
        self._alpha = [float(cumprod[int(t)]) for t in self.timesteps] + [final]
        self.levels = [(1.0 - a) ** 0.5 for a in self._alpha]

    def begin(self, first: int) -> None:
        self._first = first
        self._previous_x0 = None

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        a = self._alpha[i]
        return a**0.5 * x0 + (1.0 - a) ** 0.5 * noise

    def clean_estimate(self, z: torch.Tensor, prediction: torch.Tensor, i: int) -> torch.Tensor:
        a = self._alpha[i]
        return a**0.5 * z - (1.0 - a) ** 0.5 * prediction

    def step(self, prediction: torch.Tensor, i: int, z: torch.Tensor) -> torch.Tensor:
        t, v, z = self.timesteps[i], self.to_model(prediction), self.to_model(z)
        if not self.multistep:
            z = self.scheduler.step(v, t, z, eta=0.0, generator=self.generator, return_dict=False)[0]
            return self.from_model(z)
        back = self.timesteps[i - 1] if i > self._first else None
        z, self._previous_x0 = self.scheduler.step(
            v, self._previous_x0, t, back, z, eta=0.0, generator=self.generator, return_dict=False
        )
        return self.from_model(z)
