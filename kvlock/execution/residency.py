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

STAGES = ("text_encoder", "transformer", "vae")


class Residency:
    """Places ``pipe``'s components on ``device`` according to ``mode``."""

    def __init__(self, pipe: Any, device: torch.device, mode: str) -> None:
        self.pipe, self.device, self.mode = pipe, device, mode
        self._streamed: set[str] = set()

    def _component(self, name: str) -> torch.nn.Module | None:
        return getattr(self.pipe, name, None)

    def apply(self) -> None:
        """Put every component where the mode wants it before the first edit."""
        if self.mode == "resident":
            for name in STAGES:
                module = self._component(name)
                if module is not None:
                    module.to(self.device)
            return
        for name in STAGES:
            module = self._component(name)
            if module is not None:
                module.to("cpu")
        if self.mode == "sequential_offload":
            from diffusers.hooks import apply_group_offloading

            use_stream = self.device.type == "cuda"
            for name in ("transformer", "text_encoder"):
                module = self._component(name)
                if module is None:
                    continue
                # leaf level: every Linear/Norm/Conv loads itself, so passes that call submodules directly
                # (the foreground-only forward) are served as well as the model's own forward
                apply_group_offloading(
                    module, onload_device=self.device, offload_type="leaf_level", use_stream=use_stream
                )
                self._streamed.add(name)

    @contextmanager
    def hold(self, *names: str) -> Iterator[None]:
        """Make the named stages usable on the device for the duration of the block."""
        if self.mode == "model_offload":
            for name in ("text_encoder", "vae"):
                module = self._component(name)
                if module is not None and name not in names:
                    module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if self.mode != "resident":
            for name in names:
                module = self._component(name)
                if module is not None and name not in self._streamed:
                    module.to(self.device)
        yield

    def describe(self) -> str:
        return {
            "resident": "all weights on the device",
            "model_offload": "text encoder and VAE on the device only for their stage",
            "sequential_offload": "weights streamed layer by layer; VAE tiled",
        }[self.mode]
