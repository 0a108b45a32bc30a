"""Every knob of an edit, with the paper's defaults, and the baselines expressed as changes to them.

Paper defaults (arXiv 2603.09657 §4.1): metric window W = 10, control in the last κ = 20 steps, threshold
τ = 0.01, guidance ceiling b = 2. Here h is relative to the source latents' variance (``kvlock.lock.metric``), so
the paper's τ does not carry over: ``tau = None`` takes the model's calibrated τ (``kvlock calibrate``
writes it beside the model) or, for a model never calibrated, ``DEFAULT_TAU`` with a notice.
``alpha_early`` (α before the control window) is not given by the paper; see docs/benchmarks.md for how
the defaults were chosen on the quality benchmark's calibration split.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import SettingsError

GUIDANCE_FORMS = ("kvlock", "paper", "static")
GEOMETRIES = ("fit", "crop_to_matte")
UNCOND_SOURCES = ("shared", "own")
SOURCE_PASSES = ("full", "background")
SOURCE_PLATES = ("original", "clean")
MAX_TEXT = 10_000  # characters of a prompt; text encoders read a few hundred tokens at most
MAX_TAKES = 16  # versions of one edit per job: an editor compares a handful, and each costs its passes

# Every number has a finite range, so no setting can make an edit's work (or memory) unbounded: a
# million feather pixels or dilation tokens would run for hours inside one step, where no cancel reaches.
# (low, high, unit); None means unset (the model's default).
RANGES: dict[str, tuple[float, float, str]] = {
    "seed": (-(2**63), 2**63 - 2, ""),
    "steps": (1, 1000, ""),
    "guidance": (0, 100, ""),
    "guidance_2": (0, 100, ""),
    "metric_window": (2, 1000, " steps"),
    "kappa": (0, 1000, " steps"),
    "tau": (0, 1e6, ""),
    "b": (1, 100, ""),
    "alpha_min": (0, 1, ""),
    "alpha_early": (0, 1, ""),
    "alpha_fixed": (0, 1, ""),
    "cfg_zero_delta": (0, 1, ""),
    "dilate_tokens": (0, 64, " tokens"),
    "crop_margin": (0, 4, " (a fraction of the matte's box)"),
    "height": (16, 8192, " pixels"),
    "width": (16, 8192, " pixels"),
    "window_frames": (1, 1024, " frames"),
    "window_overlap": (0, 1024, " frames"),
    "feather": (0, 256, " pixels"),
    "source_refresh": (1, 1000, " steps"),
    "plate_reach": (1, 256, " frames"),
    "takes": (1, MAX_TAKES, " takes"),
}
OPEN_BELOW = {"tau", "cfg_zero_delta"}  # ranges whose low end is excluded

# a LoRA is named as ``kvlock loras`` lists it (its file's or folder's name), never by a path
LORA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
LORA_NAME_RULE = "1–128 characters of A–Z, a–z, 0–9, '.', '_', '+', '-', starting with a letter or digit"
LORA_WEIGHT = (-10.0, 10.0)  # a LoRA's strength; negative weights push away from what it learned
MAX_LORAS = 8  # LoRAs in one edit


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA an edit applies: its listed name and its weight (diffusers' ``set_adapters`` weight; 1 is the
    LoRA as trained, 0 leaves it out). Checked when made, like every setting."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or LORA_NAME.fullmatch(self.name) is None:
            shown = str(self.name)[:80]
            raise SettingsError(f"LoRA name {shown!r} must be {LORA_NAME_RULE} (the name `kvlock loras` lists)")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise SettingsError(f"LoRA {self.name}: weight must be a finite number, got {weight!r:.40}")
        low, high = LORA_WEIGHT
        if not low <= weight <= high:
            raise SettingsError(f"LoRA {self.name}: weight must be in [{low:g}, {high:g}], got {weight:g}")
        object.__setattr__(self, "weight", float(weight))

    @classmethod
    def parse(cls, text: str) -> LoraChoice:
        """``NAME`` or ``NAME:WEIGHT`` (the command line's form)."""
        name, colon, weight = text.strip().rpartition(":")
        if not colon:
            return cls(text.strip())
        try:
            return cls(name, float(weight))
        except ValueError:
            raise SettingsError(f"LoRA {text!r:.80}: write NAME or NAME:WEIGHT with a number as the weight") from None

    @classmethod
    def of(cls, value: Any) -> LoraChoice:
        """A choice from what the API, JSON or a host hands over: a ``LoraChoice``, ``{"name", "weight"}`` or text."""
        if isinstance(value, LoraChoice):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, dict) and set(value) <= {"name", "weight"} and "name" in value:
            return cls(**value)
        raise SettingsError(f"a LoRA is NAME, NAME:WEIGHT or {{name, weight}}, got {value!r:.80}")

    def __str__(self) -> str:
        return f"{self.name}:{self.weight:g}"


