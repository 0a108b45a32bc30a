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

import torch

from ..execution.acceleration import Acceleration, attention_backend_for
from ..loading.load import LoadedModel, load_model, resolve_device
from ..loading.lora_catalog import LoraCatalog
from ..loading.lora_check import ResolvedLora, loaded_shapes, resolve_loras
from ..lock.noise import NoiseField
from ..settings import LoraChoice
from ..trace import Trace
from .composer import Composer
from .geometry import first_slot
from .job import resolve_job
from .request import EditRequest, EditResult
from .runtime import Runtime
from .window import EditRun, PreviewWanted, ProgressCallback, edit_window, window_source


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
        preview where ``previews(step, total)`` says so; a set ``cancel`` stops the edit between steps."""
        began = time.perf_counter()
        rt = self.runtime
        job = resolve_job(rt.model, request, self.find_loras(request.settings.loras))
        trace = Trace(
            model=rt.model.name,
            settings=job.settings.to_dict(),
            warnings=list(job.warnings),
            tau_source=job.tau_source,
            schedule_source=job.schedule_source,
            control=job.control,
            loras=[lora.describe() for lora in job.loras],
        )
        trace.execution = dict(rt.execution)
        swaps = rt.residency.swaps
        rt.stage_seconds = trace.stage_seconds
        with rt.stage("loras"):
            trace.execution["lora_switch"] = rt.loras.activate(job.loras).describe()
        with rt.stage("prompts"), rt.residency.hold("text_encoder"):
            prompts = rt.encode_prompts(request.prompt, job.settings)
        c = rt.model.compression
        slots = max(first_slot(p.start, c.vae_t) + c.latent_frames(p.model_frames) for p in job.windows)
        if rt.group is not None:
            cancel = rt.group.agreed(cancel)  # every rank stops at the same step
        run = EditRun(job, prompts, NoiseField(job.settings.seed, slots), progress, previews, cancel)
        composer = Composer(request, job.encoding, job.matte, job.settings.feather)
        latents: list[torch.Tensor] = []
        try:
            for index, plan in enumerate(job.windows):
                outcome = edit_window(rt, run, index, window_source(plan, request.frames, composer.out))
                trace.windows.append(outcome.trace)
                with rt.stage("composite"):
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
        trace.seconds = time.perf_counter() - began
        return EditResult(frames=composer.out, trace=trace, latents=latents, region=composer.region, raw=composer.raw)


__all__ = ["EditRequest", "EditResult", "Editor"]
