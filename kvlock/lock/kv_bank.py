"""The per-step store of background keys and values, and the maths that fuses them into edit passes.

One :class:`KVBank` serves every self-attention processor of a model. The loop sets its mode around
each forward pass; processors read the mode, the current α and the token indices from it:

- ``off``: plain attention (α = 0 or no source pass this step).
- ``capture``: the source pass; store background K and V (after norm and rotary embedding) per layer.
- ``capture_own``: a source pass over the background tokens alone (in ``background_index`` order, one
  device): store its K/V as they come. Its background never attended to the old subject.
- ``fuse``: a full edit pass; background K/V become α·K_src + (1−α)·K_edit (docs/design.md §2.3).
- ``foreground``: an edit pass over foreground tokens only (α = 1); K/V = cached background + own.
  ``joined`` says how many of the pass's leading tokens join the K/V (None: all); under sequence
  parallelism a rank's block of tokens is padded to a common length and the padding must not join.

The bank is overwritten by every source pass, so memory is one step's background K/V whatever the number
of steps; the loop may reuse it on the next step instead of running the source pass again
(``EditSettings.source_refresh``). Where the source pass and the step's edit passes run block by block in
lockstep (``kvlock.sampling.loop``), each layer is dropped once its edit passes have read it (``forget``), so
the bank holds one layer's K/V, not the model's.

Layers are numbered by call order within a pass (a cursor reset when a pass begins), so one processor
instance serves every layer: compiled blocks then share one graph instead of one per layer. The exchange
itself runs eagerly (``torch.compiler.disable``) because it indexes a per-layer store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

MODES = ("off", "capture", "capture_own", "fuse", "foreground")

KVObserver = Callable[[int, str, torch.Tensor, torch.Tensor], None]


def fuse_background(
    edit: torch.Tensor, source_background: torch.Tensor, background_index: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Return ``edit`` (B, S, …) with its background tokens replaced by α·source + (1−α)·edit.

    At α = 1 the source values are copied exactly (no arithmetic), so the edit pass sees the source
    pass's K/V bit for bit.
    """
    fused = edit.clone()
    if alpha >= 1.0:
        fused[:, background_index] = source_background.to(edit.dtype)
    else:
        mixed = alpha * source_background.to(edit.dtype) + (1.0 - alpha) * edit[:, background_index]
        fused[:, background_index] = mixed
    return fused


def join_background(foreground: torch.Tensor, source_background: torch.Tensor) -> torch.Tensor:
    """K or V for a foreground-only pass: cached background tokens followed by the pass's own tokens.

    Attention without a mask is invariant to the order of keys, so the join order is free. A source
    batch of one serves an edit batch of any size (conditional and unconditional passes run together).
    """
    background = source_background.to(foreground.dtype).expand(foreground.shape[0], *source_background.shape[1:])
    return torch.cat([background, foreground], dim=1)


@dataclass
class KVBank:
    """Shared state between the edit loop and the installed self-attention processors."""

    background_index: torch.Tensor | None = None
    alpha: float = 0.0
    mode: str = "off"
    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    observer: KVObserver | None = None
    cursor: int = 0
    joined: int | None = None

    def store(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        assert self.background_index is not None, "set background_index before a source pass"
        self.keys[layer] = key[:, self.background_index]
        self.values[layer] = value[:, self.background_index]

    def store_own(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        self.keys[layer] = key
        self.values[layer] = value

    @torch.compiler.disable
    def attend_kv(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The K/V the next self-attention layer of this pass should attend over in the current mode."""
        layer = self.cursor
        self.cursor += 1
        if self.mode == "capture":
            self.store(layer, key, value)
        elif self.mode == "capture_own":
            self.store_own(layer, key, value)
        elif self.mode == "fuse":
            key = fuse_background(key, self.keys[layer], self.background_index, self.alpha)
            value = fuse_background(value, self.values[layer], self.background_index, self.alpha)
        elif self.mode == "foreground":
            own = slice(None) if self.joined is None else slice(0, self.joined)
            key = join_background(key[:, own], self.keys[layer])
            value = join_background(value[:, own], self.values[layer])
        if self.observer is not None:
            self.observer(layer, self.mode, key, value)
        return key, value

    @contextmanager
    def pass_mode(self, mode: str, alpha: float | None = None, layer: int = 0) -> Iterator[None]:
        """Route the passes inside through ``mode``; ``layer`` is the first layer they run (a pass run
        block by block in lockstep with another enters at each of its layers)."""
        if mode not in MODES:
            raise ValueError(f"unknown K/V mode {mode!r}; expected one of {MODES}")
        previous = (self.mode, self.alpha, self.cursor)
        self.mode, self.cursor = mode, layer
        if alpha is not None:
            self.alpha = alpha
        try:
            yield
        finally:
            self.mode, self.alpha, self.cursor = previous

    def forget(self, layer: int) -> None:
        """Drop one layer's K/V once every pass that needs it has run that layer."""
        self.keys.pop(layer, None)
        self.values.pop(layer, None)

    def clear(self) -> None:
        self.keys.clear()
        self.values.clear()
