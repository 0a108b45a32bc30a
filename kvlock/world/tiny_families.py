"""Tiny pipelines of every supported family from config with fixed seeds (random weights), for tests.

Each keeps its family's real geometry — CogVideoX's (4, 8, 8) VAE with 2×2 patches and joint text-video
attention, LTX's 8×/32× VAE with 1×1 patches and a masked prompt, Wan2.2 A14B's two experts and boundary,
Wan2.2 TI2V-5B's residual VAE compressing 16× in space and per-token timesteps, HunyuanVideo 1.5's two text
encoders, dual-stream blocks and (4, 16, 16) VAE — and its real scheduler configuration, at a size that runs
in seconds on two CPU cores, offline (the byte-level tokenizer of ``kvlock.world.tiny``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..families.base import ModelDefaults
from .tiny import TINY_TEXT_ENCODER, build_tiny_wan, build_tokenizer

TINY_COGVIDEOX_DEFAULTS = ModelDefaults(height=64, width=64, frames=17, steps=8, guidance=6.0, text_length=16)
TINY_LTX_DEFAULTS = ModelDefaults(height=96, width=96, frames=17, steps=8, guidance=3.0, text_length=16)
TINY_A14B_DEFAULTS = ModelDefaults(
    height=64, width=64, frames=17, steps=8, guidance=4.0, guidance_2=3.0, text_length=64
)
TINY_TI2V_DEFAULTS = ModelDefaults(height=64, width=96, frames=17, steps=8, guidance=5.0, text_length=64)
TINY_HUNYUAN15_DEFAULTS = ModelDefaults(height=64, width=112, frames=9, steps=6, guidance=6.0, text_length=1000)
# Wan2.2 A14B T2V hands over to its low-noise expert at 0.875 of the training timesteps
A14B_BOUNDARY = 0.875

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


def build_tiny_wan22_a14b(seed: int = 0) -> Any:
    """A WanPipeline with two experts (``transformer`` for high noise, ``transformer_2`` for low noise) and
    the A14B's boundary, each expert a tiny Wan transformer of its own weights."""
    pipe = build_tiny_wan(seed)
    second = build_tiny_wan(seed + 10).transformer
    from diffusers import WanPipeline

    pipe = WanPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        transformer=pipe.transformer,
        transformer_2=second,
        scheduler=pipe.scheduler,
        boundary_ratio=A14B_BOUNDARY,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_wan22_ti2v(seed: int = 0) -> Any:
    """A WanPipeline shaped like TI2V-5B: a residual VAE that patchifies 2×2 and compresses 16× in space (one
    token per 32 px with the transformer's 2×2 patches), and per-token timesteps (``expand_timesteps``)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    base = build_tiny_wan(seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        temperal_downsample=[False, True, True],
    ).eval()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0, num_train_timesteps=1000
    )
    pipe = WanPipeline(
        tokenizer=base.tokenizer,
        text_encoder=base.text_encoder,
        vae=vae,
        transformer=base.transformer,
        scheduler=scheduler,
        expand_timesteps=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# a chat template for the byte-level tokenizer, as the multimodal LLM's tokenizer applies one
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_hunyuan15(seed: int = 0) -> Any:
    """A HunyuanVideo15Pipeline: a 3-layer Qwen2.5-VL text model and a 1-layer ByT5 encoder, a VAE of 8
    channels compressing (4, 16, 16), a 2-block dual-stream transformer with 1×1 patches."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 2048  # the pipeline pads every prompt to 1000 tokens after its template's 108
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
            bos_token_id=None,
            eos_token_id=1,
        )
    ).eval()
    glyph_tokenizer = ByT5Tokenizer()
    glyph_encoder = T5EncoderModel(
        T5Config(
            vocab_size=glyph_tokenizer.vocab_size + 3,
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=8,
        block_out_channels=(8, 8, 16, 16, 16),
        layers_per_block=1,
        spatial_compression_ratio=16,
        temporal_compression_ratio=4,
    ).eval()
    torch.manual_seed(seed + 2)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=17,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=32,
        text_embed_2_dim=16,
        image_embed_dim=16,
        rope_axes_dim=(4, 6, 6),
        target_size=96,
        task_type="t2v",
    ).eval()
    pipe = HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=glyph_encoder,
        tokenizer_2=glyph_tokenizer,
        guider=ClassifierFreeGuidance(guidance_scale=TINY_HUNYUAN15_DEFAULTS.guidance),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
