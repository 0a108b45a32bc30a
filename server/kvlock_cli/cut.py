"""A cut (an OpenTimelineIO timeline, read through any adapter OTIO has) as the shots ``kvlock batch`` renders.

A shot is a clip carrying a ``KV-Lock`` marker (``cut_markers`` says which and what they carry), or the clip
under a ``KV-Lock`` marker of the timeline itself (Resolve exports its timeline markers there): the clip on
the lowest enabled video track that has media at the marker's first frame. Its range is the marker's — a
marker of at most one frame (a point marker, Resolve's default) stands for the whole clip — and must lie
within the clip. Its matte, in this order: the marker's ``kvlock.matte`` file; the clip on the video track
directly above that covers all of the shot's record range (read at its *own* frames, so a matte clip slipped
against the shot still lines up); ``--matte-pattern``. A shot that cannot be made is a ``ShotProblem`` with
its reason, and the others are made. Times are OpenTimelineIO's rational times (``opentime``); record times
are the timeline's stack time (0 = the timeline's first frame), shown as timecode from its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio

from kvlock.errors import SettingsError
from kvlock.media.timecode import exact_rate
from kvlock.settings import EditSettings
from kvlock_bridge import FileClip

from .cut_markers import is_kvlock, marker_request
from .cut_media import MediaFrames, ShotError, media_frames, media_path, time_effects, url_path

ot = otio.opentime
_MEDIA = (otio.schema.ExternalReference, otio.schema.ImageSequenceReference)


@dataclass(frozen=True)
class CutOptions:
    """What the command line gives every shot; a marker's own values win."""

    prompt: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    model: str = "tiny"
    matte_pattern: str | None = None  # e.g. "{folder}/{stem}_matte.mov"
    rate: Fraction | None = None  # an EDL's rate (the format does not carry one)


@dataclass(frozen=True)
class Shot:
    """One shot to edit: its clip's frames, where it sits in the cut, its matte, prompt and settings."""

    name: str
    track: int  # video track, 1 = the lowest
    record: ot.TimeRange  # stack time of the timeline
    start: ot.RationalTime  # the timeline's start time (its first frame's timecode)
    source: MediaFrames
    matte: FileClip
    prompt: str
    settings: EditSettings
    model: str

    @property
    def frames(self) -> int:
        return self.source.frames

    def where(self) -> str:
        return f"{self.name} on V{self.track}, {describe(self.record, self.start)}"


@dataclass(frozen=True)
class ShotProblem:
    """A marked shot that cannot be rendered, and why."""

    name: str
    where: str
    reason: str


@dataclass(frozen=True)
class Cut:
    path: Path
    timeline: otio.schema.Timeline
    shots: tuple[Shot, ...]
    problems: tuple[ShotProblem, ...]


@dataclass(frozen=True)
class _Mark:
    """A KV-Lock marker resolved to its clip: the clip, its track, and the marked span in record time."""

    clip: otio.schema.Clip
    track: int
    record: ot.TimeRange
    marker: otio.schema.Marker


def timecode(time: ot.RationalTime) -> str:
    """A time as timecode (drop-frame at 29.97 and 59.94, as OpenTimelineIO infers it), else as a frame number
    where SMPTE has no timecode for the rate."""
    try:
        return ot.to_timecode(time, time.rate)
    except ValueError:
        return f"frame {time.to_frames()}"


def describe(span: ot.TimeRange, start: ot.RationalTime) -> str:
    first = start + span.start_time
    last = first + ot.RationalTime(max(span.duration.to_frames(), 1) - 1, span.duration.rate)
    return f"{timecode(first)}–{timecode(last)}"


def read_timeline(path: Path, rate: Fraction | None) -> otio.schema.Timeline:
    """The timeline in ``path`` through the adapter its suffix names (an EDL at ``rate``, 24 if not given)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    adapter = otio.adapters.from_filepath(str(path))
    options = {"rate": float(rate or 24)} if adapter.name == "cmx_3600" else {}
    result = otio.adapters.read_from_file(str(path), **options)
    if not isinstance(result, otio.schema.Timeline):
        raise ValueError(f"{path} holds a {type(result).__name__}, not one timeline")
    return result


def _within(inner: ot.TimeRange, outer: ot.TimeRange) -> bool:
    return outer.start_time <= inner.start_time and inner.end_time_exclusive() <= outer.end_time_exclusive()


def _point(marker: otio.schema.Marker) -> bool:
    return marker.marked_range.duration.to_frames() <= 1


def _clip_marks(timeline: otio.schema.Timeline) -> list[_Mark]:
    """KV-Lock markers on clips; their range is in the clip's media time."""
    marks = []
    for number, track in enumerate(timeline.video_tracks(), 1):
        for clip in (item for item in track if isinstance(item, otio.schema.Clip)):
            for marker in filter(is_kvlock, clip.markers):
                span = clip.trimmed_range() if _point(marker) else marker.marked_range
                record = clip.transformed_time_range(span, timeline.tracks)
                marks.append(_Mark(clip, number, record, marker))
    return marks


def _clip_under(timeline: otio.schema.Timeline, time: ot.RationalTime) -> tuple[int, otio.schema.Clip]:
    """The clip with media on the lowest enabled video track at stack time ``time``."""
    for number, track in enumerate(timeline.video_tracks(), 1):
        for clip in (item for item in track if isinstance(item, otio.schema.Clip)) if track.enabled else ():
            span = clip.transformed_time_range(clip.trimmed_range(), timeline.tracks)
            if span.contains(time) and clip.enabled and isinstance(clip.media_reference, _MEDIA):
                return number, clip
    raise ShotError("no clip with media under the timeline marker")


