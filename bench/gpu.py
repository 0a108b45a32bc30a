"""GPU speed and memory of KV-Lock against plain diffusers generation, at real model sizes (a benchmark).

    python bench/gpu.py --model 1.3b                 # steps, roofline, whole 50-step edit vs generation
    python bench/gpu.py --model 1.3b --cap-gb 24 --only edit --edit-steps 20 --variants auto   # a 24 GB card
    python bench/gpu.py --model 14b --only steps,edit --edit-steps 10 --variants eager --cases 0.3:1
    python bench/gpu.py --model smoke --device cpu   # the same code on a toy size, to check the script
    python bench/gpu.py --model cogvideox-5b --only steps,edit --variants eager   # 49×480×720
    python bench/gpu.py --model ltx --only steps,edit --variants eager            # 161×480×704
    python bench/gpu.py --model wan22-a14b --only steps,edit --variants compiled --plain compiled --edit-steps 8
    python bench/gpu.py --model wan22-ti2v-5b --only steps,edit --variants compiled --plain compiled  # 121×704×1280
    python bench/gpu.py --model hunyuan15 --only steps --variants compiled --plain compiled          # 121×480×848
    python bench/gpu.py --model 1.3b --only overheads --plain compiled --variants compiled --warm  # edit_costs.py
    python bench/gpu.py --model 1.3b --only takes --takes-presets default --separate-runs 1 --plain none \
        --variants compiled --warm                     # 4 takes in one job vs 4 separate edits vs one edit

No checkpoint is downloaded: the transformer, VAE and text encoder (UMT5-XXL for Wan, T5-XXL for
CogVideoX and LTX-Video) are built from the real configurations with random weights, in the dtype layout
``from_pretrained`` gives (bf16, with the modules Wan keeps in fp32 in fp32; VAE fp32). Timings do not
depend on weight values; the adaptive α does, so per-step rows fix α and the whole-edit row reports the
modes the default schedule took.

Rows: the plain ``WanPipeline`` CFG step (two B=1 forwards, diffusers' default attention); the engine's
step at 10/30/60 % foreground with α = 1 (source pass + foreground-only guidance passes) and with α = 0.5
(three full passes); each with diffusers' default attention, with cuDNN attention, and compiled; a whole
edit (encode, 50 steps, decode, composite) against a whole plain generation (50 steps, decode); the peak
memory of each; and (Wan only) the forward's FLOP rate as a fraction of the measured bf16 matmul rate.
Each family runs at its native size unless --frames/--height/--width say otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edit_costs
import numpy as np
import torch

CONFIGS: dict[str, dict[str, Any]] = {
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    "smoke": dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2),
    # CogVideoX 1.0 as released (THUDM/CogVideoX-2b, -5b); LTX-Video 0.9 is the diffusers class default
    "cogvideox-2b": dict(
        num_attention_heads=30, attention_head_dim=64, num_layers=30, rotary=False, vae_scale=1.15258426
    ),
    "cogvideox-5b": dict(num_attention_heads=48, attention_head_dim=64, num_layers=42, rotary=True, vae_scale=0.7),
    "ltx": {},
    "cogvideox-smoke": {},
    "ltx-smoke": {},
    # the 2025 releases, built by bench/released.py
    "wan22-a14b": {},
    "wan22-ti2v-5b": {},
    "hunyuan15": {},
    "wan22-a14b-smoke": {},
    "wan22-ti2v-smoke": {},
    "hunyuan15-smoke": {},
}
RELEASED = {"wan22-a14b", "wan22-ti2v-5b", "hunyuan15"}
RELEASED |= {f"{name.rsplit('-5b', 1)[0]}-smoke" for name in RELEASED}
FAMILY = {name: name.split("-")[0] for name in CONFIGS}
FAMILY.update({"1.3b": "wan", "14b": "wan", "smoke": "wan"})
FAMILY.update({name: "wan" for name in FAMILY if name.startswith("wan22")})
NATIVE = {"wan": (81, 480, 832, 512, 5.0), "cogvideox": (49, 480, 720, 226, 6.0), "ltx": (161, 480, 704, 128, 3.0)}
NATIVE.update(  # by model where a family has several native sizes
    {
        "wan22-a14b": (81, 480, 832, 512, 4.0),
        "wan22-ti2v-5b": (121, 704, 1280, 512, 5.0),
        "wan22-ti2v-smoke": (9, 64, 64, 16, 5.0),
        "hunyuan15": (121, 480, 848, 1000, 6.0),
        "hunyuan15-smoke": (9, 64, 64, 1000, 6.0),
    }
)
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
TEXT = {  # UMT5-XXL as Wan2.1 uses it; the smoke size is a toy
    "full": dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
    "smoke": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
}
GIB = 1024**3


def _variants() -> dict[str, Any]:
    from kvlock.execution.acceleration import Acceleration

    return {
        "auto": lambda cap: Acceleration(memory_limit_gb=cap),
        "eager": lambda cap: Acceleration(attention="native", memory_limit_gb=cap),
        "cudnn": lambda cap: Acceleration(attention="cudnn", memory_limit_gb=cap),
        "compiled": lambda cap: Acceleration(attention="native", compile="inductor", memory_limit_gb=cap),
        "offload": lambda cap: Acceleration(memory="model_offload", memory_limit_gb=cap),
        "compiled+cudnn": lambda cap: Acceleration(attention="cudnn", compile="inductor", memory_limit_gb=cap),
    }


VARIANTS = _variants()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build_pipeline(size: str, device: torch.device, text_length: int) -> Any:
    """A WanPipeline at ``size`` with random weights, built directly on ``device`` in bf16."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from kvlock.world.tiny import build_tokenizer

    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)
        try:
            transformer = WanTransformer3DModel(
                patch_size=(1, 2, 2),
                in_channels=16,
                out_channels=16,
                text_dim=4096 if size != "smoke" else 64,
                freq_dim=256,
                qk_norm="rms_norm_across_heads",
                cross_attn_norm=True,
                eps=1e-6,
                rope_max_seq_len=1024,
                **CONFIGS[size],
            )
            tokenizer = build_tokenizer()
            tokenizer.model_max_length = text_length
            text = TEXT["smoke" if size == "smoke" else "full"]
            text_encoder = UMT5EncoderModel(
                UMT5Config(
                    vocab_size=len(tokenizer) if size == "smoke" else 256384,
                    feed_forward_proj="gated-gelu",
                    relative_attention_num_buckets=32,
                    pad_token_id=0,
                    eos_token_id=1,
                    decoder_start_token_id=0,
                    **text,
                )
            ).eval()
        finally:
            torch.set_default_dtype(previous)
        vae = AutoencoderKLWan(base_dim=96 if size != "smoke" else 8).eval()
    keep = set(transformer._keep_in_fp32_modules or [])
    for name, param in transformer.named_parameters():
        if keep & set(name.split(".")):
            param.data = param.data.float()
    for module in (transformer, text_encoder, vae):
        module.requires_grad_(False)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _t5_xxl(device: torch.device) -> Any:
    from transformers import T5Config, T5EncoderModel

    with torch.device(device):
        return T5EncoderModel(
            T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, **T5_XXL)
        ).eval()


