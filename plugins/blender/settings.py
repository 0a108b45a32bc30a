"""The panel's properties (per scene) and the add-on preferences (server address and token).

The lock's defaults are the engine's own (``kvlock.settings.EditSettings``), read from it rather than
repeated, so the panel never overrides what the engine chose; τ 0, steps 0 and guidance 0 send nothing and
leave the model's own (its calibrated τ, its step count and guidance).
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from kvlock.settings import LORA_WEIGHT, MAX_TAKES, SCHEDULE_DEFAULTS, EditSettings, LoraChoice
from kvlock_wire import DEFAULT_ADDRESS, default_token_file

ENGINE = EditSettings()  # the engine's defaults

PLACEMENT_ITEMS = [
    ("ABOVE", "Directly above", "the channel above the source; if another strip is there, you are asked"),
    ("SHIFT", "Shift strips above up", "move every strip above the source up one channel to make room"),
    ("CHANNEL", "Pick a channel", "a free channel above the source"),
]
MODELS_CACHE: list[tuple[str, str, str]] = [("tiny", "tiny", "the embedded model")]


NO_LORA = "NONE"
# the LoRAs the server offers (Check Server fills it); a module-level list for the same reason as MODELS_CACHE
LORAS_CACHE: list[tuple[str, str, str]] = [(NO_LORA, "(check the server)", "no LoRAs listed yet")]


def _model_items(_self: Any, _context: Any) -> list[tuple[str, str, str]]:
    return MODELS_CACHE  # a module-level list: Blender keeps pointers into it while the menu is open


def _lora_items(_self: Any, _context: Any) -> list[tuple[str, str, str]]:
    return LORAS_CACHE


class KVLockLora(bpy.types.PropertyGroup):
    """One LoRA row of the panel: a name the server lists and its weight."""

    lora: EnumProperty(name="LoRA", items=_lora_items, description="a LoRA the server offers")
    weight: FloatProperty(
        name="Weight", default=1.0, soft_min=-2.0, soft_max=2.0, min=LORA_WEIGHT[0], max=LORA_WEIGHT[1]
    )


class KVLockPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    address: StringProperty(name="Server", default=DEFAULT_ADDRESS, description="host:port of `kvlock serve`")
    token: StringProperty(
        name="Token", subtype="PASSWORD", default="", description="leave empty to read the token file"
    )
    token_file: StringProperty(
        name="Token file", subtype="FILE_PATH", default=str(default_token_file()), description="written by the server"
    )

    def draw(self, _context: Any) -> None:
        col = self.layout.column()
        col.prop(self, "address")
        col.prop(self, "token")
        col.prop(self, "token_file")


class KVLockSceneSettings(bpy.types.PropertyGroup):
    # what to edit
    model: EnumProperty(name="Model", items=_model_items, description="models the server offers")
    task: EnumProperty(
        name="Task",
        items=[
            ("EDIT", "Edit", "replace the masked subject with what the prompt describes"),
            (
                "ERASE",
                "Erase",
                "remove the masked subject: the background behind it from the frames that show it, the rest "
                "painted by the model (the prompt, optional, describes the background)",
            ),
        ],
        default="EDIT",
    )
    prompt: StringProperty(name="Prompt", description="what the masked subject should become (Erase: the background)")
    negative_prompt: StringProperty(name="Negative", description="what the edit should avoid")
    source_prompt: StringProperty(name="Source", description="what the clip shows now (helps the lock)")
    source_range: EnumProperty(
        name="Range",
        items=[
            ("STRIP", "Strip", "the active strip's visible frames (its handles honoured)"),
            ("PREVIEW", "Preview range", "the scene's preview range"),
        ],
        default="STRIP",
    )
    matte_kind: EnumProperty(
        name="Matte",
        items=[
            ("STRIP", "Strip", "a mask, movie or image strip (e.g. a matte clip on a channel above)"),
            ("MASK", "Mask", "a mask data-block"),
        ],
        default="STRIP",
    )
    matte_strip: StringProperty(name="Matte strip", description="the strip whose image is the matte")
    mask: PointerProperty(name="Mask", type=bpy.types.Mask)
    # sampling
    strength: FloatProperty(
        name="Strength",
        default=0.0,
        min=0.0,
        max=1.0,
        description="0: the model's; 1 regenerates fully, lower starts from the noised source",
    )
    steps: IntProperty(name="Steps", default=0, min=0, max=500, description="0: the model's default")
    seed: IntProperty(name="Seed", default=ENGINE.seed, min=0)
    takes: IntProperty(
        name="Takes",
        default=ENGINE.takes,
        min=1,
        max=MAX_TAKES,
        description="versions of the edit (seed, seed + 1, …): the first above the source, the others muted on "
        "the channels above it",
    )
    guidance: FloatProperty(name="Guidance", default=0.0, min=0.0, max=30.0, description="0: the model's default")
    # the lock: the model's own schedule (its kvlock.json, else the engine's defaults), or the knobs below
    lock: EnumProperty(
        name="Lock",
        items=[
            ("MODEL", "Model's schedule", "the schedule calibrated for this model (kvlock.json), else the engine's"),
            ("CUSTOM", "Custom", "the method, κ, τ, b, early α and metric window set below"),
        ],
        default="MODEL",
    )
    method: EnumProperty(
        name="Method",
        items=[
            ("kvlock", "KV-Lock", "dynamic lock and guidance"),
            ("static_cfg", "Static CFG", "dynamic lock, fixed guidance"),
            ("paper_omega", "Paper ω", "the paper's guidance form"),
            ("no_lock", "No lock", "plain regeneration inside the matte"),
        ],
        default=SCHEDULE_DEFAULTS["method"],
    )
    kappa: IntProperty(
        name="Control steps κ",
        default=SCHEDULE_DEFAULTS["kappa"],
        min=0,
        description="lock control in the last κ steps",
    )
    tau: FloatProperty(
        name="Threshold τ",
        default=0.0,
        min=0.0,
        precision=4,
        description="0: the model's calibrated τ (kvlock calibrate); the metric is relative to the source's scale",
    )
    b: FloatProperty(name="Guidance ceiling b", default=SCHEDULE_DEFAULTS["b"], min=1.0)
    alpha_early: FloatProperty(
        name="Early α",
        default=SCHEDULE_DEFAULTS["alpha_early"],
        min=0.0,
        max=1.0,
        description="the lock before the last κ steps",
    )
    metric_window: IntProperty(name="Metric window", default=SCHEDULE_DEFAULTS["metric_window"], min=2)
    feather: IntProperty(name="Feather", default=ENGINE.feather, min=0, max=64, description="pixels of soft edge")
    loras: CollectionProperty(type=KVLockLora, name="LoRAs")
    # where the result goes
    placement: EnumProperty(name="Placement", items=PLACEMENT_ITEMS, default="ABOVE")
    placement_channel: IntProperty(name="Channel", default=2, min=1, max=128, description="for Pick a channel")
    # output
    output_dir: StringProperty(name="Folder", subtype="DIR_PATH", description="empty: next to the .blend")
    codec: EnumProperty(
        name="Codec",
        items=[("ffv1", "FFV1 (lossless)", ""), ("prores", "ProRes 4444", "")],
        default="ffv1",
    )
    # live state, written only by the timer
    status: StringProperty(name="Status", default="")
    connection: StringProperty(name="Connection", default="not checked")
    running: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    step_text: StringProperty(default="")
    placed_channel: IntProperty(default=0)

    def edit_settings(self) -> dict[str, Any]:
        """The engine's EditSettings fields this panel sets; 0 strength, steps, guidance or τ leaves the model's
        own, and with Lock = Model's schedule no lock setting is sent, so the model's calibrated schedule applies.
        Task Erase sets ``erase``."""
        settings: dict[str, Any] = {
            "negative_prompt": self.negative_prompt,
            "source_prompt": self.source_prompt,
            "seed": self.seed,
            "feather": self.feather,
        }
        zero_means_model = ("strength", "steps", "guidance")
        if self.lock == "CUSTOM":
            for name in ("method", "kappa", "b", "alpha_early", "metric_window"):
                settings[name] = getattr(self, name)
            zero_means_model += ("tau",)
        settings.update({name: getattr(self, name) for name in zero_means_model if getattr(self, name) > 0})
        if self.task == "ERASE":
            settings["erase"] = True
        chosen = [LoraChoice(row.lora, row.weight) for row in self.loras if row.lora != NO_LORA]
        if chosen:
            settings["loras"] = [{"name": c.name, "weight": c.weight} for c in chosen]
        if self.takes > 1:
            settings["takes"] = self.takes
        return settings


CLASSES = (KVLockPreferences, KVLockLora, KVLockSceneSettings)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.kvlock = PointerProperty(type=KVLockSceneSettings)


def unregister() -> None:
    del bpy.types.Scene.kvlock
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
