"""Resolve's timeline markers, for "Render all KV-Lock markers": every marker call the script makes, in one
place, written to Blackmagic's scripting README (18.5 to 21.x) and checked at run time where it is silent.

Documented, and relied on (Timeline):

- ``GetMarkers()`` returns ``{frameId: {color, duration, note, name, customData}}`` (the README's example:
  ``{96.0: {'color': 'Green', 'duration': 1.0, 'note': '', 'name': 'Marker 1', 'customData': ''}}``: keys
  and durations arrive as floats);
- ``UpdateMarkerCustomData(frameId, customData)``: data "not exposed via UI", for scripts; the result's job
  and file are written there, so a pipeline (or the next run) can tell which result belongs to which marker;
- ``GetStartFrame()``/``GetEndFrame()``: the timeline's frames, start timecode included.

Not documented, so decided at run time: whether a frameId counts from the timeline's start (the README's
example calls 96 a "timeline offset") or includes the start timecode (as an item's ``GetStart`` does). A
KV-Lock marker must sit on a clip with media inside the timeline, so both readings are tried: the one under
which every KV-Lock marker does wins; when both do (a timeline longer than its start frame number), the
offset reading — the README's word — with a note; when neither does, the window says which markers are off.

A marker named ``KV-Lock`` (or ``KV-Lock: a prompt``) marks a shot: the prompt is its note (else the text
after the colon, else the window's prompt), its range its duration, and a marker of one frame (Resolve's
default when you press M) stands for the whole clip under it: the lowest enabled video track with media.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kvlock.media.timecode import format_timecode

from .host import HostError, Shot, _int, _span, has, media_under, shot_of, timeline_rate

NAME = "KV-Lock"
READINGS = ("offset", "absolute")


@dataclass(frozen=True)
class MarkedShot:
    """A KV-Lock marker as a shot to render."""

    shot: Shot
    prompt: str
    frame_id: Any  # the key Resolve gave the marker (UpdateMarkerCustomData takes it back)
    custom: dict[str, Any] = field(default_factory=dict)  # what an earlier run recorded in its customData


@dataclass(frozen=True)
class Markers:
    shots: list[MarkedShot]
    problems: list[str]  # markers that cannot be rendered, each with its reason
    notes: list[str]


def is_kvlock(info: dict[str, Any]) -> bool:
    name = str(info.get("name") or "").strip().casefold()
    return name == NAME.casefold() or name.startswith(NAME.casefold() + ":")


def _kvlock_markers(timeline: Any) -> list[tuple[Any, int, int, dict[str, Any]]]:
    """(key, frameId, duration, info) of the KV-Lock markers, by position."""
    if not has(timeline, "GetMarkers"):
        raise HostError("this Resolve does not report timeline markers to scripts")
    markers = timeline.GetMarkers()
    markers = markers if isinstance(markers, dict) else {}
    found = []
    for key, info in markers.items():
        if isinstance(info, dict) and is_kvlock(info):
            found.append(
                (key, _int(key, "a marker's frame"), max(_int(info.get("duration", 1), "its duration"), 1), info)
            )
    return sorted(found, key=lambda m: m[1])


def _lands(timeline: Any, frame: int, bounds: tuple[int, int]) -> bool:
    if not bounds[0] <= frame <= bounds[1]:  # whether GetEndFrame is the last frame or one past it: either
        return False
    try:
        media_under(timeline, frame, "")
    except HostError:
        return False
    return True


def marker_origin(timeline: Any, frames: list[int]) -> tuple[int, list[str]]:
    """What to add to a marker's frameId for its timeline frame, and a note when it could not be told: the
    reading under which more KV-Lock markers land on a clip with media (the others are then reported one
    by one); a tie on a timeline that does not start at frame 0, the offset reading, said."""
    start = _int(timeline.GetStartFrame(), "the timeline's start frame")
    end = _int(timeline.GetEndFrame(), "the timeline's end frame") if has(timeline, "GetEndFrame") else 2**62
    landed = {reading: sum(_lands(timeline, f + (start if reading == "offset" else 0), (start, end)) for f in frames)
              for reading in READINGS}  # fmt: skip
    if not any(landed.values()):
        where = ", ".join(str(f) for f in frames)
        raise HostError(f"the KV-Lock markers at {where} lie on no clip with media under either reading of "
                        "Resolve's marker positions: put each over the clip to edit")  # fmt: skip
    if landed["offset"] == landed["absolute"] and start:
        return start, ["marker positions read as offsets from the timeline's start (the README's reading); "
                       "either reading finds clips on this timeline"]  # fmt: skip
    return (start if landed["offset"] >= landed["absolute"] else 0), []


def _prompt(info: dict[str, Any], default: str) -> str:
    note = str(info.get("note") or "").strip()
    name = str(info.get("name") or "").strip()
    return note or (name[len(NAME) + 1 :].strip() if ":" in name else "") or default


def _custom(info: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(info.get("customData") or "{}")
    except (TypeError, ValueError):
        return {}
    return data.get("kvlock", {}) if isinstance(data, dict) and isinstance(data.get("kvlock"), dict) else {}


def _marked(timeline: Any, frame: int, duration: int, rate: Any) -> Shot:
    try:
        track, item = media_under(timeline, frame, "")[0]
    except HostError:
        raise HostError("no clip with media under it: move the marker over the clip to edit") from None
    item_start, item_end = _span(item)
    span = (item_start, item_end) if duration <= 1 else (frame, frame + duration)
    if span[1] > item_end:
        raise HostError(f"the marker runs past the end of {item.GetName()}: shorten it to end within the clip")
    return shot_of(item, track, span, rate, ())


def kvlock_markers(timeline: Any, default_prompt: str) -> Markers:
    """Every KV-Lock marker of the timeline as a shot, in timeline order; those that cannot be, with why."""
    found = _kvlock_markers(timeline)
    if not found:
        return Markers([], [], [])
    origin, notes = marker_origin(timeline, [frame for _, frame, _, _ in found])
    rate = timeline_rate(timeline)
    shots, problems = [], []
    for key, frame, duration, info in found:
        at = origin + frame
        try:
            prompt = _prompt(info, default_prompt)
            if not prompt:
                raise HostError("it has no prompt: write one in the marker's note, or in the window")
            shots.append(MarkedShot(_marked(timeline, at, duration, rate), prompt, key, _custom(info)))
        except HostError as exc:
            problems.append(f"the marker at {format_timecode(at, *rate)}: {exc}")
    return Markers(shots, problems, notes)


def record_result(timeline: Any, marked: MarkedShot, job_id: str, outputs: list[str]) -> bool:
    """Write the marker's result — its first take's file, and every take's — into its customData (whether
    Resolve took it)."""
    if not has(timeline, "UpdateMarkerCustomData"):
        return False
    data = json.dumps({"kvlock": {"job": job_id, "result": outputs[0], "takes": outputs}})
    return bool(timeline.UpdateMarkerCustomData(marked.frame_id, data))
