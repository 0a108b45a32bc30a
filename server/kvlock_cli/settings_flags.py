"""One command-line flag per ``EditSettings`` field (``--tau``, ``--no-foreground-only`` …), for ``kvlock
edit`` and ``kvlock submit`` alike; unset flags leave the field to the model's schedule, then the engine."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from kvlock.errors import InvalidRequest
from kvlock.settings import EditSettings

SETTING_HELP = {
    "negative_prompt": "prompt of the unconditional pass",
    "source_prompt": "prompt describing the source (used by the source pass)",
    "steps": "denoising steps (model default)",
    "guidance": "guidance scale ω0 (model default)",
    "guidance_2": "Wan2.2 A14B: ω0 of the low-noise expert's steps (the folder's guidance_scale_2)",
    "strength": "1 starts from noise; lower keeps more of the source",
    "method": "kvlock, no_lock, fixed_alpha=<a>, static_cfg or paper_omega (default: the model's schedule, "
    "e.g. no_lock for tiny; else kvlock)",
    "metric_window": "W: steps in the hallucination metric's window",
    "kappa": "κ: control is active in the last κ steps",
    "tau": "τ: metric threshold",
    "b": "guidance ceiling factor",
    "geometry": "fit (whole frame) or crop_to_matte (box around the matte)",
    "feather": "outward feather of the composite, in pixels",
    "source_pass": "full (the method) or background (faster: the source pass sees only the background)",
    "source_refresh": "run the source pass every N-th locked step, reusing its K/V between (1: exact)",
    "source_plate": "original or clean: start the edit inside the matte from the source as filmed, or from its clean "
    "plate (the old subject taken out using the frames that show what it hides); default: the model's schedule",
    "erase": "remove the masked subject instead of replacing it (--prompt optional: it describes the background)",
    "erase_keep_seen": "with --erase, keep the background other frames show as filmed (--no-erase-keep-seen: the "
    "model repaints the whole matte)",
    "plate_reach": "frames on either side the clean plate looks for the background in (default 16)",
    "loras": "apply a LoRA `kvlock loras` lists, as NAME or NAME:WEIGHT (weight 1 by default; repeatable)",
    "takes": "versions to make in one job (1–16): NAME.take1 … NAME.takeN, differing inside the matte only "
    "(seed, seed + 1, …)",
}
# settings that hold several items take one flag per item, named for one item; the text is judged with the
# rest of the settings (EditSettings reads "NAME:WEIGHT"), so a bad one fails like any bad setting
REPEATED = {"loras": "--lora"}


def _setting_type(annotation: str) -> Any:
    base = annotation.replace(" | None", "").strip()
    return {"str": str, "int": int, "float": float, "bool": bool}[base]


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("KV-Lock settings")
    for f in fields(EditSettings):
        if f.name in REPEATED:
            group.add_argument(REPEATED[f.name], dest=f.name, action="append", default=None, help=SETTING_HELP[f.name])
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _setting_type(str(f.type))
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=SETTING_HELP.get(f.name))
        else:
            group.add_argument(flag, type=kind, default=None, help=SETTING_HELP.get(f.name))


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Only the settings flags the user gave (the others stay unset: a batch's markers may set them)."""
    return {f.name: getattr(args, f.name) for f in fields(EditSettings) if getattr(args, f.name) is not None}


def settings_from_args(args: argparse.Namespace) -> EditSettings:
    """The settings the user set on the command line, checked (a bad one is refused before any work)."""
    return EditSettings(**given_settings(args))


def prompt_for(prompt: str | None, settings: EditSettings) -> str:
    """The edit's prompt: required, unless the edit erases (then it describes the background, if given)."""
    if prompt is not None and prompt.strip():
        return prompt
    if settings.erase:
        return prompt or ""
    raise InvalidRequest("--prompt is needed: describe what the masked subject should become (or pass --erase)")