def _lora_choices(value: Any) -> tuple[LoraChoice, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise SettingsError(f"loras must be a list of LoRAs (NAME or NAME:WEIGHT), got {value!r:.80}")
    choices = tuple(LoraChoice.of(v) for v in value)
    if len(choices) > MAX_LORAS:
        raise SettingsError(f"{len(choices)} LoRAs asked; at most {MAX_LORAS} can be applied to one edit")
    names = [c.name for c in choices]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SettingsError(f"LoRA {', '.join(twice)} is asked more than once; give each LoRA once, with its weight")
    return choices


# τ for a model that was never calibrated: the embedded model's calibrated value, rounded (h is a rate per unit
# of noise removed, relative to the latents' own scale, so it is a reasonable start; docs/benchmarks.md), with
# a notice to calibrate
DEFAULT_TAU = 0.5


# The lock's schedule for a model whose folder names none. α_early and the rest were chosen on the quality
# benchmark's calibration split (docs/benchmarks.md; the paper is silent on α_early). A model folder's
# kvlock.json may carry its own "schedule" (the embedded model's was chosen the same way), and a request
# overrides either field by field.
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "method": "kvlock",
    "metric_window": 10,
    "kappa": 20,
    "b": 2.0,
    "alpha_early": 0.0,
    "guidance_form": "kvlock",
    "uncond_source": "shared",
    # where denoising starts: 1 from pure noise, < 1 from the noised source (a model's schedule may lower it)
    "strength": 1.0,
    # what the edit starts from inside the matte and the source pass sees: the source as filmed, or its clean
    # plate (the old subject taken out, kvlock.plate); the quality benchmark chooses per model
    "source_plate": "original",
}


def control_windows(steps: int) -> tuple[int, int]:
    """W and κ for a sampler of ``steps`` steps, in the proportions of the defaults at 50 (W = 10, κ = 20: the
    control acts in the last two fifths, its metric spans a fifth), with room for the metric to fill at
    least twice inside the control window (κ ≥ W + 1) and κ within the steps. 4 steps → W = 2, κ = 3 (the
    quality benchmark's calibration split chose among this and its neighbours: docs/benchmarks.md)."""
    kappa = min(steps, max(3, round(0.4 * steps)))
    window = max(2, min(kappa - 1, round(0.2 * steps)))
    return window, kappa


def schedule_defaults(steps: int | None = None) -> dict[str, Any]:
    """The engine's schedule for a sampler of ``steps`` steps (unknown: the defaults as written, at 50)."""
    if steps is None:
        return SCHEDULE_DEFAULTS
    window, kappa = control_windows(steps)
    return {**SCHEDULE_DEFAULTS, "metric_window": window, "kappa": kappa}


# what each method leaves without effect: a request that sets these under such a method is told so
IGNORED_BY = {
    "no_lock": ("metric_window", "kappa", "tau", "b", "alpha_early", "guidance_form", "alpha_fixed", "uncond_source")
}


