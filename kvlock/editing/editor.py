"""The engine's public face: load a model once, then edit clips with it.

    editor = Editor.from_pretrained("tiny")            # or a local diffusers folder
    result = editor.edit(EditRequest(frames, matte, "a red cube"), progress=print, cancel=event)
    takes = editor.edit_takes(EditRequest(frames, matte, "a red cube", EditSettings(takes=4)), finished=save)

An edit judges and resolves everything first (``job.resolve_job``), then runs window by window
(``window``: crop/resize to the model grid, encode the source, build the token mask, denoise
with KV-Lock, decode) and composites each window's frames back into the original frames at source
resolution (``composer.Composer``). The source arrays are never written to.

Long clips. Windows start on multiples of the VAE's temporal factor and overlap by ``context`` frames
(``geometry.temporal_windows``); every window takes its noise from one field in the clip's latent time
(``lock.noise.NoiseField``). Each window after the first is conditioned on the one before: its source in the
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

Takes. ``EditSettings.takes`` = N makes N versions that differ only in their noise inside the matte
(``lock.noise.take_noise``). A clip of one window runs them together: one encode, one prompt encoding,
each step's source pass shared by every take (``sampling.loop.sample_takes``), one decode of the source's
reconstruction; then each take is decoded, composited and handed to ``finished`` in turn. Later windows of
a long clip continue from each take's own result, so there nothing per step can be shared: the takes run
one after another (sharing the prompts and the first window's encode), as they do where the weights do not
stay on the GPU. A cancel keeps the takes already handed over (``EditCancelled.kept``).

The clean plate (``kvlock.plate``, ``source_plate`` clean and every erase) is made window by window before
the window is encoded, once for all takes: it is the window's start and what its source pass sees, and the
base its composite puts the edit on (an erase keeping what other frames showed: ``Composer.keep_seen``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..errors import EditCancelled, SettingsError
from ..execution.acceleration import Acceleration, attention_backend_for
from ..loading.load import LoadedModel, load_model, resolve_device
from ..loading.lora_catalog import LoraCatalog
from ..loading.lora_check import ResolvedLora, loaded_shapes, resolve_loras
from ..lock.noise import NoiseField
from ..plate import PlateFrames, PlateMaker, PlateOptions
from ..settings import LoraChoice
from ..trace import Trace, WindowTrace
from .composer import Composer, Decoded, WindowMattes
from .geometry import Window, first_slot
from .job import EditJob, resolve_job
from .request import EditRequest, EditResult
from .runtime import Runtime
from .window import (
    EditRun,
    PreparedWindow,
    PreviewWanted,
    ProgressCallback,
    decode_window,
    denoise_window,
    prepare_window,
    window_source,
)

TakeFinished = Callable[[EditResult], None]


def takes_together(rt: Runtime, job: EditJob) -> tuple[bool, str]:
    """Whether an edit's takes denoise together (sharing each step's source pass), and why (or why not)."""
    if job.settings.takes == 1:
        return len(job.windows) == 1, "one take"
    if len(job.windows) > 1:
        return False, "one after another: each take's later windows continue from its own result"
    if rt.residency.mode != "resident":
        return False, f"one after another: memory mode {rt.residency.mode} keeps one pass on the GPU at a time"
    if rt.group is not None:
        return False, "one after another: the passes are spread over a process group"
    return True, "together: one encode, each step's source pass and the reconstruction's decode shared"


class Editor:
    """A loaded model plus KV-Lock's processors, ready to edit any number of clips, one at a time.

    One Editor per loaded model: building one installs KV-Lock's attention processors, with its own K/V bank,
    on the model it is given, so a second Editor built on the same ``LoadedModel`` takes them over and the
    first would then edit with the second's bank. Load the model again for a second Editor (the server keeps
    one Editor per model and slot, and never builds two on one model)."""

    def __init__(
        self, model: LoadedModel, acceleration: Acceleration | None = None, loras: LoraCatalog | None = None
    ) -> None:
        folder = str(model.folder) if model.folder is not None else None
        self.lora_catalog = loras if loras is not None else LoraCatalog(model_folder=folder)
        offered = any(entry.ok for entry in self.lora_catalog.entries())
        self.runtime = Runtime(model, acceleration, offered)

    @classmethod
    def from_pretrained(
        cls,
        source: str = "tiny",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.float32,
        acceleration: Acceleration | None = None,
        loras: LoraCatalog | None = None,
    ) -> Editor:
        """``loras`` says where LoRAs are found (default: the configured LoRA folders and the model's ``loras/``)."""
        acceleration = (acceleration or Acceleration()).validated()
        dev, _ = resolve_device(device, dtype)
        attention_backend_for(acceleration.attention, dev)  # refuse before spending time on loading
        return cls(load_model(source, device, dtype), acceleration, loras)

    def find_loras(self, choices: tuple[LoraChoice, ...]) -> tuple[ResolvedLora, ...]:
        """``choices`` found among the offered LoRAs and checked against this model's transformers."""
        if not choices:
            return ()
        m = self.runtime.model
        experts = [module for _, module in m.family.transformers(m.pipe)]
        return resolve_loras(choices, self.lora_catalog, type(m.pipe), loaded_shapes(experts))

    # what callers read of the runtime
    @property
    def model(self) -> LoadedModel:
        return self.runtime.model

    @property
    def name(self) -> str:
        return self.runtime.model.name

    @property
    def execution(self) -> dict[str, Any]:
        return self.runtime.execution

    def edit(
        self,
        request: EditRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        previews: PreviewWanted | None = None,
    ) -> EditResult:
        """Edit ``request``; ``progress`` gets a :class:`~kvlock.progress.StepProgress` per step, carrying a
        preview where ``previews(step, total)`` says so; a set ``cancel`` stops the edit between steps.
        One take: a request for several is :meth:`edit_takes`'s."""
        if request.settings.takes != 1:
            raise SettingsError(f"{request.settings.takes} takes make several results: use Editor.edit_takes")
        return self.edit_takes(request, progress, cancel, previews)[0]

    def edit_takes(
        self,
        request: EditRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        previews: PreviewWanted | None = None,
        finished: TakeFinished | None = None,
    ) -> list[EditResult]:
        """Every take of ``request`` (``EditSettings.takes``), each handed to ``finished`` as soon as it is
        composited; a cancel raises :class:`~kvlock.errors.EditCancelled` saying how many were handed over."""
        began = time.perf_counter()
        rt = self.runtime
        job = resolve_job(rt.model, request, self.find_loras(request.settings.loras))
        plates = WindowPlates.of(request, job)  # an erase no frame can serve is refused before model work
        rt.decoder_reach()  # probed once, before the trace copies the execution choices
        together, why = takes_together(rt, job)
        stages: dict[str, float] = {}
        rt.stage_seconds = stages
        with rt.stage("loras") if job.loras or rt.loras.in_use else contextlib.nullcontext():
            lora_switch = rt.loras.activate(job.loras).describe()  # an edit of the bare model times nothing
        with rt.stage("prompts"), rt.residency.hold("text_encoder"):
            prompts = rt.encode_prompts(request.prompt, job.settings)
        c = rt.model.compression
        slots = max(first_slot(p.start, c.vae_t) + c.latent_frames(p.model_frames) for p in job.windows)
        if rt.group is not None:
            cancel = rt.group.agreed(cancel)  # every rank stops at the same step
        noise = tuple(NoiseField(job.settings.seed + k, slots) for k in range(job.settings.takes))
        run = EditRun(job, prompts, noise, progress, previews, cancel, together)
        execution = dict(rt.execution) | {
            "takes": {"count": job.settings.takes, "run": why},
            "lora_switch": lora_switch,
        }
        swaps = rt.residency.swaps
        delivery = Delivery(job, rt.model.name, execution, stages, began, finished, plates)
        delivery.swaps = lambda: rt.residency.swaps - swaps  # model offload: one expert on the device at a time
        try:
            if together:
                self._together(run, request, delivery)
            else:
                self._in_turn(run, request, delivery)
        except EditCancelled as stop:  # however deep it stopped, the takes handed over are kept
            raise EditCancelled(stop.step, stop.total, kept=len(delivery.results)) from None
        finally:
            rt.bank.clear()
            if rt.model.device.type == "cuda":
                torch.cuda.empty_cache()
        return delivery.results

    def _composer(self, request: EditRequest, job: EditJob) -> Composer:
        settings, device = job.settings, self.runtime.composite_device
        keep_seen = settings.erase and settings.erase_keep_seen
        return Composer(request, job.encoding, job.matte, settings.feather, device, keep_seen)

    def _frames(
        self, request: EditRequest, delivery: Delivery, index: int, plan: Window
    ) -> tuple[np.ndarray, PlateFrames | None]:
        """Window ``index``'s own frames as the edit starts from them and its source pass sees them (the clean
        plate with ``source_plate`` clean, else the source as filmed), and the plate its composite is based on."""
        plates = delivery.plates
        plate = plates.window(self.runtime, index, plan) if plates is not None else None
        clean = plates is not None and plates.clean
        frames = plate.frames if clean and plate is not None else request.frames[plan.start : plan.end]
        return frames, plate if clean else None

    def _together(self, run: EditRun, request: EditRequest, delivery: Delivery) -> None:
        """One window: encode once, denoise every take at once, then decode and composite take by take."""
        rt, job = self.runtime, run.job
        composers = [self._composer(request, job) for _ in range(run.takes)]
        plan = job.windows[0]
        frames, plate = self._frames(request, delivery, 0, plan)
        for composer in composers:
            composer.plate = plate
        win = prepare_window(rt, run, 0, window_source(plan, frames, request.frames), composers[0].whole)
        if not isinstance(win, PreparedWindow):
            for composer in composers:
                delivery.deliver(composer, [win], [])
            return
        outcomes = denoise_window(rt, run, win, range(run.takes))
        reconstruction = decode_window(rt, win, win.x0) if job.settings.feather > 0 else None
        mattes = WindowMattes.of(job.matte, plan, win.box, job.settings.feather, rt.composite_device)
        for composer, (z, records) in zip(composers, outcomes, strict=True):
            delivery.check(run.cancel)
            decoded = Decoded(decode_window(rt, win, z), reconstruction, win.box)
            with rt.stage("composite"):
                composer.add(plan, decoded, mattes, run.cancel, job.steps)
            delivery.deliver(composer, [replace(win.trace, steps=records)], [z.cpu()])

    def _in_turn(self, run: EditRun, request: EditRequest, delivery: Delivery) -> None:
        """Each take through every window before the next; windows without a lead-in (the same source in
        every take) are encoded once."""
        rt, job = self.runtime, run.job
        prepared: dict[int, PreparedWindow | WindowTrace] = {}
        for take in range(run.takes):
            delivery.check(run.cancel)
            composer = self._composer(request, job)
            windows: list[WindowTrace] = []
            latents: list[torch.Tensor] = []
            for index, plan in enumerate(job.windows):
                frames, composer.plate = self._frames(request, delivery, index, plan)
                win = prepared.get(index)
                if win is None:
                    source = window_source(plan, frames, composer.out)
                    win = prepare_window(rt, run, index, source, composer.whole)
                    if plan.context == 0 and run.takes > 1:
                        prepared[index] = win
                if not isinstance(win, PreparedWindow):
                    windows.append(win)
                    continue
                ((z, records),) = denoise_window(rt, run, win, [take])
                reconstruction = decode_window(rt, win, win.x0) if job.settings.feather > 0 else None
                decoded = Decoded(decode_window(rt, win, z), reconstruction, win.box)
                with rt.stage("composite"):
                    composer.add(plan, decoded, None, run.cancel, job.steps)
                windows.append(replace(win.trace, steps=records))
                latents.append(z.cpu())
            delivery.deliver(composer, windows, latents)


class Delivery:
    """The finished takes of one edit: each made into an :class:`EditResult` with its own trace and handed
    to the caller's ``finished``; a cancel between takes keeps them (``EditCancelled.kept``)."""

    def __init__(
        self,
        job: EditJob,
        model: str,
        execution: dict[str, Any],
        stages: dict[str, float],
        began: float,
        finished: TakeFinished | None,
        plates: WindowPlates | None = None,
    ) -> None:
        self.job, self.model, self.execution, self.stages = job, model, execution, stages
        self.began, self.finished, self.plates = began, finished, plates
        self.results: list[EditResult] = []
        self.swaps: Callable[[], int] = lambda: 0

    def check(self, cancel: threading.Event | None) -> None:
        """Stop before the next take if asked to, keeping the ones handed over."""
        if cancel is not None and cancel.is_set():
            raise EditCancelled(self.job.steps, self.job.steps, kept=len(self.results))

    def deliver(self, composer: Composer, windows: list[WindowTrace], latents: list[torch.Tensor]) -> None:
        job = self.job
        trace = Trace(
            model=self.model,
            settings=job.settings.to_dict(),
            windows=windows,
            warnings=list(job.warnings),
            seconds=time.perf_counter() - self.began,
            execution=dict(self.execution) | {"expert_swaps": self.swaps()},
            stage_seconds=dict(self.stages),
            tau_source=job.tau_source,
            schedule_source=job.schedule_source,
            control=job.control,
            loras=[lora.describe() for lora in job.loras],
            take=len(self.results) + 1,
            takes=job.settings.takes,
        )
        plate = None
        if self.plates is not None:
            trace.plate = self.plates.maker.stats.to_dict()
            trace.warnings.extend(self.plates.maker.stats.warnings)
            plate = self.plates.whole.frames() if self.plates.whole is not None else None
        frames: np.ndarray = composer.out
        result = EditResult(
            frames=frames, trace=trace, latents=latents, region=composer.region, raw=composer.raw, plate=plate
        )
        self.results.append(result)
        if self.finished is not None:
            self.finished(result)


def plate_maker(request: EditRequest, job: EditJob) -> PlateMaker:
    """The clip's clean plate, made window by window; strict for an erase (a frame with no background in
    sight is an error there, a warning otherwise: docs/design.md §2.8)."""
    options = PlateOptions(reach=job.settings.plate_reach)
    return PlateMaker(request.frames, job.matte, job.encoding, options, strict=job.settings.erase)


class PlateKeeper:
    """The whole clip's clean plate, for a caller that asked for it (``return_plate``)."""

    def __init__(self, source: np.ndarray) -> None:
        self.out = np.empty_like(source)
        self.origin = np.zeros(source.shape[:3], np.uint8)

    def add(self, plate: PlateFrames) -> None:
        end = plate.start + len(plate.frames)
        self.out[plate.start : end] = plate.frames
        self.origin[plate.start : end] = plate.origin

    def frames(self) -> PlateFrames:
        return PlateFrames(0, self.out, self.origin)


class WindowPlates:
    """An edit's clean plate window by window, for every take. The maker runs forward through the clip once,
    so where takes run one after another the first take's windows' plates are kept for the others (the plate
    is the source's, the same for every take); ``whole`` gathers the clip's plate where it was asked for."""

    def __init__(self, maker: PlateMaker, clean: bool, keep: bool, whole: PlateKeeper | None) -> None:
        self.maker, self.clean, self.whole = maker, clean, whole
        self.kept: dict[int, PlateFrames] | None = {} if keep else None

    @classmethod
    def of(cls, request: EditRequest, job: EditJob) -> WindowPlates | None:
        """The edit's plates where it starts from the clean plate or its caller wants it, else None."""
        clean = job.settings.source_plate == "clean"
        if not (clean or request.return_plate):
            return None
        whole = PlateKeeper(request.frames) if request.return_plate else None
        return cls(plate_maker(request, job), clean, job.settings.takes > 1, whole)

    def window(self, rt: Runtime, index: int, plan: Window) -> PlateFrames:
        if self.kept is not None and index in self.kept:
            return self.kept[index]
        with rt.stage("plate"):
            plate = self.maker.plate(plan.start, plan.end)
        if self.whole is not None:
            self.whole.add(plate)
        if self.kept is not None:
            self.kept[index] = plate
        return plate


__all__ = ["EditRequest", "EditResult", "Editor"]
