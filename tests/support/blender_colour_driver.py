"""Runs ``plugins/blender/colour.py`` inside real Blender-as-a-module (a bpy venv's Python, not pytest).

    python tests/support/blender_colour_driver.py CONFIG.json  → prints one KVLOCK-REPORT JSON line

Builds a sequencer with an EXR image-sequence strip, a PNG strip, a movie strip and a colour strip (no media),
asks the colour module for a plan for each (the sequencer in its default space and in a linear working
space, and after an artist's own tags), then adds result strips as the add-on would and tags them; reports
what Blender holds afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[2]


def load_colour_module() -> object:
    spec = importlib.util.spec_from_file_location("kvlock_blender_colour", ROOT / "plugins" / "blender" / "colour.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def strips_of(editor: object) -> object:
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def image_strip(strips: object, name: str, files: list[str], channel: int) -> object:
    first = Path(files[0])
    strip = strips.new_image(name=name, filepath=str(first), channel=channel, frame_start=1)
    for extra in files[1:]:
        strip.elements.append(Path(extra).name)
    return strip


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    colour = load_colour_module()
    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    strips = strips_of(editor)
    sources = {
        "plate": image_strip(strips, "plate", cfg["exr"], 1),
        "png": image_strip(strips, "png", cfg["png"], 2),
        "movie": strips.new_movie(name="movie", filepath=cfg["movie"], channel=3, frame_start=1),
        "solid": strips.new_effect(name="solid", type="COLOR", channel=4, frame_start=1, length=4),
    }
    media = {"plate": cfg["exr"][0], "png": cfg["png"][0], "movie": cfg["movie"], "solid": None}
    report: dict = {"blender": bpy.app.version_string, "linear_names": sorted(colour.known_linear_spaces())}
    for working in ("default", "Linear Rec.709"):
        if working != "default":
            scene.sequencer_colorspace_settings.name = working
        plans = {}
        for name, strip in sources.items():
            plan = colour.colour_plan(scene, strip, media[name])
            plans[name] = plan.__dict__
        report[working] = {"sequencer": scene.sequencer_colorspace_settings.name, "plans": plans}
    # an artist's own tags: the plate is ACEScg, the movie linear-light Rec.709 (not EXR)
    sources["plate"].colorspace_settings.name = "ACEScg"
    sources["movie"].colorspace_settings.name = "Linear Rec.709"
    report["retagged"] = {n: colour.colour_plan(scene, sources[n], media[n]).__dict__ for n in ("plate", "movie")}
    placed = {}
    for name, out in (("plate", cfg["exr_out"]), ("png", cfg["png"])):
        plan = colour.colour_plan(scene, sources[name], media[name])
        result = image_strip(strips, f"{name} KV-Lock", out, 5 + len(placed))
        before = result.colorspace_settings.name
        tagged = colour.tag_strip(result, plan)
        placed[name] = {"before": before, "tagged": tagged, "after": result.colorspace_settings.name}
    bogus = colour.ColourPlan("sRGB", "sRGB", False, True, "ffv1", "No Such Space", "")
    tagged = colour.tag_strip(sources["png"], bogus)
    placed["bogus"] = {"tagged": tagged, "after": sources["png"].colorspace_settings.name}
    report["placed"] = placed
    print("KVLOCK-REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
