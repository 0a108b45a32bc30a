"""How an edit runs on the device at hand: attention backend, compiled blocks, paired guidance passes, and
where the weights live when the GPU is small.

None of it changes the maths: the CPU tests hold every fast path to the reference path. The memory
estimate is deliberately simple (weights + one step's background K/V + one pass's activations + the VAE's
working set) with coefficients measured on an H100 by ``bench/gpu.py``; it only has to pick the cheapest
mode that fits, and the choice is reported so a user can override it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SettingsError
from ..settings import MAX_LORAS

MEMORY_MODES = ("auto", "resident", "model_offload", "sequential_offload")
ATTENTION_CHOICES = {
    "auto": None,  # resolved per device by attention_backend_for
    "native": "native",
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "math": "_native_math",
}
VAE_TILING = ("auto", "on", "off")
LORA_MODES = ("auto", "unfused", "fused", "hotswap")  # kvlock.execution.loras
DECODES = ("box", "frame")  # the latent box the composite reads (kvlock.editing.decode_box), or whole frames
COMPOSITES = ("device", "cpu")  # composite where the decode is, or on the CPU
# sequence parallelism over a process group (kvlock.execution.sequence_parallel), and the attention choices each layout
# runs with: diffusers' native backend has no log-sum-exp, which the ring needs
PARALLEL_LAYOUTS = {"ulysses": ("auto", "native", "cudnn", "flash"), "ring": ("cudnn", "flash")}
GIB = 1024**3

# Bytes per token of one transformer pass, per unit of (ffn width, model width) in the compute dtype; and the
# VAE's working set per output pixel in float32. Measured on an H100 by bench/gpu.py (docs/benchmarks.md).
ACTIVATION_PER_FFN = 2.0
ACTIVATION_PER_DIM = 18.0
VAE_BYTES_PER_PIXEL = 22_000.0  # Wan2.1 VAE decode at 480×832: ~8.4 GiB above the weights
VAE_TILED_PIXELS = 256 * 256  # tiling bounds the VAE's working set to about one tile whatever the size
TYPICAL_BACKGROUND = 0.95  # before the matte is known, plan for a small subject: the K/V cache is background
HEADROOM = 0.9  # leave 10 % of the budget for the allocator's fragmentation and the CUDA context


@dataclass(frozen=True)
class Acceleration:
    """Execution choices; the defaults pick what measured fastest on the device that is present.

    ``compile`` names a ``torch.compile`` backend ("inductor" on a GPU) or None. ``memory_limit_gb`` caps
    what the engine plans to use, e.g. to leave room for an editing application on the same GPU.
    ``parallel`` ("ulysses" or "ring") spreads each edit over the ranks of the initialised
    ``torch.distributed`` process group, one device per rank (``kvlock.execution.sequence_parallel``).
    ``compile_cache`` is a folder that keeps compiled kernels, graphs and the shapes seen to be dynamic
    across processes (``use_compile_cache``), so a restarted server does not compile again.
    ``lora_mode`` is how LoRAs are applied and switched between edits (``kvlock.execution.loras``: auto, unfused,
    fused, hotswap); under hotswap ``lora_rank`` is the highest rank a LoRA may have and ``lora_slots`` how
    many LoRAs one edit may apply.
    ``decode`` "box" decodes only the latents a window's composite reads, grown by the VAE's reach
    (``decode_margin`` latent cells instead, where set); "frame" decodes whole frames. ``composite``
    "device" composites where the decode is (the GPU), "cpu" on the CPU.
    """

    attention: str = "auto"
    compile: str | None = None
    pair_guidance: bool = True
    memory: str = "auto"
    memory_limit_gb: float | None = None
    vae_tiling: str = "auto"
    parallel: str | None = None
    compile_cache: str | None = None
    lora_mode: str = "auto"
    lora_rank: int = 64
    lora_slots: int = 1
    decode: str = "box"
    decode_margin: int | None = None
    composite: str = "device"

    def validated(self) -> Acceleration:
        self._check_loras()
        if self.attention not in ATTENTION_CHOICES:
            raise SettingsError(f"attention must be one of {sorted(ATTENTION_CHOICES)}, got {self.attention!r}")
        if self.memory not in MEMORY_MODES:
            raise SettingsError(f"memory must be one of {MEMORY_MODES}, got {self.memory!r}")
        if self.vae_tiling not in VAE_TILING:
            raise SettingsError(f"vae_tiling must be one of {VAE_TILING}, got {self.vae_tiling!r}")
        if self.decode not in DECODES:
            raise SettingsError(f"decode must be one of {DECODES}, got {self.decode!r}")
        if self.decode_margin is not None and not 0 <= self.decode_margin <= 1024:
            raise SettingsError(f"decode_margin must be in [0, 1024] latent cells, got {self.decode_margin}")
        if self.composite not in COMPOSITES:
            raise SettingsError(f"composite must be one of {COMPOSITES}, got {self.composite!r}")
        if self.memory_limit_gb is not None and not self.memory_limit_gb > 0:
            raise SettingsError(f"memory_limit_gb must be > 0, got {self.memory_limit_gb}")
        if self.parallel is not None:
            if self.parallel not in PARALLEL_LAYOUTS:
                raise SettingsError(
                    f"parallel must be one of {sorted(PARALLEL_LAYOUTS)} or None, got {self.parallel!r}"
                )
            if self.attention not in PARALLEL_LAYOUTS[self.parallel]:
                raise SettingsError(
                    f"parallel {self.parallel!r} runs with attention {' or '.join(PARALLEL_LAYOUTS[self.parallel])}, "
                    f"not {self.attention!r}"
                )
        return self

    def _check_loras(self) -> None:
        if self.lora_mode not in LORA_MODES:
            raise SettingsError(f"lora_mode must be one of {LORA_MODES}, got {self.lora_mode!r}")
        if not (isinstance(self.lora_rank, int) and 1 <= self.lora_rank <= 1024):
            raise SettingsError(f"lora_rank must be a whole number in [1, 1024], got {self.lora_rank!r}")
        if not (isinstance(self.lora_slots, int) and 1 <= self.lora_slots <= MAX_LORAS):
            raise SettingsError(f"lora_slots must be a whole number in [1, {MAX_LORAS}], got {self.lora_slots!r}")


CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def default_compile_cache() -> Path:
    """Where compiled artefacts live between runs: the user's cache folder, not /tmp (emptied at boot)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "kvlock" / "compile"