def build_family_pipeline(size: str, device: torch.device, text_length: int) -> Any:
    """A CogVideoXPipeline or LTXPipeline at its released size with random weights, all in bf16."""
    import diffusers

    from kvlock.world.tiny import build_tokenizer
    from kvlock.world.tiny_families import COGVIDEOX_SCHEDULER, LTX_SCHEDULER, build_tiny_cogvideox, build_tiny_ltx

    if size.endswith("smoke"):  # the tests' tiny pipelines: a check of this script, not a measurement
        pipe = build_tiny_cogvideox() if FAMILY[size] == "cogvideox" else build_tiny_ltx()
        return pipe.to(device, torch.bfloat16)

    tokenizer = build_tokenizer()
    tokenizer.model_max_length = text_length
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    cfg = dict(CONFIGS[size])
    try:  # everything in bf16, VAE included: these pipelines decode in the prompt's dtype
        torch.set_default_dtype(torch.bfloat16)
        text_encoder = _t5_xxl(device)
        with torch.device(device):
            if FAMILY[size] == "cogvideox":
                rotary, vae_scale = cfg.pop("rotary"), cfg.pop("vae_scale")
                transformer = diffusers.CogVideoXTransformer3DModel(use_rotary_positional_embeddings=rotary, **cfg)
                vae = diffusers.AutoencoderKLCogVideoX(scaling_factor=vae_scale).eval()
                scheduler = diffusers.CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
                pipe = diffusers.CogVideoXPipeline(tokenizer, text_encoder, vae, transformer, scheduler)
            else:
                transformer = diffusers.LTXVideoTransformer3DModel(**cfg)
                vae = diffusers.AutoencoderKLLTXVideo().eval()
                scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER)
                pipe = diffusers.LTXPipeline(scheduler, vae, text_encoder, tokenizer, transformer)
    finally:
        torch.set_default_dtype(previous)
    for module in (transformer, text_encoder, vae):
        module.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class Shape:
    frames: int
    height: int
    width: int
    vae_t: int = 4
    vae_s: int = 8
    patch: int = 2
    channels: int = 16

    def latent(self) -> tuple[int, int, int, int, int]:
        return (
            1,
            self.channels,
            (self.frames - 1) // self.vae_t + 1,
            self.height // self.vae_s,
            self.width // self.vae_s,
        )

    def tokens(self) -> int:
        _, _, f, h, w = self.latent()
        return f * (h // self.patch) * (w // self.patch)

    @property
    def cell(self) -> int:
        return self.vae_s * self.patch


def forward_flops(cfg: dict[str, Any], queries: int, keys: int, text: int) -> float:
    """Matmul FLOPs of one transformer pass: ``queries`` tokens computed, attending over ``keys`` tokens."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    per_layer = (
        8 * queries * d * d  # self-attention q, k, v, out projections
        + 4 * queries * keys * d  # QKᵀ and PV
        + 4 * queries * d * d  # cross-attention q and out
        + 4 * text * d * d  # cross-attention k, v over the prompt
        + 4 * queries * text * d  # cross-attention scores and values
        + 4 * queries * d * cfg["ffn_dim"]  # feed-forward
    )
    return per_layer * cfg["num_layers"]


def matmul_rate(device: torch.device, n: int) -> float:
    """Best bf16 matmul FLOP/s over square and Wan-shaped products."""
    if device.type != "cuda":
        return float("nan")
    best = 0.0
    for m, k, nn in ((n, n, n), (32760, 1536, 8960), (32760, 5120, 13824)):
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, nn, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        sync(device)
        t = time.perf_counter()
        reps = 20
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * m * k * nn * reps / (time.perf_counter() - t))
        del a, b
    return best


GUIDANCE = {"WanPipeline": 5.0, "CogVideoXPipeline": 6.0}


def run_plain(
    pipe: Any, shape: Shape, embeds: tuple[torch.Tensor, torch.Tensor], steps: int, output_type: str, **extra: Any
) -> float:
    """Wall seconds of one call of diffusers' own WanPipeline (CFG: two B=1 forwards per step)."""
    device = pipe.transformer.device
    sync(device)
    t = time.perf_counter()
    family = type(pipe).__name__
    if family == "LTXPipeline":
        ones = torch.ones(embeds[0].shape[:2], device=device)
        extra = {"prompt_attention_mask": ones, "negative_prompt_attention_mask": ones, **extra}
    if family == "CogVideoXPipeline":
        extra = {"use_dynamic_cfg": False, **extra}
    if getattr(pipe, "transformer_2", None) is not None:
        extra = {"guidance_scale_2": 3.0, **extra}  # Wan2.2 A14B's low-noise expert, as released
    if family == "HunyuanVideo15Pipeline":  # two encoders and masks: the pipeline encodes the prompt itself
        prompts = {"prompt": "a red car", "negative_prompt": ""}
    else:
        prompts = {"prompt_embeds": embeds[0], "negative_prompt_embeds": embeds[1]}
        extra = {"guidance_scale": GUIDANCE.get(family, 3.0), **extra}
    pipe(
        **prompts,
        height=shape.height,
        width=shape.width,
        num_frames=shape.frames,
        num_inference_steps=steps,
        output_type=output_type,
        **extra,
    )
    sync(device)
    return time.perf_counter() - t


def plain_steps(pipe: Any, shape: Shape, embeds: tuple[torch.Tensor, torch.Tensor], steps: int) -> list[float]:
    """Per-step seconds of the plain loop, stamped after each scheduler step (every pipeline takes one per
    denoising step; not all of them have a step-end callback)."""
    device = pipe.transformer.device
    stamps = [time.perf_counter()]
    step = pipe.scheduler.step

    def stamped(*args: Any, **kwargs: Any) -> Any:
        out = step(*args, **kwargs)
        sync(device)
        stamps.append(time.perf_counter())
        return out

    pipe.scheduler.step = stamped
    try:
        sync(device)
        stamps[0] = time.perf_counter()
        run_plain(pipe, shape, embeds, steps, "latent")
    finally:
        del pipe.scheduler.step  # the class's own method again
    return [b - a for a, b in itertools.pairwise(stamps)]


def time_forward(pipe: Any, shape: Shape, embeds: torch.Tensor, reps: int = 3) -> float:
    model, device = pipe.transformer, pipe.transformer.device
    z = torch.randn(shape.latent(), device=device, dtype=model.dtype)
    t_in = torch.tensor([500.0], device=device)
    with torch.no_grad():
        model(hidden_states=z, timestep=t_in, encoder_hidden_states=embeds, return_dict=False)
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            model(hidden_states=z, timestep=t_in, encoder_hidden_states=embeds, return_dict=False)
        sync(device)
    return (time.perf_counter() - t) / reps


def box_matte(shape: Shape, fraction: float) -> np.ndarray:
    """A centred box covering about ``fraction`` of every frame, aligned to the token cells so that the
    token foreground fraction is the same as the pixel one."""
    cell = shape.cell
    rows, cols = shape.height // cell, shape.width // cell
    h = max(1, round(rows * fraction**0.5))
    w = max(1, min(cols, round(fraction * rows * cols / h)))
    top, left = (rows - h) // 2 * cell, (cols - w) // 2 * cell
    matte = np.zeros((shape.frames, shape.height, shape.width), np.float32)
    matte[:, top : top + h * cell, left : left + w * cell] = 1.0
    return matte


def attention_backends(device: torch.device, shape: Shape, heads: int, head_dim: int) -> dict[str, float]:
    """Milliseconds of one self-attention at full length, per PyTorch SDPA backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type != "cuda":
        return {}
    q = torch.randn(1, heads, shape.tokens(), head_dim, device=device, dtype=torch.bfloat16)
    times = {}
    for name, backend in (
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
    ):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
                sync(device)
                t = time.perf_counter()
                for _ in range(5):
                    torch.nn.functional.scaled_dot_product_attention(q, q, q)
                sync(device)
            times[name] = 1e3 * (time.perf_counter() - t) / 5
        except RuntimeError as exc:
            times[name] = float("nan")
            print(f"attention backend {name}: {exc}", flush=True)
    return times


def engine_steps(
    editor: Any,
    shape: Shape,
    fraction: float,
    alpha: float,
    steps: int,
    pair: bool = True,
    interleave: bool = True,
    **overrides: Any,
) -> tuple[list[float], float, str]:
    """Per-step seconds of the engine's loop at a fixed α, the token foreground fraction, and the modes
    (``overrides``: further settings, e.g. the source-pass approximations; ``interleave`` False runs the
    source pass and the edit passes one after the other, holding every layer's K/V)."""
    from kvlock.lock.token_mask import build_token_mask
    from kvlock.sampling.loop import Prompts, sample_kvlock
    from kvlock.settings import EditSettings, resolve_schedule

    m, residency = editor.model, editor.runtime.residency
    masks = build_token_mask(torch.from_numpy(box_matte(shape, fraction)), m.compression)
    gen = torch.Generator("cpu").manual_seed(0)
    x0 = torch.randn(shape.latent(), generator=gen).to(m.device)
    noise = torch.randn(shape.latent(), generator=gen).to(m.device)
    with residency.hold("text_encoder"):  # the editor's own placement (model offload moves what runs)
        embeds = [m.family.encode_prompt(m.pipe, p, m.defaults.text_length, m.device) for p in ("a", "b", "c")]
    settings = resolve_schedule(EditSettings(alpha_fixed=alpha, steps=steps, **overrides))
    with torch.no_grad(), residency.hold("transformer"):
        _, records = sample_kvlock(
            m.family,
            m.pipe,
            editor.runtime.bank,
            x0,
            noise,
            masks,
            Prompts(*embeds),
            settings,
            steps=steps,
            omega0=5.0,
            pair_guidance=pair,
            interleave=interleave,
            on_expert=residency.use_expert,
        )
    modes = "/".join(sorted({r.mode + (f"+{r.source}" if r.source else "") for r in records}))
    return [r.seconds for r in records], masks.foreground_fraction, modes


# Whole-edit settings by name: the default schedule, α = 1 throughout, and the source-pass approximations
# (``bg``: a source pass over the background alone; ``rN``: one source pass every N locked steps).
EDIT_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "alpha1": {"method": "fixed_alpha=1"},
    "alpha0.5": {"method": "fixed_alpha=0.5"},
    "no_lock": {"method": "no_lock"},
    "bg": {"source_pass": "background"},
    "bg+r2": {"source_pass": "background", "source_refresh": 2},
    "alpha1+bg": {"method": "fixed_alpha=1", "source_pass": "background"},
    "alpha1+bg+r2": {"method": "fixed_alpha=1", "source_pass": "background", "source_refresh": 2},
    "alpha1+r2": {"method": "fixed_alpha=1", "source_refresh": 2},
    "early1": {"alpha_early": 1.0},
    "early1+bg+r2": {"alpha_early": 1.0, "source_pass": "background", "source_refresh": 2},
}
STEP_OPTIONS = {"": {}, "bg": {"source_pass": "background"}, "r2": {"source_refresh": 2}}
STEP_OPTIONS["bg+r2"] = {**STEP_OPTIONS["bg"], **STEP_OPTIONS["r2"]}
STEP_OPTIONS["seq"] = {"interleave": False}  # the passes one after the other (every layer's K/V held)


def whole_edit(
    editor: Any,
    shape: Shape,
    steps: int,
    preset: str = "default",
    fraction: float = 0.3,
    takes: int = 1,
    seed: int = 0,
    keep: bool = False,
) -> dict[str, Any]:
    """One edit (``takes`` > 1: one job of that many takes) of a random clip with a box matte, timed; its
    stages are the last take's trace's (the job's, up to then). ``keep``: the results' frames and the
    source come back too (``results``, ``source``, ``matte``)."""
    from kvlock import EditRequest, EditSettings

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (shape.frames, shape.height, shape.width, 3), dtype=np.uint8)
    device = editor.model.device
    step_peaks: list[float] = []

    def progress(info: Any) -> None:
        step_peaks.append(peak_gib(device))

    matte = box_matte(shape, fraction)
    settings = EditSettings(steps=steps, seed=seed, takes=takes, **EDIT_PRESETS[preset])
    reset_peak(device)
    sync(device)
    t = time.perf_counter()
    results = editor.edit_takes(EditRequest(frames, matte, "a red car", settings), progress)
    sync(device)
    seconds = time.perf_counter() - t
    first, last = results[0].trace, results[-1].trace
    modes: dict[str, int] = {}
    for r in first.windows[0].steps:
        modes[r.mode] = modes.get(r.mode, 0) + 1
    step_seconds = [r.seconds for r in first.windows[0].steps]
    out = {
        "seconds": seconds,
        "denoise_seconds": sum(step_seconds),
        "peak_gib": peak_gib(device),
        "peak_after_first_steps_gib": step_peaks[min(2, len(step_peaks) - 1)],
        "peak_after_last_step_gib": step_peaks[-1],
        "modes": modes,
        "preset": preset,
        "takes": takes,
        "sources": sorted({r.source for r in first.windows[0].steps}),
        "stage_seconds": last.stage_seconds,
        "execution": last.execution,
    }
    if keep:
        out |= {"results": [r.frames for r in results], "source": frames, "matte": matte}
        out["latents"] = results[0].latents[0] if results[0].latents else None
    return out


