"""The engine's public face: load a model once, then edit clips with it.

    editor = Editor.from_pretrained("tiny")            # or a local diffusers folder
    result = editor.edit(EditRequest(frames, matte, "a red cube"), progress=print, cancel=event)

An edit validates everything first, then runs window by window: crop/resize to the model grid, encode the
source, build the token mask, denoise with KV-Lock, decode, and composite the window's frames back into
the original frames at source resolution. The source arrays are never written to.

Long clips. Windows start on multiples of the VAE's temporal factor and overlap by ``context`` frames
(``geometry.temporal_windows``); every window takes its noise from one field in the clip's latent time
(``noise.NoiseField``). Each window after the first is conditioned on the one before: its source in the
overlap is the output already made there (the previous window's edit, composited), and its matte is
zero there, so those frames are locked — background K/V and latent lock — and the new frames are
generated attending to the previous window's edited subject. Why this rather than blending in latent
space (running all windows step by step and averaging the overlaps): it keeps one window in memory at a
time and the sampler unchanged, and the subject's identity is carried by attention to frames that are
already final, not averaged between two guesses. The overlap is a whole number of latent frames (4k + 1
frames for a 4× causal VAE: latent frames 0 … k), so the lock covers exactly the latents of the lead-in.

The hand-over. Locked, the lead-in's latents are the encoding of the previous result, so this window
decodes there the VAE's round trip of it, not the result itself, and its new frames continue the round
trip. Keeping the previous result up to the last lead-in frame would put the whole round-trip error into
one frame step (on a still subject, most of what changes between windows: docs/benchmarks.md). So the
lead-in's output ramps from the previous result to this window's decode of the same frames
(``compositing.handover_weight``): a cross-fade of one generation with its own re-encoding, never of two
independent generations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .acceleration import (
    TYPICAL_BACKGROUND,
    Acceleration,
    attention_backend_for,
    choose_memory_mode,
    estimate_need,
    memory_budget,
    use_compile_cache,
)
from .colour import PixelEncoding, encoding_for
from .compositing import (
    composite_frame,
    edited_region_rgba,
    feather_matte,
    handover_weight,
    inner_ramp,
    support_box,
    with_source_detail,
)
from .errors import EditCancelled, InvalidRequest
from .geometry import Window, crop_frames, first_slot, pad_frames, plan_windows, resize_video
from .kv_bank import KVBank
from .loading import LoadedModel, load_model, resolve_device
from .noise import NoiseField
from .residency import Residency
from .sampler import Prompts, StepCallback, sample_kvlock
from .sequence_parallel import join_sequence_parallel
from .settings import DEFAULT_TAU, IGNORED_BY, SCHEDULE_DEFAULTS, EditSettings, validate_settings, with_schedule
from .token_mask import Compression, build_token_mask
from .trace import Trace, WindowTrace
from .validation import check_frames, normalise_matte

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class EditRequest:
    """Source frames (T, H, W, 3|4) uint8/uint16/float, a matte (T, H, W) or one still, and the prompts.

    ``encoding`` says what the numbers mean (:mod:`kvlock.colour`): by default display-referred code values;
    ``SceneLinear()`` for linear-light plates (EXR), which may hold values above 1.0 and below 0.0. A 4th
    channel is the plate's alpha: the model edits colour only, so alpha is returned exactly as given.
    """

    frames: np.ndarray
    matte: np.ndarray
    prompt: str
    settings: EditSettings = field(default_factory=EditSettings)
    return_region: bool = False
    return_raw: bool = False  # also the decoded edit before compositing (for measuring the lock itself)
    encoding: PixelEncoding | None = None

    def pixel_encoding(self) -> PixelEncoding:
        return self.encoding if self.encoding is not None else encoding_for(self.frames.dtype, "display")


@dataclass
class EditResult:
    """Edited frames in the source's size and dtype, the trace, and per-window diagnostics."""

    frames: np.ndarray
    trace: Trace
    latents: list[torch.Tensor]
    region: np.ndarray | None = None
    raw: np.ndarray | None = None

    @property
    def warnings(self) -> list[str]:
        return self.trace.warnings


