"""The architecture of the project's small model and its caption tokenizer, in one place, so training,
saving and tests agree on them.
"""

from __future__ import annotations

from ..scenes import vocabulary

FRAMES, SIZE = 17, 96
TEXT_LENGTH = 32

LATENT_CHANNELS = 16  # 8 capped the first model's reconstructions at 28 dB; 16 doubles what a latent cell holds
VAE_CONFIG = dict(
    base_dim=32,
    z_dim=LATENT_CHANNELS,
    dim_mult=[1, 2, 4],
    num_res_blocks=1,
    temperal_downsample=[True, True],
    scale_factor_spatial=4,
    scale_factor_temporal=4,
    latents_mean=[0.0] * LATENT_CHANNELS,
    latents_std=[1.0] * LATENT_CHANNELS,
)
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=5,
    attention_head_dim=64,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    text_dim=128,
    freq_dim=256,
    ffn_dim=1280,
    num_layers=8,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=64,
)
TEXT_CONFIG = dict(
    d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4, relative_attention_num_buckets=16, dropout_rate=0.0
)
SCHEDULER_CONFIG = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
)
DEFAULTS = dict(height=SIZE, width=SIZE, frames=FRAMES, steps=30, guidance=5.0, text_length=TEXT_LENGTH)


def caption_tokenizer():
    """A word-level tokenizer over the captions' vocabulary (built offline), with pad, eos and unk."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {word: i for i, word in enumerate(specials + vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=TEXT_LENGTH
    )


def text_encoder_config(vocab_size: int):
    from transformers import UMT5Config

    return UMT5Config(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **TEXT_CONFIG)
