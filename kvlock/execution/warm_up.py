"""Compiling every pass kind before the first edit, so that a started (or restarted) server edits warm.

With compiled blocks the first pass of each kind pays dynamo's tracing and, without a filled compile
cache, inductor's code generation: a minute at Wan2.1 sizes, several seconds even when every kernel is
found on disk. Worse for a server, the foreground-only passes change token count with every matte, and
dynamo compiles a second graph the first time a size changes before it treats the size as dynamic. So the
warm-up runs, at the model's working size, one step of every kind — α = 0 (plain passes), α = 1 with two
matte sizes in each of the two layouts of foreground-only passes (conditional and unconditional paired in
one batch for small mattes, one after the other for large ones), 0 < α < 1 (fused passes) and the
background-only source pass with two lengths — on random latents. After it, a matte of any other size
runs on graphs that exist; dynamo's record of which sizes were dynamic lives in the compile cache, so a
restart finds it too. The plain passes run last as well as first: once a block has a graph that breaks
at the K/V exchange, dynamo tries that one first, and the plain kind needs its own entry behind it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..lock.token_mask import build_token_mask
from ..sampling.loop import Prompts, sample_kvlock
from ..settings import EditSettings, resolve_schedule

# matte areas: two per layout of the foreground-only passes (paired below half the tokens, single above), so
# that each layout's token count becomes dynamic
SMALL, LARGE = (0.25, 0.1), (0.55, 0.75)
RUNS: tuple[tuple[str, dict[str, Any], tuple[float, ...]], ...] = (
    ("plain", {"method": "no_lock"}, SMALL[:1]),
    ("foreground", {"alpha_fixed": 1.0}, SMALL + LARGE),
    ("fused", {"alpha_fixed": 0.5}, SMALL[:1]),
    ("background source", {"alpha_fixed": 1.0, "source_pass": "background"}, SMALL),
    ("plain again", {"method": "no_lock"}, SMALL[:1]),
)


LATE_STEPS = 40  # a schedule whose last step lies below any expert boundary


def box_matte(frames: int, height: int, width: int, fraction: float, cell: int) -> torch.Tensor:
    """A centred box of whole tokens (``cell`` pixels a side) over about ``fraction`` of the tokens, always
    leaving some background: a matte over every token would run plain passes, not the kind asked for."""
    rows, cols = height // cell, width // cell
    h = max(1, min(rows, round(rows * fraction**0.5)))
    w = max(1, min(cols - (h == rows), round(fraction * rows * cols / h)))
    top, left = (rows - h) // 2 * cell, (cols - w) // 2 * cell
    matte = torch.zeros(frames, height, width)
    matte[:, top : top + h * cell, left : left + w * cell] = 1.0
    return matte


def warm_up(editor: Any) -> dict[str, float]:
    """Run one step of every pass kind at the model's working size; return seconds per kind.

    Does nothing (returns {}) when the editor does not compile or spreads edits over a process group, whose
    ranks must run every pass together.
    """
    rt = editor.runtime
    if rt.execution["compile"] == "off" or rt.group is not None:
        return {}
    m = rt.model
    c = m.compression
    frames = m.family.valid_frames(m.defaults.frames)
    height, width = m.defaults.height, m.defaults.width
    channels = m.pipe.transformer.config.out_channels  # the latents (some models take conditioning besides)
    shape = (1, channels, c.latent_frames(frames), height // c.vae_s, width // c.vae_s)
    generator = torch.Generator("cpu").manual_seed(0)
    x0 = torch.randn(shape, generator=generator).to(m.device)
    noise = torch.randn(shape, generator=generator).to(m.device)
    with rt.residency.hold("text_encoder"):
        prompts: Prompts = rt.encode_prompts("warm-up", EditSettings(source_prompt="source"))
    seconds: dict[str, float] = {}
    experts = len(m.family.transformers(m.pipe))
    # one step on each expert: the first step of a schedule runs the high-noise expert, the last of a long
    # one (strength 1/steps starts there) the low-noise expert
    runs = [(1, 1.0, "")] + [(LATE_STEPS, 1.0 / LATE_STEPS, " (low-noise expert)")] * (experts > 1)
    for steps, strength, which in runs:
        with torch.no_grad(), rt.residency.hold("transformer"):
            for name, overrides, fractions in RUNS:
                began = time.perf_counter()
                settings = resolve_schedule(EditSettings(steps=steps, strength=strength, **overrides))
                for fraction in fractions:
                    masks = build_token_mask(box_matte(frames, height, width, fraction, c.vae_s * c.patch[1]), c)
                    sample_kvlock(
                        m.family,
                        m.pipe,
                        rt.bank,
                        x0,
                        noise,
                        masks,
                        prompts,
                        settings,
                        steps=steps,
                        omega0=m.defaults.guidance,
                        on_expert=rt.residency.use_expert,
                        pair_guidance=rt.acceleration.pair_guidance,
                    )
                seconds[name + which] = time.perf_counter() - began
    rt.residency.use_expert(0)
    rt.bank.clear()
    return seconds