def _largest_valid(n: int, valid: Callable[[int], int]) -> int:
    while n > 1 and valid(n) != n:
        n -= 1
    return max(1, n)


def _to_model(frames: np.ndarray, encoding: PixelEncoding) -> torch.Tensor:
    """(T, H, W, 3|4) plate pixels → (T, 3, H, W) float32 display-referred values in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(encoding.to_model(frames[..., :3]))).permute(0, 3, 1, 2)


def _tokens(compression: Compression, frames: int, height: int, width: int) -> int:
    pt, ph, pw = compression.patch
    latent_frames = compression.latent_frames(frames)
    return (latent_frames // pt) * (height // compression.vae_s // ph) * (width // compression.vae_s // pw)


def _window_source(plan: Window, source: np.ndarray, made: np.ndarray) -> np.ndarray:
    """The window's frames as it edits them: the output already made in its lead-in, then the source."""
    lead = plan.start + plan.context
    if plan.context == 0:
        return source[plan.start : plan.end]
    return np.concatenate([made[plan.start : lead], source[lead : plan.end]])


@dataclass
class _Decoded:
    """One window's decoded edit E and reconstruction R of its source, (T, 3, h, w) in [0, 1], from its
    first frame (the lead-in included, for the hand-over); R is None when nothing needs it (no feather)."""

    edit: torch.Tensor
    reconstruction: torch.Tensor | None


