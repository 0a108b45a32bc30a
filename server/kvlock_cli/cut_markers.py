"""What a ``KV-Lock`` marker of a timeline asks for: which markers count, the prompt, settings, model and matte.

Markers travel differently through each interchange format, so each is read where it arrives:

- the name ``KV-Lock`` (any case: the CMX 3600 adapter writes locator text in capitals), or a name that
  begins ``KV-Lock:`` with the prompt after the colon (an EDL locator is a single line of text);
- the prompt: the marker's ``comment`` (OpenTimelineIO's field for a marker's text), else
  ``metadata["kvlock"]["prompt"]``, else the FCP 7 XML ``<comment>`` (which the adapter keeps as
  ``metadata["fcp_xml"]["comment"]``), else the text after ``KV-Lock:``, else ``--prompt``;
- ``metadata["kvlock"]``: ``settings`` (EditSettings field names and values, over the command line's),
  ``model`` and ``matte`` (a matte file, relative to the timeline's folder, frame for frame with the source).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import opentimelineio as otio

from .cut_media import ShotError

NAME = "KV-Lock"
NAMESPACE = "kvlock"
KNOWN = {"prompt", "settings", "model", "matte"}


def plain(value: Any) -> Any:
    """OpenTimelineIO's metadata containers (AnyDictionary, AnyVector) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "AnyVector":
        return [plain(v) for v in value]
    return value


def is_kvlock(marker: otio.schema.Marker) -> bool:
    name = (marker.name or "").strip().casefold()
    return name == NAME.casefold() or name.startswith(NAME.casefold() + ":")


@dataclass(frozen=True)
class MarkerRequest:
    """What one marker asks for (unset: the command line's)."""

    prompt: str
    settings: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    matte: str | None = None


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ShotError(f"the marker's {what} must be text, not {value!r}")
    return value.strip() or None


def _prompt(marker: otio.schema.Marker, ours: dict[str, Any]) -> str:
    fcp = plain(marker.metadata.get("fcp_xml", {}))
    after_colon = (marker.name or "").strip()[len(NAME) + 1 :] if ":" in (marker.name or "") else ""
    for candidate, what in (
        (getattr(marker, "comment", ""), "comment"),
        (ours.get("prompt"), "kvlock.prompt"),
        (fcp.get("comment") if isinstance(fcp, dict) else None, "comment"),
        (after_colon, "name"),
    ):
        text = _text(candidate, what)
        if text:
            return text
    return ""


def marker_request(marker: otio.schema.Marker) -> MarkerRequest:
    """The marker's prompt and ``kvlock`` metadata, checked for shape (the settings' values are the engine's
    to judge)."""
    ours = plain(marker.metadata.get(NAMESPACE, {}))
    if not isinstance(ours, dict):
        raise ShotError(f"the marker's metadata {NAMESPACE!r} must be a table, not {ours!r}")
    unknown = sorted(set(ours) - KNOWN)
    if unknown:
        raise ShotError(f"the marker's {NAMESPACE} metadata has unknown keys {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(KNOWN))})")  # fmt: skip
    settings = ours.get("settings", {})
    if not isinstance(settings, dict):
        raise ShotError(f"the marker's {NAMESPACE}.settings must be a table of setting names and values")
    return MarkerRequest(_prompt(marker, ours), settings, _text(ours.get("model"), "model"),
                         _text(ours.get("matte"), "matte"))  # fmt: skip
