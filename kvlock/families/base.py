"""What the engine needs to know about one family of video DiTs, and nothing more.

A family adapter answers: how pixels map to latents and tokens (:class:`Compression`), which frame counts
and sizes the model accepts, how to load the diffusers pipeline, how to encode prompts and video, how to
run one transformer pass (in full, or on a subset of tokens), and how its scheduler walks the noise
levels (a :class:`~kvlock.families.steppers.Stepper`: timesteps, noising, x̂0 from the prediction, the step).
Latents cross this interface as (B, C, F, H, W) whatever layout the model itself takes. The KV-Lock
maths (masks, metric, schedules, guidance, fusion) never changes when a family is added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from ..lock.kv_bank import KVBank
from ..lock.token_mask import Compression
from .steppers import Stepper


@dataclass(frozen=True)
class PassStages:
    """One transformer forward opened at its blocks: ``state`` enters block 0 (the tokens, and for models
    whose blocks also carry the prompt's tokens, those), ``run(block, state)`` is a block's call with this
    pass's conditioning, ``finish`` turns the last block's state into the prediction.

    Families that offer it (``stages``) let the loop run a source pass and its edit passes block by block
    in lockstep, so the K/V bank holds one layer instead of all of them (``kvlock.sampling.loop``).
    """

    state: Any
    blocks: Sequence[torch.nn.Module]
    run: Callable[[torch.nn.Module, Any], Any]
    finish: Callable[[Any], torch.Tensor]


def run_stages(stages: PassStages) -> torch.Tensor:
    """The whole forward: every block in order, then the head."""
    state = stages.state
    for block in stages.blocks:
        state = stages.run(block, state)
    return stages.finish(state)


@dataclass(frozen=True)
class ModelDefaults:
    """A model's native working size and sampling defaults; a model folder may override them (its
    ``kvlock.json``), and ``kvlock calibrate`` records the model's τ there with where it came from; the
    benchmark's ``--calibrate`` run may record a schedule there too (``bench/quality.py --write-schedule``)."""

    height: int
    width: int
    frames: int
    steps: int = 50
    guidance: float = 5.0
    text_length: int = 512
    # ω0 of the low-noise expert of a two-expert model (Wan2.2 A14B); None: ``guidance`` for both
    guidance_2: float | None = None
    # a step-distilled model's noise levels, one per step (its steps are then exactly these): Euler steps
    sigmas: tuple[float, ...] | None = None
    fps: float | None = None  # the frame rate the model was trained at (told, never imposed on a source)
    tau: float | None = None
    tau_source: str = ""
    # the lock's schedule for this model (fields of SCHEDULE_DEFAULTS) and where it was chosen
    schedule: dict[str, Any] | None = None
    schedule_source: str = ""


class ModelFamily(Protocol):
    """The adapter interface; one module per family implements it."""

    name: ClassVar[str]
    pipeline_class_names: ClassVar[tuple[str, ...]]
    flow_matching: ClassVar[bool]  # the model predicts a velocity over σ (Euler steps over listed σ apply)
    defaults: ClassVar[ModelDefaults]

    def geometry(self, pipe: Any) -> tuple[Compression, int]:
        """How this loaded model maps pixels to tokens, and the multiple its frame sides must be."""
        ...

    def defaults_for(self, pipe: Any) -> ModelDefaults:
        """This checkpoint's native size, rate and sampling defaults (a family may hold several variants)."""
        ...

    def transformers(self, pipe: Any) -> tuple[tuple[str, Any], ...]:
        """The pipeline's denoising transformers by component name: one, or a model's experts in order."""
        ...

    def expert(self, pipe: Any, t: torch.Tensor) -> int:
        """Which of ``transformers`` denoises at timestep ``t`` (0 for a model of one transformer)."""
        ...

    def valid_frames(self, n: int) -> int:
        """The smallest frame count the model accepts that is at least ``n``."""
        ...

    def load(self, path: Path, dtype: torch.dtype) -> Any:
        """Load the pipeline into CPU memory (placement on the device is the editor's job)."""
        ...

    def install(self, pipe: Any, bank: KVBank) -> None:
        """Swap in KV-Lock's self-attention processors (model code is never patched)."""
        ...

    def set_attention_backend(self, pipe: Any, backend: str | None) -> None:
        """Route every attention of the model to a diffusers backend (None: the model's default)."""
        ...

    def compile(self, pipe: Any, backend: str) -> None:
        """Compile the transformer's repeated blocks in place."""
        ...

    def encode_prompt(
        self, pipe: Any, text: str, max_length: int, device: torch.device | None = None
    ) -> torch.Tensor: ...

    def encode_video(self, pipe: Any, video: torch.Tensor) -> torch.Tensor:
        """(1, 3, T, H, W) in [-1, 1] → normalised latents x0."""
        ...

    def decode_latents(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → (1, 3, T, H, W) in [-1, 1]."""
        ...

    def predict(self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor: ...

    def predict_tokens(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor
    ) -> torch.Tensor:
        """Run only the tokens in ``token_index``; other tokens of the result are zero."""
        ...

    def stepper(self, pipe: Any, steps: int, like: torch.Tensor, generator: torch.Generator | None = None) -> Stepper:
        """The noise process as this family's own pipeline runs it, for latents shaped and placed like
        ``like`` (some schedules shift with the token count); ``generator`` feeds stochastic steps."""
        ...


class OneTransformer:
    """What a family of one transformer and one checkpoint shape answers about its experts and variants."""

    defaults: ClassVar[ModelDefaults]

    def defaults_for(self, pipe: Any) -> ModelDefaults:
        return self.defaults

    def transformers(self, pipe: Any) -> tuple[tuple[str, Any], ...]:
        return (("transformer", pipe.transformer),)

    def expert(self, pipe: Any, t: torch.Tensor) -> int:
        return 0
