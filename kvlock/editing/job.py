"""A request resolved for one model, before any model work: every check, every setting, every window.

:func:`resolve_job` is where an edit's inputs are judged (frames, matte, prompt) and where the lock's
schedule is filled field by field — the request's value, else the model's (its ``kvlock.json``), else the
engine's defaults — with where each came from. The :class:`EditJob` it returns is frozen: the windows that
follow read it, never change it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InvalidRequest, SettingsError
from ..families.base import ModelDefaults
from ..loading.load import LoadedModel
from ..loading.lora_check import ResolvedLora
from ..loading.lora_schedule import with_lora_schedules
from ..media.colour import PixelEncoding
from ..sampling.loop import start_index
from ..settings import DEFAULT_TAU, IGNORED_BY, SCHEDULE_DEFAULTS, EditSettings, resolve_schedule
from .geometry import Window, plan_windows
from .request import EditRequest
from .validation import check_frames, check_prompt, normalise_matte


@dataclass(frozen=True)
class EditJob:
    """One edit as the windows run it: ``settings`` resolved (no field left to the model), ``steps`` and
    ``omega0`` chosen, the matte normalised to float (T, H, W), the windows planned, and the warnings and
    origins (τ, each schedule field) the trace reports."""

    settings: EditSettings
    steps: int
    omega0: tuple[float, ...]  # ω0 per expert: one, or high- then low-noise (Wan2.2 A14B)
    encoding: PixelEncoding
    matte: np.ndarray
    windows: tuple[Window, ...]
    warnings: tuple[str, ...]
    tau_source: str
    schedule_source: dict[str, str]
    sigmas: tuple[float, ...] | None = None  # a step-distilled model's noise levels (Euler steps over them)
    control: str = ""  # the control regime in one line, for the trace: guidance, W and κ, measured steps
    loras: tuple[ResolvedLora, ...] = ()


def largest_valid(n: int, valid: Callable[[int], int]) -> int:
    """The largest frame count not above ``n`` that the model accepts as it is."""
    while n > 1 and valid(n) != n:
        n -= 1
    return max(1, n)


def resolve_schedule_for(
    requested: EditSettings, defaults: ModelDefaults, model_name: str, steps: int | None = None
) -> tuple[EditSettings, dict[str, str], list[str]]:
    """The lock's schedule field by field, with where each came from, and a notice where the model's method
    ignores what the request set. W and κ left to the engine follow the step count (``control_windows``)."""
    model_schedule = defaults.schedule or {}
    origin = "the model's schedule" + (f" ({defaults.schedule_source})" if defaults.schedule_source else "")
    engine = {name: "the engine's default" for name in SCHEDULE_DEFAULTS}
    if steps is not None:
        engine.update({n: f"the engine's default for {steps} steps" for n in ("metric_window", "kappa")})
    sources = {
        name: "set for this edit"
        if getattr(requested, name) is not None
        else origin
        if name in model_schedule
        else engine[name]
        for name in SCHEDULE_DEFAULTS
    }
    settings = resolve_schedule(requested, model_schedule, steps)
    if settings.erase and requested.source_plate is None:
        sources["source_plate"] = "erase (always the clean plate)"
    warnings = []
    ignored = [n for n in IGNORED_BY.get(settings.method, ()) if getattr(requested, n) is not None]
    if ignored and requested.method is None:
        warnings.append(
            f"{model_name}'s default method is {settings.method}, which ignores {', '.join(ignored)}; "
            "set the method (e.g. method kvlock) for them to act"
        )
    return settings, sources, warnings


def resolve_tau(settings: EditSettings, defaults: ModelDefaults, model_name: str) -> tuple[EditSettings, str, str]:
    """τ from the request, else the model's calibration, else the documented default; with its origin and
    a notice ("" if none) when the model was never calibrated."""
    if settings.tau is not None:
        return settings, "set for this edit", ""
    if defaults.tau is not None:
        return replace(settings, tau=float(defaults.tau)), defaults.tau_source or "the model folder's kvlock.json", ""
    notice = (
        f"{model_name} has no calibrated τ; using the default {DEFAULT_TAU:g}. "
        "Run `kvlock calibrate --model NAME` once to fit τ to this model."
    )
    return replace(settings, tau=DEFAULT_TAU), f"default {DEFAULT_TAU:g} (this model was never calibrated)", notice


def guidance_per_expert(settings: EditSettings, defaults: ModelDefaults, experts: int) -> tuple[float, ...]:
    """ω0 for each expert. The low-noise expert's is the request's ``guidance_2``, else the request's
    ``guidance`` (as diffusers' WanPipeline does), else the model's own second guidance."""
    first = settings.guidance if settings.guidance is not None else defaults.guidance
    if experts < 2:
        if settings.guidance_2 is not None:
            raise SettingsError(
                "guidance_2 is the low-noise expert's guidance of a two-expert model (Wan2.2 A14B); "
                "this model has one transformer: leave guidance_2 unset and use guidance"
            )
        return (first,)
    if settings.guidance_2 is not None:
        return first, settings.guidance_2
    if settings.guidance is not None or defaults.guidance_2 is None:
        return first, first
    return first, defaults.guidance_2


def steps_for(
    settings: EditSettings, defaults: ModelDefaults, flow_matching: bool, model_name: str
) -> tuple[int, tuple[float, ...] | None]:
    """The step count, and the noise levels of a step-distilled model (None: the scheduler's own). Such a model
    runs the steps it was distilled for and no others: another count is refused, never silently changed."""
    if defaults.sigmas is None:
        return settings.steps or defaults.steps, None
    count = len(defaults.sigmas)
    if not flow_matching:
        raise SettingsError(f"{model_name}: listed noise levels (sigmas) need a flow-matching model")
    if settings.steps is not None and settings.steps != count:
        raise SettingsError(
            f"{model_name} is step-distilled for {count} steps at the noise levels its kvlock.json lists; "
            f"leave steps unset or set {count} (asked: {settings.steps})"
        )
    return count, tuple(float(v) for v in defaults.sigmas)


def describe_control(settings: EditSettings, steps: int, omega0: tuple[float, ...]) -> str:
    """The control regime of an edit in one line (the trace's ``control``)."""
    if settings.alpha_fixed is not None:
        lock = f"α fixed at {settings.alpha_fixed:g}"
    else:
        run = steps - start_index(steps, settings.strength)
        measured = max(0, min(settings.kappa, run) - settings.metric_window + 1)
        lock = (
            f"α from h on the last {measured} of {run} steps "
            f"(W = {settings.metric_window}, κ = {settings.kappa}), α_early = {settings.alpha_early:g} before"
        )
    if max(omega0) <= 1.0:
        guidance = f"CFG-free (guidance {max(omega0):g}): no unconditional pass, ω stays {max(omega0):g}"
    elif settings.guidance_form == "static":
        guidance = "classic CFG at ω0"
    else:
        guidance = f"ω from ω0 up to {settings.b:g}·ω0 ({settings.guidance_form} form)"
    return f"{lock}; {guidance}"


def resolve_job(model: LoadedModel, request: EditRequest, loras: tuple[ResolvedLora, ...] = ()) -> EditJob:
    """Judge the request and resolve it for ``model`` with ``loras`` (found and checked already); raise the
    engine's typed error naming what to fix. What the LoRAs' own kvlock.json set lies over the model's defaults."""
    family, c = model.family, model.compression
    d = with_lora_schedules(model.defaults, {r.choice.name: r.schedule for r in loras if r.schedule is not None})
    steps, sigmas = steps_for(request.settings, d, family.flow_matching, model.name)
    settings, schedule_source, schedule_warnings = resolve_schedule_for(request.settings, d, model.name, steps)
    encoding = request.pixel_encoding()
    frame_warnings = check_frames(request.frames, encoding.name)
    matte, matte_warnings = normalise_matte(request.matte, request.frames)
    if not settings.erase:
        check_prompt(request.prompt)
    elif not isinstance(request.prompt, str):
        raise InvalidRequest("an erase's prompt (optional) is text describing the background")
    height, width = settings.height or d.height, settings.width or d.width
    windows = plan_windows(
        matte > 0,
        window=largest_valid(settings.window_frames or d.frames, family.valid_frames),
        overlap=settings.window_overlap,
        step=c.vae_t,
        valid_frames=family.valid_frames,
        geometry=settings.geometry,
        area=height * width,
        multiple=model.spatial_multiple,
        size=(settings.height, settings.width),
        crop_margin=settings.crop_margin,
        min_margin=2 * settings.feather + c.vae_s,
    )
    settings, tau_source, tau_notice = resolve_tau(settings, d, model.name)
    warnings = frame_warnings + matte_warnings + schedule_warnings + ([tau_notice] if tau_notice else [])
    omega0 = guidance_per_expert(settings, d, len(family.transformers(model.pipe)))
    return EditJob(
        settings=settings,
        steps=steps,
        sigmas=sigmas,
        control=describe_control(settings, steps, omega0),
        omega0=omega0,
        encoding=encoding,
        matte=matte,
        windows=tuple(windows),
        warnings=tuple(warnings),
        tau_source=tau_source,
        schedule_source=schedule_source,
        loras=loras,
    )
