"""Keeping linear plates linear in Resolve: read how the source clip is interpreted, give the result the same.

What Blackmagic's scripting README (``Developer/Scripting/README.txt``, "Looking up Project and Clip
properties") documents, and this module relies on:

- ``MediaPoolItem.GetClipProperty()`` with no key returns a snapshot dict of every queryable property;
  ``Project.GetSetting(key)`` reads a project setting; "keys and values are designed to be easily correlated
  with parameter names and values in the Resolve UI" (the Clip Attributes and Project Settings dialogs).
- ``MediaPoolItem.SetClipProperty(key, value)`` returns whether it worked ("please check the return value");
  some properties are read only, e.g. colour spaces that an ACES workflow disables.

Not documented, so marked as choices here (the README enumerates none of these keys): the clip keys are the
Clip Attributes labels — "Input Color Space", and "Input Gamma" when the project separates colour space and
gamma; every snapshot key naming a colour space, gamma or input transform is copied, so whatever a Resolve
version calls them travels with it. The project keys ``colorScienceMode`` (e.g. "davinciYRGB",
"davinciYRGBColorManagedv2", "acescct") and ``colorSpaceInput``/``colorSpaceInputGamma`` are the names public
scripts use. A value of "Project" (or empty) means "as the project's input" and needs no copying.

The rule: an EXR plate is sent by path and comes back as EXR (``exr`` codec) holding its own linear values, and
its result clip gets the source clip's colour properties, so Resolve interprets both the same way. Any other
source keeps its code values in a display-referred codec and is tagged the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLOUR_KEY_WORDS = ("color space", "gamma", "input transform", "idt")
AS_PROJECT = {"", "project", "same as project"}
LINEAR_WORDS = ("linear", "acescg", "aces (ap0)", "aces2065")


@dataclass(frozen=True)
class ClipColour:
    """A clip's colour interpretation: the project's mode and the clip's own colour properties (may be empty)."""

    science: str
    project_input: str
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def linear(self) -> bool:
        names = [*self.properties.values(), self.project_input]
        return any(word in v.lower() for v in names for word in LINEAR_WORDS)


@dataclass(frozen=True)
class ColourPlan:
    codec: str
    linear: bool
    tags: dict[str, str]  # SetClipProperty(key, value) for the result
    note: str


def _has(obj: Any, name: str) -> bool:
    return obj is not None and name in dir(obj)  # Resolve objects answer any attribute: only dir() tells


def colour_properties(snapshot: dict[str, Any]) -> dict[str, str]:
    """The colour-interpretation entries of a GetClipProperty() snapshot that differ from 'as the project'."""
    out = {}
    for key, value in (snapshot or {}).items():
        text = str(value).strip()
        if any(word in str(key).lower() for word in COLOUR_KEY_WORDS) and text.lower() not in AS_PROJECT:
            out[str(key)] = text
    return out


def read_clip_colour(project: Any, media_pool_item: Any) -> ClipColour:
    """What Resolve says about the clip (documented calls; undocumented key names, see the module docstring)."""
    science = str(project.GetSetting("colorScienceMode") or "") if _has(project, "GetSetting") else ""
    project_input = str(project.GetSetting("colorSpaceInput") or "") if _has(project, "GetSetting") else ""
    gamma = str(project.GetSetting("colorSpaceInputGamma") or "") if _has(project, "GetSetting") else ""
    snapshot = media_pool_item.GetClipProperty() if _has(media_pool_item, "GetClipProperty") else {}
    joined = " ".join(p for p in (project_input, gamma) if p)
    return ClipColour(science, joined, colour_properties(snapshot if isinstance(snapshot, dict) else {}))


def plan_colour(source_path: str, clip: ClipColour, codec: str = "ffv1") -> ColourPlan:
    """What to ask the server for and which colour properties the result clip needs."""
    if Path(source_path).suffix.lower() == ".exr":  # assumed: a sequence's "File Path" ends in .exr too
        return ColourPlan("exr", True, dict(clip.properties), "EXR plate: written back as EXR, tagged as the source")
    note = "display-referred source: the result keeps its code values" + (
        " and the source's colour properties" if clip.properties else ""
    )
    return ColourPlan(codec, clip.linear, dict(clip.properties), note)


def tag_result(media_pool_item: Any, plan: ColourPlan) -> list[str]:
    """Give the imported result the plan's colour properties; return what Resolve refused (empty: all set)."""
    refused = []
    for key, value in plan.tags.items():
        ok = media_pool_item.SetClipProperty(key, value) if _has(media_pool_item, "SetClipProperty") else False
        if not ok:
            refused.append(f"Resolve refused {key} = {value!r} on the result; set it in Clip Attributes")
    return refused
