"""Tiny CogVideoX and LTX-Video pipelines from config with fixed seeds (random weights), for tests.

Each keeps its family's real geometry — CogVideoX's (4, 8, 8) VAE with 2×2 patches and joint text-video
attention, LTX's 8×/32× VAE with 1×1 patches and a masked prompt — and its real scheduler configuration,
at a size that runs in seconds on two CPU cores, offline (the byte-level tokenizer of ``kvlock.world.tiny``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..families.base import ModelDefaults
from .tiny import TINY_TEXT_ENCODER, build_tokenizer

TINY_COGVIDEOX_DEFAULTS = ModelDefaults(height=64, width=64, frames=17, steps=8, guidance=6.0, text_length=16)
TINY_LTX_DEFAULTS = ModelDefaults(height=96, width=96, frames=17, steps=8, guidance=3.0, text_length=16)

# the schedulers' configurations as the released checkpoints ship them
COGVIDEOX_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    snr_shift_scale=1.0,
    steps_offset=0,
    timestep_spacing="trailing",
)
LTX_SCHEDULER = dict(
    base_image_seq_len=1024,
    base_shift=0.95,
    max_image_seq_len=4096,
    max_shift=2.05,
    num_train_timesteps=1000,
    shift=1.0,
    shift_terminal=0.1,
    use_dynamic_shifting=True,
)


def _text_encoder(vocab: int, seed: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=vocab, **TINY_TEXT_ENCODER)).eval()


def build_tiny_cogvideox(seed: int = 0, rotary: bool = True, scheduler: str = "ddim") -> Any:
    """A CogVideoXPipeline: 5B-style (rotary) by default, 2B-style (sin-cos positions) with ``rotary=False``."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXDPMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    tokenizer = build_tokenizer()
    text_encoder = _text_encoder(len(tokenizer), seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()
    torch.manual_seed(seed + 2)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=32,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=17,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=TINY_COGVIDEOX_DEFAULTS.text_length,
        use_rotary_positional_embeddings=rotary,
        use_learned_positional_embeddings=False,
    ).eval()
    scheduler_class = CogVideoXDPMScheduler if scheduler == "dpm" else CogVideoXDDIMScheduler
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler_class(**COGVIDEOX_SCHEDULER),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_ltx(seed: int = 0) -> Any:
    """An LTXPipeline whose VAE compresses 8× in time and 32× in space, like LTX-Video's."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers import LTXVideoTransformer3DModel as Transformer

    tokenizer = build_tokenizer()
    text_encoder = _text_encoder(len(tokenizer), seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    torch.manual_seed(seed + 2)
    transformer = Transformer(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=12,
        cross_attention_dim=24,
        num_layers=2,
        caption_channels=32,
    ).eval()
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
