"""Self-attention processor for LTX-Video's ``attn1`` modules that applies KV-Lock through a :class:`KVBank`.

LTX normalises queries and keys across all heads and rotates channel pairs before splitting heads; the
rest is the Wan processor's pattern: ``off`` hands the call to the processor it replaced, and one
instance serves every layer.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_ltx import apply_rotary_emb

from .processors import KVLockProcessor


class KVLockLTXAttnProcessor(KVLockProcessor):
    """Processor for all of an LTX-Video model's self-attention layers."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.bank.mode == "off":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("KV-Lock's LTX processor is for self-attention without a mask (attn1)")
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb)
            key = apply_rotary_emb(key, image_rotary_emb)
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        key, value = self.bank.attend_kv(key, value)
        out = self.attend(query, key, value).flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))
