"""One temporal window of an edit: crop and resize to the model grid, encode, build the token mask
(``prepare_window``); denoise it with KV-Lock for one take or several at once (``denoise_window``); decode the
box its composite reads (``decode_window``, ``decode_box``).

Everything an edit's windows share is resolved once into an :class:`EditRun`; a window adds only its plan
and the frames it sees (its lead-in already edited by the window before).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..lock.noise import NoiseField, take_noise
from ..lock.token_mask import TokenMask, build_token_mask
from ..media.colour import PixelEncoding
from ..progress import StepProgress
from ..sampling.loop import StepCallback, StepDone, sample_takes
from ..sampling.passes import Prompts
from ..trace import StepRecord, WindowTrace
from .decode_box import DecodeBox, decode_box
from .geometry import Window, crop_frames, first_slot, pad_frames, resize_video
from .job import EditJob
from .runtime import Runtime

ProgressCallback = Callable[[StepProgress], None]
PreviewWanted = Callable[[int, int], bool]  # (step, total) → render a preview with this step's progress?


@dataclass(frozen=True)
class EditRun:
    """What every window of one edit shares: the resolved job, its prompts and each take's noise (take k's
    drawn from seed + k), its lines out, and whether its takes denoise together or one after another."""

    job: EditJob
    prompts: Prompts
    noise: tuple[NoiseField, ...]
    progress: ProgressCallback | None = None
    previews: PreviewWanted | None = None
    cancel: threading.Event | None = None
    together: bool = True

    @property
    def takes(self) -> int:
        return len(self.noise)


@dataclass(frozen=True)
class PreparedWindow:
    """A window ready to denoise: its plan, token masks, encoded source, the box its composite decodes, and
    its trace row (steps filled per take)."""

    index: int
    plan: Window
    masks: TokenMask
    x0: torch.Tensor
    box: DecodeBox
    trace: WindowTrace


def window_source(plan: Window, source: np.ndarray, made: np.ndarray) -> np.ndarray:
    """The window's frames as it edits them: the output already made in its lead-in, then ``source`` — the
    window's own frames [start, end), as filmed or their clean plate."""
    if plan.context == 0:
        return source
    return np.concatenate([made[plan.start : plan.start + plan.context], source[plan.context :]])


def to_model(frames: np.ndarray, encoding: PixelEncoding) -> torch.Tensor:
    """(T, H, W, 3|4) plate pixels → (T, 3, H, W) float32 display-referred values in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(encoding.to_model(frames[..., :3]))).permute(0, 3, 1, 2)


def step_reporter(rt: Runtime, run: EditRun, index: int, takes: Sequence[int]) -> StepCallback | None:
    """The loop's callback for window ``index`` run for ``takes``: a :class:`StepProgress` per step and
    take, with an ETA over what remains (the other windows, and the takes still to run one after another)
    and a preview where the caller asked for one."""
    if run.progress is None:
        return None
    progress, previews, count = run.progress, run.previews, len(run.job.windows)
    started = time.perf_counter()

    def report(done: StepDone) -> None:
        r, total, take = done.record, done.total, takes[done.take]
        elapsed = time.perf_counter() - started
        remaining = (total - r.step - 1) + (count - index - 1) * total
        if not run.together:
            remaining += (run.takes - take - 1) * count * total
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
                take=take,
                takes=run.takes,
                in_turn=not run.together,
            )
        )

    return report


def prepare_window(
    rt: Runtime, run: EditRun, index: int, source: np.ndarray, whole: bool
) -> PreparedWindow | WindowTrace:
    """Window ``index`` encoded and masked, ``source`` being its frames as it sees them (the lead-in already
    edited); its skipped trace row where the matte leaves it nothing to edit. ``whole``: its composite
    covers the whole box (outputs of whole frames are wanted)."""
    m, job = rt.model, run.job
    plan = job.windows[index]
    box = (plan.box.top, plan.box.left, plan.box.height, plan.box.width)
    size = (plan.model_frames, plan.model_height, plan.model_width)
    # the lead-in is locked: matte 0 there (a copy, so the caller's matte is never written to)
    lock_matte = crop_frames(job.matte[plan.start : plan.end], plan.box, pad="zero").astype(np.float32)
    lock_matte[: plan.context] = 0.0
    c, settings = m.compression, job.settings
    region = decode_box(
        job.matte[plan.start : plan.end],
        settings.feather,
        plan.box,
        (plan.model_height, plan.model_width),
        c.vae_s,
        rt.decode_margin(plan.model_height, plan.model_width),
        whole,
    )
    if not (lock_matte > 0).any() or region is None:
        skipped = "matte empty in this window" + (" after its lead-in" if plan.context else "")
        return WindowTrace(plan.start, plan.end, box, size, 0.0, context=plan.context, skipped=skipped)
    video = to_model(crop_frames(source, plan.box, pad="edge"), job.encoding)
    video = pad_frames(resize_video(video, plan.model_height, plan.model_width), plan.model_frames)
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
    with torch.no_grad(), rt.stage("encode"), rt.residency.hold("vae"):
        x0 = m.family.encode_video(m.pipe, (video.permute(1, 0, 2, 3)[None] * 2.0 - 1.0).to(m.device))
    return PreparedWindow(index, plan, masks, x0, region, wtrace)


def denoise_window(
    rt: Runtime, run: EditRun, win: PreparedWindow, takes: Sequence[int]
) -> list[tuple[torch.Tensor, list[StepRecord]]]:
    """Denoise ``win`` for ``takes`` (indices into the run's takes) at once: each take's noise is its own
    inside the foreground tokens and take 1's outside (``take_noise``), so every step's source pass is
    shared. The final latents and the step records of each."""
    m, job, c = rt.model, run.job, rt.model.compression
    slot = first_slot(win.plan.start, c.vae_t)
    shared = run.noise[0].window(win.x0.shape, slot).to(m.device)
    inside = win.masks.latent[None, None].to(m.device)
    noises = [shared if k == 0 else take_noise(shared, run.noise[k].window(win.x0.shape, slot).to(m.device), inside)
              for k in takes]  # fmt: skip
    # stochastic schedulers only: take k's steps draw from seed + 1 + k
    generators = [torch.Generator("cpu").manual_seed(job.settings.seed + 1 + k) for k in takes]
    with torch.no_grad(), rt.stage("denoise"), rt.residency.hold("transformer"):
        return sample_takes(
            m.family,
            m.pipe,
            rt.bank,
            win.x0,
            noises,
            win.masks,
            run.prompts,
            job.settings,
            steps=job.steps,
            omega0=job.omega0,
            callback=step_reporter(rt, run, win.index, takes),
            on_expert=rt.residency.use_expert,
            cancel=run.cancel,
            pair_guidance=rt.acceleration.pair_guidance,
            generators=generators,
            layout=rt.group,
            source_noise=shared,
            sigmas=job.sigmas,
        )


def decode_window(rt: Runtime, win: PreparedWindow, latents: torch.Tensor) -> torch.Tensor:
    """The decode of ``latents`` (a take's, or the source's for its reconstruction) over the window's box."""
    with torch.no_grad(), rt.stage("decode"), rt.residency.hold("vae"):
        return rt.decode(latents, win.plan, win.box)
