"""Where a pipeline's components live during an edit: all on the device, one at a time, or streamed.

- ``resident``: everything on the device (fastest).
- ``model_offload``: the text encoder and the VAE come to the device for their stage and leave after it;
  the transformer stays once loaded. The text encoder is the largest part of a Wan pipeline and runs once
  per edit, so this frees the most memory for about a second of copies per edit.
- ``sequential_offload``: the transformer and text encoder stream their weights layer by layer every pass
  (diffusers' group offloading, with a side stream prefetching the next layer); the VAE is tiled. Slowest,
  and the only way a large model fits a small card.

The engine asks for a stage with :meth:`Residency.hold`; the rest follows from the mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


class Residency:
    """Places ``pipe``'s components on ``device`` according to ``mode``.

    ``experts`` names the pipeline's denoising transformers; a model with two (Wan2.2 A14B) uses one at a
    time, and under model offload only that one is on the device: the other waits on the host, and the
    switch at the expert boundary is one swap (``swaps`` counts them for the trace).
    """

    def __init__(self, pipe: Any, device: torch.device, mode: str, experts: tuple[str, ...] = ("transformer",)) -> None:
        self.pipe, self.device, self.mode, self.experts = pipe, device, mode, experts
        self.active = experts[0]
        self.swaps = 0
        self._streamed: set[str] = set()

    def _component(self, name: str) -> torch.nn.Module | None:
        return getattr(self.pipe, name, None)

    def _stages(self, name: str) -> tuple[str, ...]:
        """What a stage named by the engine holds: 'text_encoder' is every text encoder, 'transformer' the
        active expert."""
        if name == "text_encoder":
            return TEXT_ENCODERS
        if name == "transformer":
            return (self.active,)
        return (name,)

    def apply(self) -> None:
        """Put every component where the mode wants it before the first edit."""
        everything = (*TEXT_ENCODERS, *self.experts, "vae")
        if self.mode == "resident":
            for name in everything:
                module = self._component(name)
                if module is not None:
                    module.to(self.device)
            return
        for name in everything:
            module = self._component(name)
            if module is not None:
                module.to("cpu")
        if self.mode == "sequential_offload":
            from diffusers.hooks import apply_group_offloading

            use_stream = self.device.type == "cuda"
            for name in (*self.experts, *TEXT_ENCODERS):
                module = self._component(name)
                if module is None:
                    continue
                # leaf level: every Linear/Norm/Conv loads itself, so passes that call submodules directly
                # (the foreground-only forward) are served as well as the model's own forward
                apply_group_offloading(
                    module, onload_device=self.device, offload_type="leaf_level", use_stream=use_stream
                )
                self._streamed.add(name)

    def use_expert(self, index: int) -> None:
        """Make expert ``index`` the one that denoises; under model offload it replaces the other on the device."""
        name = self.experts[min(index, len(self.experts) - 1)]
        if name == self.active:
            return
        previous, self.active = self.active, name
        if self.mode != "model_offload":
            return
        module = self._component(previous)
        if module is not None:
            module.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        module = self._component(name)
        if module is not None:
            module.to(self.device)
        self.swaps += 1

    @contextmanager
    def hold(self, *names: str) -> Iterator[None]:
        """Make the named stages usable on the device for the duration of the block."""
        wanted = {stage for name in names for stage in self._stages(name)}
        if self.mode == "model_offload":
            for name in (*TEXT_ENCODERS, "vae"):
                module = self._component(name)
                if module is not None and name not in wanted:
                    module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if self.mode != "resident":
            for name in wanted:
                module = self._component(name)
                if module is not None and name not in self._streamed:
                    module.to(self.device)
        yield

    def describe(self) -> str:
        return {
            "resident": "all weights on the device",
            "model_offload": "text encoders and VAE on the device only for their stage"
            + ("; one expert at a time" if len(self.experts) > 1 else ""),
            "sequential_offload": "weights streamed layer by layer; VAE tiled",
        }[self.mode]