@dataclass(frozen=True)
class EditSettings:
    """One edit's settings. ``None`` means "the model's default" (steps, guidance, size, window).

    Every field is checked when the object is made (types, ranges, names), so an ``EditSettings`` that exists
    is valid: a request is checked once, where it enters (the command line, the wire, the API), and carried
    as this object from there on. Fields left ``None`` are filled per model by :func:`resolve_schedule`.
    """

    negative_prompt: str = ""
    source_prompt: str = ""
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    # ω0 of the low-noise expert of a two-expert model (Wan2.2 A14B); None: ``guidance`` if set, else the model's
    guidance_2: float | None = None
    strength: float | None = None  # None: the model's schedule, else SCHEDULE_DEFAULTS (1.0)
    # KV-Lock control
    # None in a schedule field: the model's schedule (its kvlock.json), else SCHEDULE_DEFAULTS
    method: str | None = None
    metric_window: int | None = None
    kappa: int | None = None
    tau: float | None = None  # None: the model's calibrated τ, else DEFAULT_TAU
    b: float | None = None
    alpha_min: float = 0.0
    alpha_early: float | None = None
    alpha_fixed: float | None = None
    guidance_form: str | None = None
    cfg_zero_delta: float = 1e-8
    uncond_source: str | None = None
    foreground_only: bool = True
    dilate_tokens: int = 0
    # approximations of the source pass, for speed (docs/benchmarks.md measures what they cost):
    # "background" runs it over the background tokens alone; source_refresh = N runs it every N-th locked
    # step and reuses its K/V in between (1: every step, the exact method)
    source_pass: str = "full"
    source_refresh: int = 1
    # geometry and output
    geometry: str = "fit"
    crop_margin: float = 0.25
    height: int | None = None
    width: int | None = None
    window_frames: int | None = None
    window_overlap: int | None = None  # None: 8, or fewer where windows are too short (geometry.DEFAULT_OVERLAP)
    feather: int = 4
    # the clean plate (kvlock.plate): "original" or "clean" is what the edit starts from inside the matte and
    # what the source pass sees (None: the model's schedule); ``erase`` removes the subject (the clean plate,
    # harmonised by the model; the prompt, optional, describes the background), keeping the pixels another
    # frame showed as filmed unless ``erase_keep_seen`` is off; ``plate_reach`` frames on either side are searched
    source_plate: str | None = None
    erase: bool = False
    erase_keep_seen: bool = True
    plate_reach: int = 16
    # LoRAs applied to the model for this edit, by the names `kvlock loras` lists (a list of LoraChoice, dicts
    # or "NAME:WEIGHT" texts is accepted and held as a tuple of LoraChoice)
    loras: tuple[LoraChoice, ...] = ()
    # versions one job makes: they differ in their noise inside the matte (seed, seed + 1, …) and share the
    # background's, so each is the source outside the matte and they share each step's source pass
    takes: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", _lora_choices(self.loras))
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: LoRAs as a list of ``{"name", "weight"}``."""
        return asdict(self) | {"loras": [asdict(choice) for choice in self.loras]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditSettings:
        """Settings from JSON (a stored job, a model folder's schedule); unknown names are refused."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise SettingsError(f"unknown settings {', '.join(unknown)}")
        return cls(**data)


def with_schedule(
    settings: EditSettings, schedule: dict[str, Any] | None = None, steps: int | None = None
) -> EditSettings:
    """Fill the schedule fields the request left unset: from the model's ``schedule``, else the defaults
    (W and κ in proportion to ``steps`` where it is known: :func:`control_windows`)."""
    given = {k: v for k, v in (schedule or {}).items() if k in SCHEDULE_DEFAULTS}
    filled = {
        name: given.get(name, default)
        for name, default in schedule_defaults(steps).items()
        if getattr(settings, name) is None
    }
    if settings.erase and "source_plate" in filled:
        filled["source_plate"] = "clean"  # an erase is the clean plate, whatever the model's default
    return replace(settings, **filled)


def apply_method(settings: EditSettings) -> EditSettings:
    """Resolve ``method`` into the knobs it changes; each baseline changes exactly one thing.

    ``kvlock``: dynamic α and ω (the method). ``no_lock``: plain regeneration with the latent lock's
    blending only — α = 0 and classic CFG at ω0, what a plain pipeline with latent blending does.
    ``fixed_alpha=<a>``: α = a throughout, KV-Lock's guidance otherwise (``fixed_alpha=0`` differs from
    ``no_lock`` only in the guidance). ``static_cfg``: dynamic α, classic CFG at ω0. ``paper_omega``: the
    paper's ω form.
    """
    if settings.method is None:
        return settings  # the model's method, applied once the editor knows the model
    return replace(settings, **method_knobs(settings.method))


def resolve_schedule(
    settings: EditSettings, schedule: dict[str, Any] | None = None, steps: int | None = None
) -> EditSettings:
    """The settings the sampler runs with: every schedule field set (the request's, else the model's
    ``schedule``, else the defaults for ``steps``) and the method expanded into the knobs it changes."""
    return apply_method(with_schedule(settings, schedule, steps))


def method_knobs(method: str) -> dict[str, Any]:
    """The fields a method sets; a name that is no method is a :class:`SettingsError`."""
    name = method.strip()
    if name == "kvlock":
        return {}
    if name == "no_lock":
        return {"alpha_fixed": 0.0, "guidance_form": "static"}
    if name.startswith("fixed_alpha"):
        _, _, value = name.partition("=")
        try:
            alpha = float(value)
        except ValueError:
            raise SettingsError(f"method {name!r}: write fixed_alpha=<a> with a number a in [0, 1]") from None
        if not 0.0 <= alpha <= 1.0:
            raise SettingsError(f"fixed alpha must be in [0, 1], got {alpha}")
        return {"alpha_fixed": alpha}
    if name == "static_cfg":
        return {"guidance_form": "static"}
    if name == "paper_omega":
        return {"guidance_form": "paper"}
    shown = name if len(name) <= 80 else name[:80] + "…"
    raise SettingsError(
        f"unknown method {shown!r}; expected kvlock, no_lock, fixed_alpha=<a>, static_cfg or paper_omega"
    )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(message)


def _check_range(name: str, value: float | None) -> None:
    if value is None or name not in RANGES:
        return
    low, high, unit = RANGES[name]
    above_low = value > low if name in OPEN_BELOW else value >= low
    if not (above_low and value <= high):
        opening = "(" if name in OPEN_BELOW else "["
        raise SettingsError(f"{name} must be in {opening}{_num(low)}, {_num(high)}]{unit}, got {_num(value)}")


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


KINDS = {"str": str, "int": int, "float": float, "bool": bool}


def _check_type(name: str, annotation: str, value: Any) -> None:
    """Each field holds its declared kind (an int where a float is asked is fine; a bool is no number)."""
    if annotation.startswith("tuple["):
        return  # a collection, normalised and checked item by item when the settings were made
    kind = KINDS[annotation.replace(" | None", "").strip()]
    if value is None and "None" in annotation:
        return
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    wanted = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}[kind]
    _require(ok, f"{name} must be {wanted}, got {value!r:.80}")


