"""The render's fields, their bounds and how text becomes them — one table for the Studio dialog and the page.

Each number takes the engine's whole valid range (``kvlock.settings.validate_settings``): strength in
(0, 1] (0 leaves the model's), τ > 0 down to 1e-6 (so 0.005 can be typed; 0 leaves the model's calibrated
τ), b ≥ 1, α in [0, 1]; the defaults are the engine's. Counts that the engine does not
bound stop at 2³¹−1 (what a spin box holds), and the seed is text, since a seed goes to 2⁶³−1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from kvlock.errors import SettingsError
from kvlock.settings import MAX_TAKES, EditSettings

MATTES = (("above", "Matte clip on the track directly above"), ("clip", "Clip matte of the source clip"),
          ("file", "Matte file"))  # fmt: skip
LOCKS = (("model", "The model's schedule (its calibration)"),
         ("custom", "Custom: κ, τ, b and early α below"))  # fmt: skip
TASKS = (("edit", "Edit: replace the subject with the prompt"),
         ("erase", "Erase: remove the subject (prompt optional: the background)"))  # fmt: skip
INT_MAX, SEED_MAX = 2**31 - 1, 2**63 - 1


class FormError(ValueError):
    """A field the editor typed is out of range or not a number; the message names it."""


@dataclass(frozen=True)
class Number:
    attr: str  # the Form field
    ident: str  # the widget's ID
    label: str
    kind: type
    default: float
    low: float
    high: float
    decimals: int = 0  # a float's digits after the point; its smallest value is 10^-decimals when low is open
    low_open: bool = False  # the engine wants > low, not ≥ low

    @property
    def minimum(self) -> float:
        return 10.0**-self.decimals if self.low_open else self.low

    def parse(self, value: Any) -> int | float:
        try:
            if isinstance(value, bool):
                raise TypeError(value)
            if self.kind is float:
                number: int | float = float(value)
            elif isinstance(value, float) and value.is_integer():
                number = int(value)
            else:
                number = value if isinstance(value, int) else int(str(value).strip())
        except (TypeError, ValueError, OverflowError):
            kind = "number" if self.kind is float else "whole number"
            raise FormError(f"{self.label}: {value!r} is not a {kind}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise FormError(f"{self.label}: {value!r} is not a finite number")
        if number < self.low or (self.low_open and number <= self.low) or number > self.high:
            low = f"more than {self.low:g}" if self.low_open else f"at least {self.low:g}"
            raise FormError(f"{self.label} must be {low} and at most {self.high:g}, got {number:g}")
        return number


NUMBERS = (
    Number("strength", "Strength", "Strength (0: the model's)", float, 0.0, 0.0, 1.0, 3),
    Number("steps", "Steps", "Steps (0: model default)", int, 0, 0, INT_MAX),
    Number("takes", "Takes", "Takes (versions, in the Take Selector)", int, 1, 1, MAX_TAKES),
    Number("guidance", "Guidance", "Guidance (0: model default)", float, 0.0, 0.0, 1e6, 3),
    Number("kappa", "Kappa", "Control steps κ", int, 20, 0, INT_MAX),
    Number("tau", "Tau", "Threshold τ (0: the model's calibrated τ)", float, 0.0, 0.0, 1e6, 6),
    Number("b", "B", "Guidance ceiling b", float, 2.0, 1.0, 1e6, 3),
    Number("alpha_early", "AlphaEarly", "Early α", float, 0.0, 0.0, 1.0, 3),
)
SEED = Number("seed", "Seed", "Seed", int, 0, 0, SEED_MAX)
SETTINGS = ("negative_prompt", "source_prompt", "seed")
LOCK_SETTINGS = ("kappa", "b", "alpha_early")  # sent only with the custom lock
TEXTS = (("prompt", "Prompt"), ("negative_prompt", "Negative"), ("source_prompt", "SourcePrompt"),
         ("matte_file", "MatteFile"), ("output_dir", "Output"), ("model", "Model"), ("loras", "Loras"))  # fmt: skip
LORAS_HINT = "NAME or NAME:WEIGHT, comma-separated (Check server lists them)"


def parse_loras(text: str) -> tuple[str, ...]:
    """The LoRAs field (``style:0.8, product``) as the engine's ``NAME:WEIGHT`` texts, checked as settings are."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    try:
        EditSettings(loras=items)
    except SettingsError as exc:
        raise FormError(f"LoRAs: {exc}") from None
    return items


@dataclass(frozen=True)
class Form:
    """The render's fields, checked."""

    prompt: str = ""
    negative_prompt: str = ""
    source_prompt: str = ""
    strength: float = 0.0  # 0: the model's (its schedule's, else 1: from pure noise)
    steps: int = 0
    takes: int = 1  # versions: the first placed, the others in its Take Selector
    seed: int = 0
    guidance: float = 0.0
    kappa: int = 20
    tau: float = 0.0  # 0: the model's calibrated τ
    b: float = 2.0
    alpha_early: float = 0.0
    lock: str = "model"  # "model": the model's calibrated schedule | "custom": κ, τ, b, early α as typed
    task: str = "edit"  # "edit": replace the subject as the prompt says | "erase": remove it
    matte: str = "above"  # "above" | "clip" | "file"
    matte_file: str = ""
    output_dir: str = ""
    model: str = ""  # empty: the server's first loadable model
    loras: str = ""  # "NAME[:WEIGHT], …" as the server lists them

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Form:
        """From field name → typed text or number (the page's JSON, the dialog's widgets); bad fields raise."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FormError(f"unknown fields: {', '.join(unknown)}")
        out: dict[str, Any] = {}
        for number in (*NUMBERS, SEED):
            if number.attr in values:
                out[number.attr] = number.parse(values[number.attr])
        for attr, _ in TEXTS:
            if attr in values:
                if not isinstance(values[attr], str) or len(values[attr]) > 4096:
                    raise FormError(f"{attr.replace('_', ' ')} must be text of at most 4096 characters")
                out[attr] = values[attr].strip() if attr != "prompt" else values[attr]
        if "loras" in out:
            parse_loras(out["loras"])
        for attr, choices in (("matte", MATTES), ("lock", LOCKS), ("task", TASKS)):
            if attr in values:
                if values[attr] not in {key for key, _ in choices}:
                    raise FormError(f"{attr} must be one of {', '.join(key for key, _ in choices)}")
                out[attr] = values[attr]
        return cls(**out)

    def settings(self) -> dict[str, Any]:
        """The engine's EditSettings fields this form sets; 0 strength, steps, guidance or τ leaves the model's
        own, and the model's lock sends no lock setting at all, so the schedule calibrated for the model applies.
        The Erase task sets ``erase``."""
        out: dict[str, Any] = {name: getattr(self, name) for name in SETTINGS}
        if self.loras:
            out["loras"] = list(parse_loras(self.loras))
        zero_means_model = ("strength", "steps", "guidance")
        if self.lock == "custom":
            out.update({name: getattr(self, name) for name in LOCK_SETTINGS})
            out["method"] = "kvlock"
            zero_means_model += ("tau",)
        out.update({name: getattr(self, name) for name in zero_means_model if getattr(self, name) > 0})
        if self.task == "erase":
            out["erase"] = True
        if self.takes > 1:
            out["takes"] = self.takes
        return out
