"""What every family's KV-Lock self-attention processor shares, and how one is put in place.

A family's processor differs only in how its model forms Q, K and V (norms, rotary layout, joint text
tokens); the bank exchange, the attention call and the installation are the same for all, so they live
here. One processor instance serves all of a model's self-attention layers (the bank numbers layers by
call order), which keeps compiled blocks on one graph.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

from ..lock.kv_bank import KVBank


class KVLockProcessor:
    """Base of the per-family processors: the bank, the processor it replaced, and the attention call."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, bank: KVBank, original: Any) -> None:
        self.bank = bank
        self.original = original

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention over (B, S, heads, d) tensors with the backend chosen for KV-Lock's passes.

        Under diffusers' context parallelism (``_parallel_config`` set by ``kvlock.execution.sequence_parallel``) the
        tensors are this rank's shard of tokens and the dispatcher runs the Ulysses or ring exchange.
        """
        return dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )


def install(transformer: Any, bank: KVBank, processor: type[KVLockProcessor], layers: str = ".attn1.") -> None:
    """Put one shared ``processor`` on every self-attention module; the model's own code is not patched.

    Installing again (a second editor on the same pipeline) wraps the model's original processor, never
    a KV-Lock one.
    """
    current = transformer.attn_processors
    first = next(proc for name, proc in current.items() if layers in name)
    original = first.original if isinstance(first, KVLockProcessor) else first
    shared = processor(bank, original)
    transformer.set_attn_processor({name: shared if layers in name else p for name, p in current.items()})


def set_backend(transformer: Any, backend: str | None, layers: str = ".attn1.") -> None:
    """Route self-attention (KV-Lock's and, where it reads the setting, the model's own) to one backend."""
    chosen = AttentionBackendName(backend) if backend else None
    for name, processor in transformer.attn_processors.items():
        if layers in name:
            processor._attention_backend = chosen
            if isinstance(processor, KVLockProcessor):
                processor.original._attention_backend = chosen


def compile_blocks(blocks: Any, backend: str) -> None:
    """Compile each transformer block in place; identical blocks share one compiled graph."""
    for block in blocks:
        block.compile(backend=backend, dynamic=None)