def median_tail(xs: list[float]) -> float:
    """Mean step time, leaving out the first step (allocator and autotuning warm-up); a mean, not a
    median, because a source pass reused every other step makes the steps alternate in cost."""
    return statistics.fmean(xs[1:] if len(xs) > 1 else xs)


def run_variant(
    editor: Any,
    label: str,
    args: argparse.Namespace,
    shape: Shape,
    pipe: Any,
    embeds: tuple[torch.Tensor, torch.Tensor],
    rows: list[dict[str, Any]],
    out: dict[str, Any],
    ctx: dict[str, Any],
) -> None:
    """The engine's rows for one execution variant: per-step times, forward rate, whole edit."""
    device, only = editor.model.device, set(args.only.split(","))
    print(label, editor.execution, flush=True)
    if "steps" in only and not args.cap_gb:
        cases = []
        for case in args.cases.split(","):
            f, a, *option = case.split(":")
            cases.append((float(f), float(a), True, option[0] if option else ""))
        if label == "eager" and args.model != "14b":
            cases.append((0.3, 1.0, False, ""))
        for fraction, alpha, pair, option in cases:
            reset_peak(device)
            times, fg, modes = engine_steps(editor, shape, fraction, alpha, args.steps, pair, **STEP_OPTIONS[option])
            extra = (" unpaired" if not pair else "") + (f" {option}" if option else "")
            rows.append(
                {
                    "row": f"engine α={alpha:g} fg={fg:.0%}{extra} [{label}]",
                    "ms": 1e3 * median_tail(times),
                    "modes": modes,
                    "peak_gib": peak_gib(device),
                    "first_step_ms": 1e3 * times[0],
                }
            )
            print(rows[-1], flush=True)
    if "roofline" in only and ctx["flops"]:
        seconds = time_forward(pipe, shape, embeds[0])
        out[f"forward [{label}]"] = {"ms": 1e3 * seconds, "fraction": ctx["flops"] / seconds / ctx["rate"]}
        print(out[f"forward [{label}]"], flush=True)
    if "edit" in only and args.warm_up and editor.execution["compile"] != "off":
        from kvlock.execution.warm_up import warm_up  # what `kvlock serve` runs before its first job

        t = time.perf_counter()
        out.setdefault("engine_warm_up", {})[label] = warm_up(editor)
        out.setdefault("warm_up_seconds", {})[label] = time.perf_counter() - t
        print({"warm_up_seconds": out["warm_up_seconds"][label]}, flush=True)
    if only & {"edit", "overheads", "takes"} and args.warm and editor.execution["compile"] != "off":
        t = time.perf_counter()
        for preset in ("alpha1", "alpha0.5", "no_lock", "alpha1+bg"):  # visit every pass kind once
            whole_edit(editor, shape, 2, preset)
        out.setdefault("warm_up_seconds", {})[label] = time.perf_counter() - t
        print({"warm_up_seconds": out["warm_up_seconds"][label]}, flush=True)
    if "overheads" in only:
        edit_costs.overheads(editor, label, args, shape, out)
    if "takes" in only:
        edit_costs.takes(editor, label, args, shape, out)
    if "edit" in only:
        presets = args.edits.split(",")
        if label == "eager" or args.cap_gb or args.model == "14b":
            presets = presets[:1]
        for preset in presets:
            result = whole_edit(editor, shape, args.edit_steps, preset)
            result["label"] = label
            out.setdefault("edits", []).append(result)
            print(result, flush=True)


