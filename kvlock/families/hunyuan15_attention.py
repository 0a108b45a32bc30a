"""Attention processor for HunyuanVideo 1.5's dual-stream blocks: one attention over video and text tokens.

The video tokens come first, the prompt's tokens (two encoders' and the image slot's, sorted valid-first
with an attention mask) after them. KV-Lock concerns the video tokens only: the bank sees (and the source
pass stores) the video part of K and V; the pass's own text tokens are joined after it. The text tokens'
mask is the model's: a padded text token neither attends nor is attended to, and every video token is
valid — so with a foreground-only pass, whose queries and keys differ in length, the mask is built for each
side rather than padded as the model's own processor pads it. ``off`` hands the call to the processor it
replaced; one instance serves every block.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import apply_rotary_emb

from .processors import KVLockProcessor


def joint_mask(text_valid: torch.Tensor, video_queries: int, video_keys: int) -> torch.Tensor:
    """(B, 1, Lq, Lk) bool: a query and a key see each other when both are valid; video tokens always are."""
    b = text_valid.shape[0]
    ones = text_valid.new_ones
    queries = torch.cat([ones(b, video_queries), text_valid], dim=1)
    keys = torch.cat([ones(b, video_keys), text_valid], dim=1)
    return queries[:, None, :, None] & keys[:, None, None, :]


class KVLockHunyuan15AttnProcessor(KVLockProcessor):
    """Processor for all of a HunyuanVideo 1.5 model's joint video-text attention layers."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bank.mode == "off":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if encoder_hidden_states is None or attention_mask is None:
            raise ValueError("HunyuanVideo 1.5's blocks attend over video and text tokens with the text's mask")
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(2, (attn.heads, -1)))
        key = attn.norm_k(attn.to_k(hidden_states).unflatten(2, (attn.heads, -1)))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        text_query = attn.add_q_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        text_key = attn.add_k_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        text_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        if attn.norm_added_q is not None:
            text_query = attn.norm_added_q(text_query)
        if attn.norm_added_k is not None:
            text_key = attn.norm_added_k(text_key)
        video = query.shape[1]
        video_key, video_value = self.bank.attend_kv(key, value)  # tokens first: (B, S, heads, d)
        mask = joint_mask(attention_mask.bool(), video, video_key.shape[1])
        out = self.attend(
            torch.cat([query, text_query], dim=1),
            torch.cat([video_key.to(key.dtype), text_key], dim=1),
            torch.cat([video_value.to(value.dtype), text_value], dim=1),
            mask,
        )
        out = out.flatten(2, 3).to(query.dtype)
        video_out, text_out = out[:, :video], out[:, video:]
        return attn.to_out[1](attn.to_out[0](video_out)), attn.to_add_out(text_out)