def use_compile_cache(folder: str | Path) -> str:
    """Point torch's compiler caches at ``folder`` for this process and return the folder in use.

    Inductor reads the variable each time it looks for a cached artefact, and its FX-graph, AOT-autograd and
    Triton caches and dynamo's record of which sizes were dynamic all live under it; a folder already set
    in the environment by the user wins. Must run before the first compilation of the process.
    """
    current = os.environ.get(CACHE_VARIABLE)
    if current:
        return current
    path = Path(folder).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ[CACHE_VARIABLE] = str(path)
    return str(path)


def attention_backend_for(choice: str, device: torch.device) -> str | None:
    """The diffusers attention backend name for ``choice`` on ``device`` (None: the model's default).

    "auto" keeps PyTorch's own dispatch (FlashAttention-2 on an H100): forcing cuDNN attention measured
    4 % slower for a whole Wan2.1-1.3B forward at 480p (bench/gpu.py, docs/benchmarks.md).
    """
    backend = ATTENTION_CHOICES[choice]
    if backend is not None and backend.startswith("_native_") and backend != "_native_math" and device.type != "cuda":
        raise SettingsError(f"attention {choice!r} needs a CUDA GPU; on {device.type} use auto, native or math")
    return backend


def module_bytes(module: Any) -> int:
    if module is None:
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes an edit needs on the device, by part."""

    text_encoder: int
    transformer: int  # the largest expert's weights (a model's only transformer, for most)
    vae: int
    kv_cache: int
    activations: int
    vae_work: int
    largest_block: int
    other_experts: int = 0  # the weights of a two-expert model's other transformer: resident, both are held

    def for_mode(self, mode: str) -> int:
        denoise = self.kv_cache + self.activations
        if mode == "resident":
            return self.text_encoder + self.transformer + self.other_experts + self.vae + max(denoise, self.vae_work)
        if mode == "model_offload":
            return max(self.text_encoder, self.transformer + max(denoise, self.vae + self.vae_work))
        if mode == "sequential_offload":
            return max(2 * self.largest_block + denoise, self.vae + min(self.vae_work, _tiled_vae_work()))
        raise ValueError(mode)


def _tiled_vae_work() -> int:
    return int(VAE_TILED_PIXELS * VAE_BYTES_PER_PIXEL)


def transformer_shape(transformer: Any) -> tuple[int, int, int]:
    """(layers, model width, feed-forward width) from a diffusers transformer config."""
    cfg = transformer.config
    width = cfg.num_attention_heads * cfg.attention_head_dim
    return cfg.num_layers, width, getattr(cfg, "ffn_dim", None) or 4 * width


def estimate_need(
    pipe: Any,
    height: int,
    width: int,
    tokens: int,
    background_fraction: float,
    dtype: torch.dtype,
    kv_layers: int | None = None,
    experts: list[Any] | None = None,
) -> MemoryNeed:
    """Estimate an edit's device memory for a window of ``tokens`` tokens at ``height`` × ``width``.

    The K/V cache holds one step's background keys and values for ``kv_layers`` layers: one where the
    source and edit passes run in lockstep (``kvlock.sampling.loop``), every layer otherwise (None) — and also
    under ``source_refresh`` > 1, the background-only source pass or ``uncond_source="own"``, which the
    plan made at load cannot know of. The activations are one full pass's (a paired foreground pass is
    never larger). The causal VAE works a few frames at a time, so its working set follows the frame
    size, not the clip length.
    """
    experts = experts or [pipe.transformer]
    layers, model_width, ffn = transformer_shape(experts[0])
    held = layers if kv_layers is None else min(layers, kv_layers)
    itemsize = torch.empty((), dtype=dtype).element_size()
    blocks = getattr(experts[0], "blocks", None) or getattr(experts[0], "transformer_blocks", None)
    weights = sorted((module_bytes(e) for e in experts), reverse=True)
    text = module_bytes(getattr(pipe, "text_encoder", None)) + module_bytes(getattr(pipe, "text_encoder_2", None))
    return MemoryNeed(
        text_encoder=text,
        transformer=weights[0],
        other_experts=sum(weights[1:]),
        vae=module_bytes(pipe.vae),
        kv_cache=int(2 * held * tokens * background_fraction * model_width * itemsize),
        activations=int(tokens * (ACTIVATION_PER_FFN * ffn + ACTIVATION_PER_DIM * model_width) * itemsize),
        vae_work=int(height * width * VAE_BYTES_PER_PIXEL),
        largest_block=max((module_bytes(b) for b in blocks), default=0) if blocks is not None else 0,
    )


def choose_memory_mode(need: MemoryNeed, budget: int) -> tuple[str, str]:
    """The cheapest mode whose estimate fits ``budget`` bytes, and a sentence saying why.

    Resident is fastest; model offload moves whole components between stages (seconds per edit);
    sequential offload streams weights block by block every pass (slowest, smallest).
    """
    usable = int(budget * HEADROOM)
    for mode in ("resident", "model_offload", "sequential_offload"):
        if need.for_mode(mode) <= usable:
            return mode, f"{mode}: needs ~{need.for_mode(mode) / GIB:.1f} GiB of {budget / GIB:.1f} GiB available"
    mode = "sequential_offload"
    return mode, (
        f"{mode}: even this needs ~{need.for_mode(mode) / GIB:.1f} GiB of {budget / GIB:.1f} GiB available; "
        "the edit may run out of memory (try a smaller size or crop_to_matte)"
    )


def memory_budget(device: torch.device, limit_gb: float | None) -> int | None:
    """Bytes the engine may plan to use on ``device``: free memory, capped by the user's limit."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device)  # what this process already holds counts towards its budget
    if limit_gb is not None:
        free = min(free, int(limit_gb * GIB))
    return free