def plain_compiled(
    pipe: Any,
    shape: Shape,
    embeds: tuple[torch.Tensor, torch.Tensor],
    args: argparse.Namespace,
    only: set[str],
    rows: list[dict[str, Any]],
    out: dict[str, Any],
) -> None:
    """The plain pipeline as a speed-minded user runs it: its repeated blocks compiled (one line), then the
    same step and generation rows as eager; the blocks are returned to eager for the engine's variants."""
    device = pipe.transformer.device
    repeated = getattr(pipe.transformer, "_repeated_blocks", None) or []
    if repeated:
        experts = [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
        blocks = [m for e in experts for m in e.modules() if type(m).__name__ in repeated]
        for expert in experts:
            expert.compile_repeated_blocks(fullgraph=True)
        out["plain_compile_form"] = "compile_repeated_blocks(fullgraph=True) on each transformer"
    else:  # CogVideoX names no repeated blocks in diffusers 0.42; the same regional compile, written by hand
        blocks = list(pipe.transformer.transformer_blocks)
        for block in blocks:
            block.compile(fullgraph=True)
        out["plain_compile_form"] = "block.compile(fullgraph=True) for each of pipe.transformer.transformer_blocks"
    t = time.perf_counter()
    run_plain(pipe, shape, embeds, 2, "latent")
    out["plain_compile_seconds"] = time.perf_counter() - t
    print({"plain_compile_seconds": out["plain_compile_seconds"]}, flush=True)
    if "steps" in only:
        reset_peak(device)
        plain = plain_steps(pipe, shape, embeds, args.steps)
        rows.append(
            {"row": "plain diffusers CFG step, compiled", "ms": 1e3 * median_tail(plain), "peak_gib": peak_gib(device)}
        )
        print(rows[-1], flush=True)
    if only & {"edit", "overheads"}:
        reset_peak(device)
        seconds = run_plain(pipe, shape, embeds, args.edit_steps, "np")
        out["plain_generation_compiled"] = {"seconds": seconds, "peak_gib": peak_gib(device), "steps": args.edit_steps}
        print(out["plain_generation_compiled"], flush=True)
    for block in blocks:
        block._compiled_call_impl = None  # back to eager: the engine compiles its own way
    torch._dynamo.reset()


def first_edits(model: Any, shape: Shape, args: argparse.Namespace, out: dict[str, Any]) -> None:
    """A restart child: a fresh process compiles (from --compile-cache) and times its first edits."""
    from kvlock.editing.editor import Editor
    from kvlock.execution.acceleration import Acceleration

    t = time.perf_counter()
    editor = Editor(model, Acceleration(attention="native", compile="inductor", compile_cache=args.compile_cache))
    out["editor_seconds"] = time.perf_counter() - t
    if args.warm:  # what `kvlock serve` does for a preloaded model before it takes jobs
        from kvlock.execution.warm_up import warm_up

        t = time.perf_counter()
        out["warm_up"] = warm_up(editor)
        out["warm_up_seconds"] = time.perf_counter() - t
    preset = args.edits.split(",")[0]
    from torch._dynamo.utils import counters

    edits = []
    for _ in range(args.first_edits):
        graphs = counters["stats"]["unique_graphs"]
        edits.append(whole_edit(editor, shape, args.edit_steps, preset, args.edit_fraction))
        edits[-1]["graphs_compiled"] = counters["stats"]["unique_graphs"] - graphs  # 0: nothing was traced
    out["first_edits"] = edits
    print(json.dumps(out, default=str), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


def restart_rows(args: argparse.Namespace) -> None:
    """Cold process (empty cache) → one edit; restarted process (the cache it left) → two edits.

    The restarted process's first edit against its second is what a user of a restarted server feels.
    """
    import subprocess
    import sys
    import tempfile

    cache = Path(args.compile_cache or tempfile.mkdtemp(prefix="kvlock-compile-"))
    common = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--edits", args.edits]
    common += ["--edit-steps", str(args.edit_steps), "--compile-cache", str(cache)] + (["--warm"] * args.warm)
    for flag in ("frames", "height", "width"):
        if getattr(args, flag):
            common += [f"--{flag}", str(getattr(args, flag))]
    results = {}
    # the restarted process edits another matte than the cold one did: a server's next job is another shot
    for name, edits, fraction in (("cold", 1, 0.3), ("restarted", 2, args.restart_fraction)):
        target = Path(tempfile.mkstemp(suffix=".json")[1])
        t = time.perf_counter()
        child = [*common, "--first-edits", str(edits), "--edit-fraction", str(fraction), "--json", str(target)]
        subprocess.run(child, check=True)
        results[name] = {"process_seconds": time.perf_counter() - t, **json.loads(target.read_text())}
    cold = results["cold"]["first_edits"][0]["seconds"]
    first, warm = (e["seconds"] for e in results["restarted"]["first_edits"])
    summary = {"cold_first_edit": cold, "restarted_first_edit": first, "warm_edit": warm, "restart_ratio": first / warm}
    summary["warm_up_seconds"] = {k: v.get("warm_up_seconds") for k, v in results.items()}
    summary["graphs_compiled"] = {k: [e["graphs_compiled"] for e in v["first_edits"]] for k, v in results.items()}
    graphs = summary["graphs_compiled"]
    print("\n| edit | seconds | × warm |\n|---|---:|---:|")
    for label, value in (
        ("first edit, cold process (empty cache)", cold),
        ("first edit after a restart", first),
        ("second edit (warm)", warm),
    ):
        print(f"| {label} | {value:.1f} | {value / warm:.2f} |")
    print(f"graphs traced per edit: cold {graphs['cold']}, restarted {graphs['restarted']}")
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, **results}, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="1.3b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, help="default: the family's native size")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--steps", type=int, default=5, help="steps per per-step measurement")
    parser.add_argument("--edit-steps", type=int, default=50)
    parser.add_argument(
        "--only",
        default="steps,roofline,edit",
        help="comma list of steps, roofline, edit, overheads (the default edit's stages with whole-frame decode and "
        "CPU composite against the box decode and device composite, and their difference), takes (N takes in one "
        "job against N separate edits and one edit)",
    )
    parser.add_argument("--takes", type=int, default=4, help="takes per job in the takes rows")
    parser.add_argument("--takes-presets", default="default,alpha1", help="edit presets of the takes rows")
    parser.add_argument(
        "--separate-runs",
        type=int,
        default=0,
        help="separate edits actually run for the takes rows (0: as many as --takes); the rows give their "
        "mean times --takes",
    )
    parser.add_argument("--variants", default="eager,compiled", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--cases", default="0.1:1,0.3:1,0.6:1,0.3:0.5", help="fraction:alpha per step row")
    parser.add_argument("--warm", action="store_true", help="compile every pass kind before timing edits")
    parser.add_argument(
        "--warm-up", action="store_true", help="run the server's warm-up (one step of every pass kind) before edits"
    )
    parser.add_argument("--cap-gb", type=float, help="simulate a smaller card: cap this process's GPU memory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--edits", default="default,alpha1", help=f"whole edits to time: {', '.join(EDIT_PRESETS)}")
    parser.add_argument(
        "--plain",
        default="eager,compiled",
        help="plain baselines: eager, and compiled as a speed-minded user runs it "
        "(compile_repeated_blocks(fullgraph=True))",
    )
    parser.add_argument(
        "--compile-cache", help="the engine's compile cache folder (the restart rows' two processes share one)"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="time the first edit of a fresh process against a warm one: a cold process fills --compile-cache, "
        "then a second process (a restarted server) edits twice",
    )
    parser.add_argument("--first-edits", type=int, default=0, help=argparse.SUPPRESS)  # a restart child's edits
    parser.add_argument("--edit-fraction", type=float, default=0.3, help=argparse.SUPPRESS)  # and its matte
    parser.add_argument(
        "--restart-fraction", type=float, default=0.2, help="matte area of the restarted process's edits (cold: 0.3)"
    )
    args = parser.parse_args()
    if args.restart:
        restart_rows(args)
        return

    from kvlock.editing.editor import Editor
    from kvlock.families import family_for_pipeline
    from kvlock.families.base import ModelDefaults
    from kvlock.loading.load import LoadedModel

    device = torch.device(args.device)
    only = set(args.only.split(","))
    family = FAMILY[args.model]
    frames, height, width, text_length, guidance = NATIVE.get(args.model) or NATIVE[family]
    if args.model.endswith("smoke"):
        text_length = 16
    if family != "wan" or args.model in RELEASED:
        only.discard("roofline")  # the FLOP count below is Wan2.1's block
    shape = Shape(args.frames or frames, args.height or height, args.width or width)
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "model": args.model,
        "shape": [shape.frames, shape.height, shape.width],
        "cap_gb": args.cap_gb,
    }
    import diffusers

    out["diffusers"] = diffusers.__version__
    t = time.perf_counter()
    if args.model in RELEASED:
        import released

        pipe = released.build(args.model, device, text_length)
    elif family == "wan":
        pipe = build_pipeline(args.model, device, text_length)
    else:
        pipe = build_family_pipeline(args.model, device, text_length)
    out["build_seconds"] = time.perf_counter() - t
    adapter = family_for_pipeline(type(pipe).__name__)
    compression, _ = adapter.geometry(pipe)
    channels = pipe.transformer.config.get("out_channels") or pipe.transformer.config.in_channels  # the latent's
    shape = Shape(
        shape.frames, shape.height, shape.width, compression.vae_t, compression.vae_s, compression.patch[1], channels
    )
    out["tokens"] = shape.tokens()
    cfg = dict(pipe.transformer.config)
    out["params_b"] = sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    gen = torch.Generator("cpu").manual_seed(1)
    width_text = cfg.get("text_dim") or cfg.get("text_embed_dim") or cfg.get("caption_channels")
    embeds = tuple(torch.randn(1, text_length, width_text, generator=gen).to(device, torch.bfloat16) for _ in range(2))
    rows: list[dict[str, Any]] = []
    print(json.dumps(out), flush=True)
    if args.cap_gb and device.type == "cuda":
        # built on the GPU for speed; a small card would load into CPU memory, as the engine's loader does
        pipe.to("cpu")
        torch.cuda.empty_cache()
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gb * GIB / total), index)

    if args.first_edits:
        only = {"edit"}
    eager_plain = "eager" in args.plain.split(",")
    if "steps" in only and eager_plain:
        reset_peak(device)
        plain = plain_steps(pipe, shape, embeds, args.steps)
        rows.append({"row": "plain diffusers CFG step", "ms": 1e3 * median_tail(plain), "peak_gib": peak_gib(device)})
        print(rows[-1], flush=True)
    flops = rate = None
    if "roofline" in only and not args.first_edits:
        rate = matmul_rate(device, 8192)
        out["matmul_tflops"] = rate / 1e12
        flops = forward_flops(cfg, shape.tokens(), shape.tokens(), text_length)
        seconds = time_forward(pipe, shape, embeds[0])
        out["forward_default"] = {"ms": 1e3 * seconds, "fraction": flops / seconds / rate}
        print(out["forward_default"], flush=True)
        cfg_t = pipe.transformer.config
        out["attention_ms"] = attention_backends(device, shape, cfg_t.num_attention_heads, cfg_t.attention_head_dim)
        print(out["attention_ms"], flush=True)
    if "edit" in only and not args.cap_gb and not args.first_edits and eager_plain:
        reset_peak(device)
        seconds = run_plain(pipe, shape, embeds, args.edit_steps, "np")
        out["plain_generation"] = {"seconds": seconds, "peak_gib": peak_gib(device), "steps": args.edit_steps}
        print(out["plain_generation"], flush=True)
    if only & {"overheads", "takes"} and not args.cap_gb:  # the peak is the decode's: two steps show it
        reset_peak(device)
        run_plain(pipe, shape, embeds, 2, "np")
        out["plain_peak_gib"] = peak_gib(device)
        print({"plain_peak_gib": out["plain_peak_gib"]}, flush=True)
    if "compiled" in args.plain.split(",") and not args.cap_gb and not args.first_edits:
        plain_compiled(pipe, shape, embeds, args, only, rows, out)

    defaults = ModelDefaults(
        height=shape.height,
        width=shape.width,
        frames=shape.frames,
        steps=50,
        guidance=guidance,
        text_length=text_length,
    )
    if args.model in RELEASED:  # the family's own reading of the folder: steps, both experts' guidance
        native = adapter.defaults_for(pipe)
        defaults = dataclasses.replace(native, height=shape.height, width=shape.width, frames=shape.frames)
    name = f"{args.model} (random weights)"
    model = LoadedModel(name, adapter, pipe, defaults, device, torch.bfloat16)
    if args.first_edits:
        first_edits(model, shape, args, out)
        return
    variants = [(name, VARIANTS[name](args.cap_gb)) for name in args.variants.split(",")]
    ctx = {"flops": flops, "rate": rate}
    for label, acc in variants:
        try:
            run_variant(Editor(model, acc), label, args, shape, pipe, embeds, rows, out, ctx)
        except Exception as exc:  # keep the other rows of a long run; the failure is in the output
            print(f"{label}: FAILED {type(exc).__name__}: {exc}", flush=True)
            out.setdefault("failures", []).append(f"{label}: {type(exc).__name__}: {exc}")
    out["rows"] = rows
    print("\n| row | ms/step | × plain eager | × plain compiled | peak GiB | modes |\n|---|---:|---:|---:|---:|---|")
    by_name = {r["row"]: r["ms"] for r in rows}
    eager_ms = by_name.get("plain diffusers CFG step", float("nan"))
    compiled_ms = by_name.get("plain diffusers CFG step, compiled", float("nan"))
    for r in rows:
        ratios = f"{r['ms'] / eager_ms:.2f} | {r['ms'] / compiled_ms:.2f}"
        print(f"| {r['row']} | {r['ms']:.0f} | {ratios} | {r['peak_gib']:.1f} | {r.get('modes', '')} |")
    plains = {k: out[k]["seconds"] for k in ("plain_generation", "plain_generation_compiled") if k in out}
    if out.get("edits") and plains:
        print(
            "\n| whole run | seconds | × plain eager | × plain compiled | peak GiB | modes |"
            "\n|---|---:|---:|---:|---:|---|"
        )
        for name, seconds in plains.items():
            print(f"| {name} | {seconds:.1f} | | | {out[name]['peak_gib']:.2f} | |")
        for e in out["edits"]:
            ratios = " | ".join(
                f"{e['seconds'] / plains[k]:.2f}" if k in plains else ""
                for k in ("plain_generation", "plain_generation_compiled")
            )
            print(
                f"| edit {e['preset']} [{e['label']}] | {e['seconds']:.1f} | {ratios} | {e['peak_gib']:.2f} "
                f"| {e['modes']} |"
            )
    print(json.dumps(out, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
