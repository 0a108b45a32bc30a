"""Keeping linear plates linear in the sequencer: what a strip's pixels are, and how to tag the result.

Blender converts every strip from its own colour space (``strip.colorspace_settings.name``, set per strip:
"sRGB" for 8-bit media, "Linear Rec.709" for float images such as EXR by default) into the sequencer's
working space (``scene.sequencer_colorspace_settings.name``). So a result shows exactly like its source when
it holds values in the same encoding as the source and its strip carries the same colour-space name. That is
the whole rule here:

- An EXR strip (or any strip whose space is scene-linear) is edited from its media file, never through a
  sequencer render (an 8-bit render of a linear plate clips it), and asks the server for ``exr`` when the
  media is EXR — the result holds the plate's own linear values — tagged with the source strip's space.
- A display-referred strip (sRGB, Rec.1886, log encodings …) is edited from its media file too and the result,
  holding the same code values, is tagged with the source's space.
- A strip without media (scene, effect, text) is rendered through the sequencer with the Standard view
  transform onto the sRGB display, whatever the sequencer's working space: its result is sRGB and is tagged so.

Which spaces are scene-linear is read from the OpenColorIO config Blender uses (``$OCIO`` if set, else the one
shipped in Blender's datafiles): a colour space with ``encoding: scene-linear`` (Blender 5.1+), ``family:
Linear`` (Blender 4.x–5.0), or a ``lin_…`` alias. Only ``colour_plan`` and ``tag_strip`` touch Blender objects,
and only on the main thread (``tag_space`` too); the rest are plain functions.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DISPLAY_SPACE = "sRGB"  # what a Standard-view sequencer render onto the sRGB display holds
LINEAR_FALLBACK = frozenset({"Linear Rec.709", "Linear", "Linear Rec.2020", "ACEScg", "ACES2065-1"})
_BLOCK = re.compile(r"^\s*-\s*!<ColorSpace>", re.MULTILINE)
_FIELD = re.compile(r"^\s{4}(name|aliases|family|encoding|isdata):\s*(.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ColourPlan:
    """How to send one strip and how to tag what comes back (a plain snapshot: safe for the worker thread)."""

    source_space: str  # the strip's colorspace_settings.name
    sequencer_space: str  # scene.sequencer_colorspace_settings.name
    linear: bool  # the strip's values are scene-linear light
    from_media: bool  # edit the media file (path mode), not a sequencer render
    codec: str  # what to ask the server for
    output_space: str  # colorspace_settings.name for the result strip
    note: str


def _names(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return [n.strip().strip("\"'") for n in value[1:-1].split(",") if n.strip()]
    return [value.strip("\"'")]


def linear_spaces(config_text: str) -> frozenset[str]:
    """Names and aliases of the scene-linear colour spaces of an OCIO config (a line scan: no YAML library)."""
    found: set[str] = set()
    starts = [m.start() for m in _BLOCK.finditer(config_text)] + [len(config_text)]
    for begin, end in itertools.pairwise(starts):
        fields: dict[str, str] = {}
        for key, value in _FIELD.findall(config_text[begin:end]):
            fields.setdefault(key, value)
        if "name" not in fields or fields.get("isdata", "false").lower() == "true":
            continue
        names = _names(fields["name"]) + (_names(fields["aliases"]) if "aliases" in fields else [])
        linear = (
            fields.get("encoding") == "scene-linear"
            or fields.get("family", "").split("/")[0].strip() == "Linear"
            or any(n.lower().startswith("lin_") for n in names)
        )
        if linear:
            found.update(names)
    return frozenset(found)


def blender_ocio_config() -> Path | None:
    """The OCIO config this Blender uses: ``$OCIO``, else the one in its datafiles."""
    if os.environ.get("OCIO"):
        return Path(os.environ["OCIO"])
    import bpy  # only here: the pure functions above run without Blender

    folder = bpy.utils.system_resource("DATAFILES", path="colormanagement")
    return Path(folder) / "config.ocio" if folder else None


def known_linear_spaces(config: Path | None = None) -> frozenset[str]:
    """Scene-linear space names of ``config`` (default: Blender's own), or a fixed list if it cannot be read."""
    try:
        path = config or blender_ocio_config()
        spaces = linear_spaces(path.read_text()) if path else frozenset()
    except OSError:
        spaces = frozenset()
    return spaces or LINEAR_FALLBACK


def plan_colour(
    source_space: str, sequencer_space: str, media_path: str | None, linear_names: frozenset[str], codec: str
) -> ColourPlan:
    """Decide for a strip in ``source_space`` whose media is ``media_path`` (None: no media, render it)."""
    linear = source_space in linear_names
    if media_path is None:
        note = f"no media: rendered through the sequencer ({sequencer_space}) onto the sRGB display; the result is sRGB"
        return ColourPlan(source_space, sequencer_space, False, False, codec, DISPLAY_SPACE, note)
    if Path(media_path).suffix.lower() == ".exr":
        note = "EXR plate: edited from its files and written back as EXR with its own values, tagged as the source"
        return ColourPlan(source_space, sequencer_space, linear, True, "exr", source_space, note)
    if linear:
        note = (
            f"{source_space} media that is not EXR: the server reads its code values as display-referred; the "
            "result keeps the same encoding and tag, so it shows like the source"
        )
    else:
        note = f"display-referred media ({source_space}): the result keeps its code values and tag"
    return ColourPlan(source_space, sequencer_space, linear, True, codec, source_space, note)


def colour_plan(scene: Any, strip: Any, media_path: str | None, codec: str = "ffv1") -> ColourPlan:
    """Read the strip's and the sequencer's colour spaces (main thread) and decide."""
    settings = getattr(strip, "colorspace_settings", None)
    source = settings.name if settings is not None else DISPLAY_SPACE
    sequencer = scene.sequencer_colorspace_settings.name
    return plan_colour(source, sequencer, media_path, known_linear_spaces(), codec)


def tag_strip(strip: Any, plan: ColourPlan) -> bool:
    """Give the result strip the plan's colour space; False (and the strip unchanged) if Blender refuses it."""
    return tag_space(strip, plan.output_space)


def tag_space(strip: Any, space: str) -> bool:
    """Give ``strip`` the colour space ``space`` (what the placing operator, which gets the plan's output space
    as a property, calls); False (and the strip unchanged) if Blender refuses it."""
    try:
        strip.colorspace_settings.name = space
    except (TypeError, AttributeError):
        return False
    return strip.colorspace_settings.name == space