class Editor:
    """A loaded model plus KV-Lock's processors, ready to edit any number of clips.

    ``execution`` says how edits run here (attention backend, compiled or not, memory mode and why), so a
    user on a small card can see that the engine chose to offload rather than guess.
    """

    def __init__(self, model: LoadedModel, acceleration: Acceleration | None = None) -> None:
        self.model = model
        self.acceleration = acc = (acceleration or Acceleration()).validated()
        self.bank = KVBank()
        self._stages: dict[str, float] = {}
        family, pipe, device = model.family, model.pipe, model.device
        family.install(pipe, self.bank)
        backend = attention_backend_for(acc.attention, device)
        family.set_attention_backend(pipe, backend)
        mode, reason = self._choose_memory_mode(acc)
        self.residency = Residency(pipe, device, mode)
        self.residency.apply()
        # every rank of the process group builds its editor the same way, then they share each edit
        self.group = join_sequence_parallel(pipe, family, acc.parallel, device) if acc.parallel else None
        compiled = acc.compile if acc.compile and mode != "sequential_offload" else None
        cache = "off"
        if compiled:
            import torch._dynamo

            if acc.compile_cache:
                cache = use_compile_cache(acc.compile_cache)

            # one graph per pass kind (off / capture / fuse / foreground) and token count, shared by all blocks
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            family.compile(pipe, compiled)
        self.execution = {
            "device": str(device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "attention": backend or "default",
            "compile": compiled or "off",
            "compile_cache": cache,
            "pair_guidance": acc.pair_guidance,
            "memory": mode,
            "memory_reason": reason,
            "parallel": self.group.describe() if self.group is not None else "off",
        }

    @classmethod
    def from_pretrained(
        cls,
        source: str = "tiny",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.float32,
        acceleration: Acceleration | None = None,
    ) -> Editor:
        acceleration = (acceleration or Acceleration()).validated()
        dev, _ = resolve_device(device, dtype)
        attention_backend_for(acceleration.attention, dev)  # refuse before spending time on loading
        return cls(load_model(source, device, dtype), acceleration)

    def _choose_memory_mode(self, acc: Acceleration) -> tuple[str, str]:
        m = self.model
        if m.device.type != "cuda":
            return "resident", f"{m.device.type}: weights stay in memory"
        if acc.memory != "auto":
            return acc.memory, f"{acc.memory}: chosen by the user"
        d = m.defaults
        tokens = _tokens(m.compression, d.frames, d.height, d.width)
        lockstep = hasattr(m.family, "stages") and not acc.parallel  # one layer of K/V held at a time
        need = estimate_need(
            m.pipe, d.height, d.width, tokens, TYPICAL_BACKGROUND, m.dtype, kv_layers=1 if lockstep else None
        )
        budget = memory_budget(m.device, acc.memory_limit_gb)
        assert budget is not None
        return choose_memory_mode(need, budget)

    def _vae_tiling(self, height: int, width: int) -> bool:
        choice = self.acceleration.vae_tiling
        if choice != "auto":
            return choice == "on"
        return self.residency.mode == "sequential_offload" or height * width >= 1280 * 720

    @property
    def name(self) -> str:
        return self.model.name

    def edit(
        self, request: EditRequest, progress: ProgressCallback | None = None, cancel: threading.Event | None = None
    ) -> EditResult:
        began = time.perf_counter()
        validate_settings(request.settings)  # the request's own fields first, so their errors name them
        settings, schedule_source, schedule_warnings = self._resolve_schedule(request.settings)
        encoding = request.pixel_encoding()
        frame_warnings = check_frames(request.frames, encoding.name)
        matte, warnings = normalise_matte(request.matte, request.frames)
        warnings = frame_warnings + warnings + schedule_warnings
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise InvalidRequest("prompt is empty: describe what the masked subject should become")
        m = self.model
        steps = settings.steps or m.defaults.steps
        omega0 = settings.guidance if settings.guidance is not None else m.defaults.guidance
        window_len = _largest_valid(settings.window_frames or m.defaults.frames, m.family.valid_frames)
        height = settings.height or m.defaults.height
        width = settings.width or m.defaults.width
        plans = plan_windows(
            matte > 0,
            window=window_len,
            overlap=settings.window_overlap,
            step=m.compression.vae_t,
            valid_frames=m.family.valid_frames,
            geometry=settings.geometry,
            area=height * width,
            multiple=m.spatial_multiple,
            size=(settings.height, settings.width),
            crop_margin=settings.crop_margin,
            min_margin=2 * settings.feather + m.compression.vae_s,
        )
        settings, tau_source = self._resolve_tau(settings, warnings)
        trace = Trace(
            model=m.name,
            settings=settings.to_dict(),
            warnings=warnings,
            tau_source=tau_source,
            schedule_source=schedule_source,
        )
        trace.execution = dict(self.execution)
        self._stages = trace.stage_seconds
        with self._stage("prompts"), self.residency.hold("text_encoder"):
            prompts = self._encode_prompts(request.prompt, settings)
        c = m.compression
        slots = max(first_slot(p.start, c.vae_t) + c.latent_frames(p.model_frames) for p in plans)
        noise = NoiseField(settings.seed, slots)
        composer = _Composer(request, encoding, matte, settings.feather)
        latents: list[torch.Tensor] = []
        if self.group is not None:
            cancel = self.group.agreed(cancel)  # every rank stops at the same step
        try:
            for index, plan in enumerate(plans):
                window_trace, decoded, z = self._edit_window(
                    index,
                    len(plans),
                    plan,
                    _window_source(plan, request.frames, composer.out),
                    encoding,
                    matte,
                    prompts,
                    settings,
                    steps,
                    omega0,
                    noise,
                    progress,
                    cancel,
                )
                trace.windows.append(window_trace)
                with self._stage("composite"):
                    composer.add(plan, decoded, cancel, steps)
                if z is not None:
                    latents.append(z)
        finally:
            self.bank.clear()
            if m.device.type == "cuda":
                torch.cuda.empty_cache()
        trace.seconds = time.perf_counter() - began
        return EditResult(frames=composer.out, trace=trace, latents=latents, region=composer.region, raw=composer.raw)

    def _resolve_schedule(self, requested: EditSettings) -> tuple[EditSettings, dict[str, str], list[str]]:
        """The lock's schedule field by field: the request's, else the model's (its kvlock.json), else the
        engine's defaults; with where each came from, and a notice where the method ignores what was asked."""
        d = self.model.defaults
        model_schedule = d.schedule or {}
        origin = "the model's schedule" + (f" ({d.schedule_source})" if d.schedule_source else "")
        sources = {
            name: "set for this edit"
            if getattr(requested, name) is not None
            else origin
            if name in model_schedule
            else "the engine's default"
            for name in SCHEDULE_DEFAULTS
        }
        settings = validate_settings(with_schedule(requested, model_schedule))
        warnings = []
        ignored = [n for n in IGNORED_BY.get(settings.method, ()) if getattr(requested, n) is not None]
        if ignored and requested.method is None:
            warnings.append(
                f"{self.model.name}'s default method is {settings.method}, which ignores {', '.join(ignored)}; "
                "set the method (e.g. method kvlock) for them to act"
            )
        return settings, sources, warnings

    def _resolve_tau(self, settings: EditSettings, warnings: list[str]) -> tuple[EditSettings, str]:
        """τ from the request, else the model's calibration, else the documented default with a notice."""
        if settings.tau is not None:
            return settings, "set for this edit"
        d = self.model.defaults
        if d.tau is not None:
            return replace(settings, tau=float(d.tau)), d.tau_source or "the model folder's kvlock.json"
        warnings.append(
            f"{self.model.name} has no calibrated τ; using the default {DEFAULT_TAU:g}. "
            "Run `kvlock calibrate --model NAME` once to fit τ to this model."
        )
        return replace(settings, tau=DEFAULT_TAU), f"default {DEFAULT_TAU:g} (this model was never calibrated)"

    def preview(self, latents: torch.Tensor, max_side: int = 160) -> np.ndarray:
        """A small uint8 RGB picture of the first latent frame (e.g. the clean estimate x̂0 mid-edit).

        Only one latent frame is decoded, so a preview costs a fraction of the final decode.
        """
        m = self.model
        with torch.no_grad(), self.residency.hold("transformer", "vae"):
            pixels = m.family.decode_latents(m.pipe, latents[:, :, :1])[0, :, 0]
        h, w = pixels.shape[-2:]
        scale = min(1.0, max_side / max(h, w))
        small = resize_video(pixels[None], max(1, round(h * scale)), max(1, round(w * scale)))[0]
        return ((small.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()

    # -- stages -----------------------------------------------------------------------------------

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Add the block's wall time to the trace's ``stage_seconds`` (the device is synchronised first)."""
        device = self.model.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self._stages[name] = self._stages.get(name, 0.0) + time.perf_counter() - began

    def _encode_prompts(self, prompt: str, s: EditSettings) -> Prompts:
        fam, pipe, n, device = self.model.family, self.model.pipe, self.model.defaults.text_length, self.model.device
        with torch.no_grad():
            return Prompts(
                cond=fam.encode_prompt(pipe, prompt, n, device),
                uncond=fam.encode_prompt(pipe, s.negative_prompt, n, device),
                source=fam.encode_prompt(pipe, s.source_prompt, n, device),
                negative_source=fam.encode_prompt(pipe, s.negative_prompt, n, device)
                if s.uncond_source == "own"
                else None,
            )

    def _edit_window(
        self,
        index: int,
        count: int,
        plan: Window,
        source: np.ndarray,
        encoding: PixelEncoding,
        matte: np.ndarray,
        prompts: Prompts,
        settings: EditSettings,
        steps: int,
        omega0: float,
        noise: NoiseField,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> tuple[WindowTrace, _Decoded | None, torch.Tensor | None]:
        """Edit one window; ``source`` is its frames as it sees them (the lead-in already edited)."""
        m = self.model
        box = (plan.box.top, plan.box.left, plan.box.height, plan.box.width)
        size = (plan.model_frames, plan.model_height, plan.model_width)
        # the lead-in is locked: matte 0 there (a copy, so the caller's matte is never written to)
        lock_matte = crop_frames(matte[plan.start : plan.end], plan.box, pad="zero").astype(np.float32)
        lock_matte[: plan.context] = 0.0
        if not (lock_matte > 0).any():
            skipped = "matte empty in this window" + (" after its lead-in" if plan.context else "")
            return WindowTrace(plan.start, plan.end, box, size, 0.0, context=plan.context, skipped=skipped), None, None
        video = _to_model(crop_frames(source, plan.box, pad="edge"), encoding)
        video = pad_frames(resize_video(video, plan.model_height, plan.model_width), plan.model_frames)
        c = m.compression
        masks = build_token_mask(
            pad_frames(torch.from_numpy(lock_matte), plan.model_frames),
            c,
            settings.dilate_tokens,
            latent_size=(plan.model_height // c.vae_s, plan.model_width // c.vae_s),
        )
        wtrace = WindowTrace(plan.start, plan.end, box, size, masks.foreground_fraction, context=plan.context)
        vae = m.pipe.vae
        if hasattr(vae, "enable_tiling"):
            vae.enable_tiling() if self._vae_tiling(plan.model_height, plan.model_width) else vae.disable_tiling()
        with torch.no_grad():
            with self._stage("encode"), self.residency.hold("vae"):
                x0 = m.family.encode_video(m.pipe, (video.permute(1, 0, 2, 3)[None] * 2.0 - 1.0).to(m.device))
            window_noise = noise.window(x0.shape, first_slot(plan.start, c.vae_t)).to(m.device)
            step_noise = torch.Generator("cpu").manual_seed(settings.seed + 1)  # stochastic schedulers only
            with self._stage("denoise"), self.residency.hold("transformer"):
                z, records = sample_kvlock(
                    m.family,
                    m.pipe,
                    self.bank,
                    x0,
                    window_noise,
                    masks,
                    prompts,
                    settings,
                    steps=steps,
                    omega0=omega0,
                    callback=self._step_callback(index, count, progress),
                    cancel=cancel,
                    pair_guidance=self.acceleration.pair_guidance,
                    generator=step_noise,
                    layout=self.group,
                )
            wtrace.steps = records
            with self._stage("decode"), self.residency.hold("vae"):
                edit = self._decode(z, plan)
                # the source's reconstruction: what the edit shows where it changed nothing (compositing)
                reconstruction = self._decode(x0, plan) if settings.feather > 0 else None
        return wtrace, _Decoded(edit, reconstruction), z.cpu()

    def _decode(self, latents: torch.Tensor, plan: Window) -> torch.Tensor:
        """(T, 3, h, w) in [0, 1] on the CPU: the window's frames, its lead-in included (the padding dropped)."""
        pixels = self.model.family.decode_latents(self.model.pipe, latents)[0].permute(1, 0, 2, 3)
        return ((pixels[: plan.length].clamp(-1, 1) + 1.0) / 2.0).cpu()

    @staticmethod
    def _step_callback(index: int, count: int, progress: ProgressCallback | None) -> StepCallback | None:
        if progress is None:
            return None
        started = time.perf_counter()

        def report(info: dict[str, Any]) -> None:
            r = info["record"]
            done, total = r.step + 1, info["total"]
            elapsed = time.perf_counter() - started
            remaining = (total - done) + (count - index - 1) * total
            progress(
                {
                    "window": index,
                    "windows": count,
                    "step": r.step,
                    "total": total,
                    "sigma": r.sigma,
                    "h": r.h,
                    "alpha": r.alpha,
                    "omega": r.omega,
                    "s_star": r.s_star,
                    "mode": r.mode,
                    "seconds": r.seconds,
                    "eta_seconds": elapsed / done * remaining,
                    "latents": info["latents"],
                    "x0": info["x0"],
                }
            )

        return report


class _Composer:
    """The output of an edit, filled window by window: each window composites the frames it owns.

    Frame by frame, so memory stays one source frame per window however long or large the clip. Outside
    the feathered matte the output is the source frame itself, so only the matte's box is blended; its
    cost follows the subject's size. Frames no window edits stay the source. The edit and the source's
    detail (``with_source_detail``) are combined in the model's space; the result goes back to the plate's
    encoding and is blended there (linear light for linear plates). A plate's alpha channel is copied,
    never edited.
    """

    def __init__(self, request: EditRequest, encoding: PixelEncoding, matte: np.ndarray, feather: int) -> None:
        src = request.frames
        self.source, self.encoding, self.matte, self.feather = src, encoding, matte, feather
        self.out = src.copy()
        self.region = np.zeros((*src.shape[:3], 4), dtype=src.dtype) if request.return_region else None
        self.raw = encoding.to_model(src[..., :3]) if request.return_raw else None

    def add(
        self, plan: Window, decoded: _Decoded | None, cancel: threading.Event | None = None, steps: int = 0
    ) -> None:
        """Composite the window's frames; a cancel is honoured between frames, as between steps.

        Frames it owns are written; its lead-in's frames ramp from the previous window's result to this
        one's (``handover_weight``), inside the feathered matte only, so the background stays the source's.
        """
        if decoded is None:
            return
        for j in range(plan.start, plan.end):
            if cancel is not None and cancel.is_set():
                raise EditCancelled(steps, steps)
            k = j - plan.start
            self._frame(j, plan, decoded, k, handover_weight(k, plan.context))

    def _frame(self, j: int, plan: Window, decoded: _Decoded, k: int, weight: float = 1.0) -> None:
        src = self.source[j]
        height, width = src.shape[:2]
        feathered = feather_matte(self.matte[j], self.feather)
        # only the feathered matte's box can differ from the source, unless full-frame outputs are wanted
        whole = (slice(0, height), slice(0, width))
        box = whole if self.region is not None or self.raw is not None else support_box(feathered)
        if box is None:
            return
        r, c = box
        pb = plan.box
        r0, r1 = max(pb.top, r.start), min(pb.top + pb.height, r.stop)
        c0, c1 = max(pb.left, c.start), min(pb.left + pb.width, c.stop)
        source = src[r, c, :3]
        base = self.encoding.to_model(source)  # the source as the model sees it
        edited, reconstruction = base.copy(), base.copy()
        covered = np.zeros(base.shape[:2], bool)
        if r0 < r1 and c0 < c1:
            inside = (slice(r0 - r.start, r1 - r.start), slice(c0 - c.start, c1 - c.start))
            part = (slice(r0 - pb.top, r1 - pb.top), slice(c0 - pb.left, c1 - pb.left))
            for target, pixels in ((edited, decoded.edit), (reconstruction, decoded.reconstruction)):
                if pixels is not None:
                    frame = resize_video(pixels[k : k + 1], pb.height, pb.width)[0].permute(1, 2, 0).numpy()
                    target[inside] = frame[part]
            covered[inside] = True
        alpha = np.where(covered, feathered[r, c], 0.0).astype(np.float32)
        layer = edited
        if decoded.reconstruction is not None:
            inner = inner_ramp(self.matte[j], self.feather)[r, c]
            layer = with_source_detail(edited, reconstruction, base, inner, 1.0)
        plate_layer = np.where(covered[..., None], self.encoding.from_model(layer), source)
        frame = composite_frame(source, plate_layer, alpha)
        if weight >= 1.0:
            self.out[j][r, c, :3] = frame
            if self.region is not None:
                self.region[j] = edited_region_rgba(plate_layer, alpha, src.dtype)
            if self.raw is not None:
                self.raw[j] = edited
            return
        # the hand-over: only where this window's composite can differ from the source
        ramp = np.where(alpha > 0, np.float32(weight), np.float32(0.0))
        self.out[j][r, c, :3] = composite_frame(self.out[j][r, c, :3], frame.astype(np.float32), ramp)
        if self.region is not None:
            region = edited_region_rgba(plate_layer, alpha, src.dtype)
            self.region[j] = composite_frame(self.region[j], region.astype(np.float32), ramp)
        if self.raw is not None:
            self.raw[j] = self.raw[j] + weight * (edited - self.raw[j])


__all__ = ["EditCancelled", "EditRequest", "EditResult", "Editor"]