def _stack_marks(timeline: otio.schema.Timeline) -> tuple[list[_Mark], list[ShotProblem]]:
    """KV-Lock markers on the timeline itself; their range is in the stack's time."""
    marks, problems = [], []
    origin = timeline.tracks.trimmed_range().start_time
    for marker in filter(is_kvlock, timeline.tracks.markers):
        at = ot.TimeRange(marker.marked_range.start_time - origin, marker.marked_range.duration)
        try:
            number, clip = _clip_under(timeline, at.start_time)
        except ShotError as exc:
            problems.append(ShotProblem(marker.name, describe(at, _start(timeline)), str(exc)))
            continue
        record = clip.transformed_time_range(clip.trimmed_range(), timeline.tracks) if _point(marker) else at
        marks.append(_Mark(clip, number, record, marker))
    return marks, problems


def _matte_above(timeline: otio.schema.Timeline, mark: _Mark, folder: Path) -> FileClip | None:
    """The clip on the track directly above covering the whole record range, read at its own frames."""
    tracks = timeline.video_tracks()
    if mark.track >= len(tracks):
        return None
    for item in tracks[mark.track]:
        span = item.transformed_time_range(item.trimmed_range(), timeline.tracks)
        if not isinstance(item, otio.schema.Clip) or not span.intersects(mark.record):
            continue
        if not _within(mark.record, span):
            raise ShotError(f"matte length mismatch: {item.name} on V{mark.track + 1} covers "
                            f"{describe(span, _start(timeline))}, the shot needs "
                            f"{describe(mark.record, _start(timeline))}")  # fmt: skip
        own = timeline.tracks.transformed_time_range(mark.record, item)
        frames = media_frames(item, own, folder)
        return FileClip("Matte", frames.path, frames.start, frames.end)
    return None


def _start(timeline: otio.schema.Timeline) -> ot.RationalTime:
    """The timeline's first frame's time (its start timecode), at the timeline's rate."""
    if timeline.global_start_time is not None:
        return timeline.global_start_time
    clips = list(timeline.find_clips())
    return ot.RationalTime(0, clips[0].trimmed_range().duration.rate if clips else 24)


def _matte(
    timeline: otio.schema.Timeline, mark: _Mark, wanted: str | None, folder: Path, pattern: str | None
) -> FileClip:
    if wanted:
        return FileClip("Matte", url_path(wanted, folder))
    above = _matte_above(timeline, mark, folder)
    if above is not None:
        return above
    if pattern:
        source = Path(media_path(mark.clip, folder))
        return FileClip("Matte", pattern.format(folder=source.parent, stem=source.stem, name=source.name,
                                                suffix=source.suffix))  # fmt: skip
    raise ShotError(f"no matte: nothing on V{mark.track + 1} covers the shot; put a matte clip there, name a matte "
                    "file in the marker's kvlock.matte metadata, or give --matte-pattern")  # fmt: skip


def _shot(timeline: otio.schema.Timeline, mark: _Mark, folder: Path, options: CutOptions) -> Shot:
    request = marker_request(mark.marker)
    if not _within(mark.record, mark.clip.transformed_time_range(mark.clip.trimmed_range(), timeline.tracks)):
        raise ShotError(f"the marker runs past the end of {mark.clip.name}: mark a range within one clip")
    effects = time_effects(mark.clip)
    if effects:
        raise ShotError(f"{mark.clip.name} has a speed change or freeze ({', '.join(effects)}): KV-Lock edits "
                        "the frames as they are; remove it, or render the shot on its own")  # fmt: skip
    source = media_frames(mark.clip, timeline.tracks.transformed_time_range(mark.record, mark.clip), folder)
    if exact_rate(mark.record.duration.rate) != exact_rate(_start(timeline).rate):
        raise ShotError(f"{mark.clip.name} runs at another rate than the timeline: conform it first")
    prompt = request.prompt or options.prompt
    if not prompt:
        raise ShotError("no prompt: write it in the marker's comment (or its kvlock.prompt), or give --prompt")
    try:
        settings = EditSettings(**{**options.settings, **request.settings})
    except (SettingsError, TypeError) as exc:
        raise ShotError(f"refused settings: {exc}") from None
    matte = _matte(timeline, mark, request.matte, folder, options.matte_pattern)
    name = mark.clip.name or Path(source.path).name
    return Shot(name, mark.track, mark.record, _start(timeline), source, matte, prompt, settings,
                request.model or options.model)  # fmt: skip


def read_cut(path: Path, options: CutOptions) -> Cut:
    """Every KV-Lock shot of the timeline in ``path``, in cut order, and the marked shots that cannot be made."""
    timeline = read_timeline(path, options.rate)
    stack_marks, problems = _stack_marks(timeline)
    shots = []
    for mark in _clip_marks(timeline) + stack_marks:
        try:
            shots.append(_shot(timeline, mark, path.parent, options))
        except ShotError as exc:
            problems.append(ShotProblem(mark.clip.name, f"{mark.clip.name} on V{mark.track}, "
                                        f"{describe(mark.record, _start(timeline))}", str(exc)))  # fmt: skip
    shots.sort(key=lambda s: (s.record.start_time.to_seconds(), s.track))
    return Cut(path, timeline, tuple(shots), tuple(problems))
