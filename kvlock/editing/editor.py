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
"""

from __future__ import annotations

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
from ..settings import LoraChoice
from ..trace import Trace, WindowTrace
from .composer import Composer, Decoded, WindowMattes
from .geometry import first_slot
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
    """A loaded model plus KV-Lock's processors, ready to edit any number of clips, one at a time."""

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
        rt.decoder_reach()  # probed once, before the trace copies the execution choices
        together, why = takes_together(rt, job)
        stages: dict[str, float] = {}
        rt.stage_seconds = stages
        with rt.stage("loras"):
            lora_switch = rt.loras.activate(job.loras).describe()
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
        delivery = Delivery(job, rt.model.name, execution, stages, began, finished)
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
        return Composer(request, job.encoding, job.matte, job.settings.feather, self.runtime.composite_device)

    def _together(self, run: EditRun, request: EditRequest, delivery: Delivery) -> None:
        """One window: encode once, denoise every take at once, then decode and composite take by take."""
        rt, job = self.runtime, run.job
        composers = [self._composer(request, job) for _ in range(run.takes)]
        plan = job.windows[0]
        win = prepare_window(rt, run, 0, window_source(plan, request.frames, request.frames), composers[0].whole)
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
                win = prepared.get(index)
                if win is None:
                    source = window_source(plan, request.frames, composer.out)
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
    ) -> None:
        self.job, self.model, self.execution, self.stages = job, model, execution, stages
        self.began, self.finished = began, finished
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
        frames: np.ndarray = composer.out
        result = EditResult(frames=frames, trace=trace, latents=latents, region=composer.region, raw=composer.raw)
        self.results.append(result)
        if self.finished is not None:
            self.finished(result)


__all__ = ["EditRequest", "EditResult", "Editor"]
