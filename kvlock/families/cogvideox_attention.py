"""Self-attention processor for CogVideoX's ``attn1`` modules: one attention over text and video tokens.

CogVideoX attends over the prompt's tokens and the video's tokens together, with rotary embedding on the
video part only. KV-Lock concerns the video tokens: the bank sees (and the source pass stores) only the
video part of K and V; the pass's own text tokens are kept in front. Like the Wan processor, ``off``
hands the call to the processor it replaced, and one instance serves every layer.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import apply_rotary_emb

from .processors import KVLockProcessor


class KVLockCogVideoXAttnProcessor(KVLockProcessor):
    """Processor for all of a CogVideoX model's joint text-video self-attention layers."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bank.mode == "off":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise ValueError("KV-Lock's CogVideoX processor takes no attention mask (CogVideoX passes none)")
        text = encoder_hidden_states.size(1)
        joint = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        # heads first, as the model's norms and rotary embedding expect
        query = attn.to_q(joint).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        key = attn.to_k(joint).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        value = attn.to_v(joint).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query = torch.cat([query[:, :, :text], apply_rotary_emb(query[:, :, text:], image_rotary_emb)], dim=2)
            key = torch.cat([key[:, :, :text], apply_rotary_emb(key[:, :, text:], image_rotary_emb)], dim=2)
        # tokens first for the bank and the attention dispatcher: (B, S, heads, d)
        query, key, value = (x.transpose(1, 2) for x in (query, key, value))
        video_key, video_value = self.bank.attend_kv(key[:, text:], value[:, text:])
        key = torch.cat([key[:, :text], video_key.to(key.dtype)], dim=1)
        value = torch.cat([value[:, :text], video_value.to(value.dtype)], dim=1)
        out = self.attend(query, key, value).flatten(2, 3).type_as(query)
        out = attn.to_out[1](attn.to_out[0](out))
        return out[:, text:], out[:, :text]
