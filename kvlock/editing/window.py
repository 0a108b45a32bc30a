"""One temporal window of an edit: crop and resize to the model grid, encode, build the token mask, denoise
with KV-Lock, decode the edit (and the source's reconstruction, for the feather ring).

Everything an edit's windows share is resolved once into an :class:`EditRun`; a window adds only its plan
and the frames it sees (its lead-in already edited by the window before).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..lock.noise import NoiseField
from ..lock.token_mask import build_token_mask
from ..media.colour import PixelEncoding
from ..progress import StepProgress
from ..sampling.loop import StepCallback, StepDone, sample_kvlock
from ..sampling.passes import Prompts
from ..trace import WindowTrace
from .composer import Decoded
from .geometry import Window, crop_frames, first_slot, pad_frames, resize_video
from .job import EditJob
from .runtime import Runtime

ProgressCallback = Callable[[StepProgress], None]
PreviewWanted = Callable[[int, int], bool]  # (step, total) → render a preview with this step's progress?


@dataclass(frozen=True)
class EditRun:
    """What every window of one edit shares: the resolved job, its prompts and noise, and its lines out."""

    job: EditJob
    prompts: Prompts
    noise: NoiseField
    progress: ProgressCallback | None = None
    previews: PreviewWanted | None = None
    cancel: threading.Event | None = None


@dataclass(frozen=True)
class WindowOutcome:
    trace: WindowTrace
    decoded: Decoded | None = None  # None: nothing to edit in this window
    latents: torch.Tensor | None = None


def window_source(plan: Window, source: np.ndarray, made: np.ndarray) -> np.ndarray:
    """The window's frames as it edits them: the output already made in its lead-in, then ``source`` — the
    window's own frames [start, end), as filmed or their clean plate."""
    if plan.context == 0:
        return source
    return np.concatenate([made[plan.start : plan.start + plan.context], source[plan.context :]])


def to_model(frames: np.ndarray, encoding: PixelEncoding) -> torch.Tensor:
    """(T, H, W, 3|4) plate pixels → (T, 3, H, W) float32 display-referred values in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(encoding.to_model(frames[..., :3]))).permute(0, 3, 1, 2)


def step_reporter(rt: Runtime, run: EditRun, index: int) -> StepCallback | None:
    """The loop's callback for window ``index``: a :class:`StepProgress` per step, with an ETA over the
    remaining windows and a preview where the caller asked for one."""
    if run.progress is None:
        return None
    progress, previews, count = run.progress, run.previews, len(run.job.windows)
    started = time.perf_counter()

    def report(done: StepDone) -> None:
        r, total = done.record, done.total
        elapsed = time.perf_counter() - started
        remaining = (total - r.step - 1) + (count - index - 1) * total
        png = rt.preview_png(done.x0) if previews is not None and previews(r.step, total) else b""
        progress(
            StepProgress(
                window=index,
                windows=count,
                step=r.step,
                total=total,
                sigma=r.sigma,
                h=r.h,
                alpha=r.alpha,
                omega=r.omega,
                s_star=r.s_star,
                mode=r.mode,
                seconds=r.seconds,
                eta_seconds=elapsed / (r.step + 1) * remaining,
                preview_png=png,
            )
        )

    return report


def edit_window(rt: Runtime, run: EditRun, index: int, source: np.ndarray) -> WindowOutcome:
    """Edit window ``index``; ``source`` is its frames as it sees them (the lead-in already edited)."""
    m, job = rt.model, run.job
    plan = job.windows[index]
    box = (plan.box.top, plan.box.left, plan.box.height, plan.box.width)
    size = (plan.model_frames, plan.model_height, plan.model_width)
    # the lead-in is locked: matte 0 there (a copy, so the caller's matte is never written to)
    lock_matte = crop_frames(job.matte[plan.start : plan.end], plan.box, pad="zero").astype(np.float32)
    lock_matte[: plan.context] = 0.0
    if not (lock_matte > 0).any():
        skipped = "matte empty in this window" + (" after its lead-in" if plan.context else "")
        return WindowOutcome(WindowTrace(plan.start, plan.end, box, size, 0.0, context=plan.context, skipped=skipped))
    video = to_model(crop_frames(source, plan.box, pad="edge"), job.encoding)
    video = pad_frames(resize_video(video, plan.model_height, plan.model_width), plan.model_frames)
    c, settings = m.compression, job.settings
    masks = build_token_mask(
        pad_frames(torch.from_numpy(lock_matte), plan.model_frames),
        c,
        settings.dilate_tokens,
        latent_size=(plan.model_height // c.vae_s, plan.model_width // c.vae_s),
    )
    wtrace = WindowTrace(plan.start, plan.end, box, size, masks.foreground_fraction, context=plan.context)
    vae = m.pipe.vae
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if rt.vae_tiling(plan.model_height, plan.model_width) else vae.disable_tiling()
    with torch.no_grad():
        with rt.stage("encode"), rt.residency.hold("vae"):
            x0 = m.family.encode_video(m.pipe, (video.permute(1, 0, 2, 3)[None] * 2.0 - 1.0).to(m.device))
        window_noise = run.noise.window(x0.shape, first_slot(plan.start, c.vae_t)).to(m.device)
        step_noise = torch.Generator("cpu").manual_seed(settings.seed + 1)  # stochastic schedulers only
        with rt.stage("denoise"), rt.residency.hold("transformer"):
            z, records = sample_kvlock(
                m.family,
                m.pipe,
                rt.bank,
                x0,
                window_noise,
                masks,
                run.prompts,
                settings,
                steps=job.steps,
                omega0=job.omega0,
                callback=step_reporter(rt, run, index),
                on_expert=rt.residency.use_expert,
                cancel=run.cancel,
                pair_guidance=rt.acceleration.pair_guidance,
                generator=step_noise,
                layout=rt.group,
            )
        wtrace.steps = records
        with rt.stage("decode"), rt.residency.hold("vae"):
            edit = rt.decode(z, plan)
            # the source's reconstruction: what the edit shows where it changed nothing (compositing)
            reconstruction = rt.decode(x0, plan) if settings.feather > 0 else None
    return WindowOutcome(wtrace, Decoded(edit, reconstruction), z.cpu())
