"""Self-attention processor for Wan's ``attn1`` modules that applies KV-Lock through a :class:`KVBank`.

Like diffusers' own processors, the module owns the weights (``to_q``, ``norm_q`` …) and this callable
owns the maths. In ``off`` mode it hands the call to the processor it replaced, so α = 0 runs the model's
own code path unchanged. One instance serves every layer (see ``processors``).
"""

from __future__ import annotations

import torch

from .processors import KVLockProcessor


def rotate_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on interleaved channel pairs (x0, x1), (x2, x3) … as Wan lays them out."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = even * s + odd * c
    return out.type_as(x)


def project_qkv(attn: torch.nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if getattr(attn, "fused_projections", False):
        return attn.to_qkv(hidden_states).chunk(3, dim=-1)
    return attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)


class KVLockWanAttnProcessor(KVLockProcessor):
    """Processor for all of a Wan model's self-attention layers."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.bank.mode == "off":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = project_qkv(attn, hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = rotate_interleaved(query, *rotary_emb)
            key = rotate_interleaved(key, *rotary_emb)
        key, value = self.bank.attend_kv(key, value)
        out = self.attend(query, key, value, attention_mask)
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)
