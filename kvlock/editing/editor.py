"""The engine's public face: load a model once, then edit clips with it.

    editor = Editor.from_pretrained("tiny")            # or a local diffusers folder
    result = editor.edit(EditRequest(frames, matte, "a red cube"), progress=print, cancel=event)

An edit judges and resolves everything first (``job.resolve_job``), then runs window by window
(``window.edit_window``: crop/resize to the model grid, encode the source, build the token mask, denoise
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
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import torch

from ..execution.acceleration import Acceleration, attention_backend_for
from ..loading.load import LoadedModel, load_model, resolve_device
from ..lock.noise import NoiseField
from ..plate import PlateFrames, PlateMaker, PlateOptions
from ..trace import Trace
from .composer import Composer
from .geometry import first_slot
from .job import EditJob, resolve_job
from .request import EditRequest, EditResult
from .runtime import Runtime
from .window import EditRun, PreviewWanted, ProgressCallback, edit_window, window_source


class Editor:
    """A loaded model plus KV-Lock's processors, ready to edit any number of clips, one at a time."""

    def __init__(self, model: LoadedModel, acceleration: Acceleration | None = None) -> None:
        self.runtime = Runtime(model, acceleration)

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
        preview where ``previews(step, total)`` says so; a set ``cancel`` stops the edit between steps."""
        began = time.perf_counter()
        rt = self.runtime
        job = resolve_job(rt.model, request)
        settings = job.settings
        clean = settings.source_plate == "clean"
        plates = plate_maker(request, job) if clean or request.return_plate else None  # refuses before model work
        trace = Trace(
            model=rt.model.name,
            settings=job.settings.to_dict(),
            warnings=list(job.warnings),
            tau_source=job.tau_source,
            schedule_source=job.schedule_source,
        )
        trace.execution = dict(rt.execution)
        swaps = rt.residency.swaps
        rt.stage_seconds = trace.stage_seconds
        with rt.stage("prompts"), rt.residency.hold("text_encoder"):
            prompts = rt.encode_prompts(request.prompt, job.settings)
        c = rt.model.compression
        slots = max(first_slot(p.start, c.vae_t) + c.latent_frames(p.model_frames) for p in job.windows)
        if rt.group is not None:
            cancel = rt.group.agreed(cancel)  # every rank stops at the same step
        run = EditRun(job, prompts, NoiseField(job.settings.seed, slots), progress, previews, cancel)
        keep_seen = settings.erase and settings.erase_keep_seen
        composer = Composer(request, job.encoding, job.matte, settings.feather, keep_seen)
        kept = PlateKeeper(request.frames) if request.return_plate else None
        latents: list[torch.Tensor] = []
        try:
            for index, plan in enumerate(job.windows):
                with rt.stage("plate"):
                    plate = plates.plate(plan.start, plan.end) if plates is not None else None
                if kept is not None and plate is not None:
                    kept.add(plate)
                frames = plate.frames if clean and plate is not None else request.frames[plan.start : plan.end]
                outcome = edit_window(rt, run, index, window_source(plan, frames, composer.out))
                trace.windows.append(outcome.trace)
                with rt.stage("composite"):
                    composer.plate = plate if clean else None
                    composer.add(plan, outcome.decoded, cancel, job.steps)
                if outcome.latents is not None:
                    latents.append(outcome.latents)
        finally:
            rt.bank.clear()
            if rt.model.device.type == "cuda":
                torch.cuda.empty_cache()
        trace.execution["expert_swaps"] = (
            rt.residency.swaps - swaps
        )  # model offload: one expert on the device at a time
        if plates is not None:
            trace.plate = plates.stats.to_dict()
            trace.warnings.extend(plates.stats.warnings)
        trace.seconds = time.perf_counter() - began
        return EditResult(
            frames=composer.out,
            trace=trace,
            latents=latents,
            region=composer.region,
            raw=composer.raw,
            plate=kept.frames() if kept is not None else None,
        )


def plate_maker(request: EditRequest, job: EditJob) -> PlateMaker:
    """The clip's clean plate, made window by window; strict for an erase (a frame with no background in
    sight is an error there, a warning otherwise: docs/design.md §2.7)."""
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


__all__ = ["EditRequest", "EditResult", "Editor"]