def _check(s: EditSettings) -> None:
    """Every field's kind and range, and the names and combinations the engine knows."""
    for f in fields(s):
        value = getattr(s, f.name)
        _check_type(f.name, str(f.type), value)
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{f.name} must be a finite number, got {value}")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise SettingsError(f"{f.name} is {len(value)} characters; at most {MAX_TEXT} are read")
        if isinstance(value, int | float) and not isinstance(value, bool):
            _check_range(f.name, value)
    if s.method is not None:
        method_knobs(s.method)
    _require(s.strength is None or 0.0 < s.strength <= 1.0, f"strength must be in (0, 1], got {s.strength}")
    _require(
        s.alpha_fixed is None or 0.0 <= s.alpha_fixed <= 1.0, f"fixed alpha must be in [0, 1], got {s.alpha_fixed}"
    )
    # None: the model's value, filled in by ``resolve_schedule`` (which makes a new, checked object)
    _require(s.guidance_form in (None, *GUIDANCE_FORMS), f"guidance_form must be one of {GUIDANCE_FORMS}")
    _require(s.uncond_source in (None, *UNCOND_SOURCES), f"uncond_source must be one of {UNCOND_SOURCES}")
    _require(s.source_pass in SOURCE_PASSES, f"source_pass must be one of {SOURCE_PASSES}, got {s.source_pass!r}")
    _require(
        s.source_refresh == 1 or s.uncond_source != "own",
        "source_refresh above 1 reuses one source pass's K/V; with uncond_source 'own' there are two per step "
        "(use uncond_source 'shared' or source_refresh 1)",
    )
    _require(s.geometry in GEOMETRIES, f"geometry must be one of {GEOMETRIES}, got {s.geometry!r}")
    _require(
        s.source_plate in (None, *SOURCE_PLATES),
        f"source_plate must be one of {SOURCE_PLATES}, got {s.source_plate!r}",
    )
    _require(
        not (s.erase and s.source_plate == "original"),
        "erase paints the background from the clean plate: leave source_plate unset (or clean) with erase",
    )
