"""Which frames of which file a clip of an OpenTimelineIO timeline shows.

A clip's ``source_range`` is in its media's own time: the media's first frame is at the start of the
reference's ``available_range`` (a file that starts at 01:00:10:00 has its frame 0 at that time). Where the
timeline gives no available range (an EDL never does), the file's own start timecode is read here, and a
file that has none starts at 0. Times are OpenTimelineIO's rational times throughout (``opentime``); a frame
of the file is the time since its first frame, rescaled to the file's rate.

The file is read here only to learn what a timeline cannot say (its length, rate and timecode); it may
well live on a disk only the server reads, and then the timeline must say where the media starts.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio

from kvlock.errors import MediaError
from kvlock.media.decode import MediaInfo, probe
from kvlock.media.timecode import exact_rate, parse_timecode, timecode_at

ot = otio.opentime


class ShotError(Exception):
    """Why one shot of a cut cannot be rendered; the message says what to fix, and the other shots go on."""


@dataclass(frozen=True)
class MediaFrames:
    """Frames [start, end) of one media file, counted in the file (0 = its first frame)."""

    path: str
    start: int
    end: int
    rate: Fraction
    first: ot.RationalTime  # the first frame's time on the media's own clock, as the timeline has it
    timecode: str  # of the first frame as the file counts it, "" when the file is not readable here
    local: bool  # whether this machine can read the file (else only the server may)
    scene_linear: bool = False  # an EXR plate: it goes by path, and comes back as EXR

    @property
    def frames(self) -> int:
        return self.end - self.start


def url_path(url: str, folder: Path) -> str:
    """A media reference's ``target_url`` as a path: ``file://`` URLs decoded, relative paths from ``folder``
    (the timeline file's own)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return urllib.request.url2pathname(urllib.parse.unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # a drive letter is not a scheme
        raise ShotError(f"the media is at {url}, not a file this machine or the server can read")
    path = Path(url).expanduser()
    return str(path if path.is_absolute() else (folder / path).resolve())


def media_path(clip: otio.schema.Clip, folder: Path) -> str:
    """The file a clip shows: an external file, or the first file of an image sequence."""
    ref = clip.media_reference
    if isinstance(ref, otio.schema.ExternalReference) and ref.target_url:
        return url_path(ref.target_url, folder)
    if isinstance(ref, otio.schema.ImageSequenceReference) and ref.target_url_base:
        return url_path(ref.target_url_for_image_number(0), folder)
    raise ShotError(f"{clip.name or 'the clip'} has no media file (missing media, a generator or a title)")


def _probe(path: str) -> MediaInfo | None:
    if not Path(path).exists():
        return None
    try:
        return probe(path)
    except MediaError as exc:
        raise ShotError(f"cannot read {path}: {exc}") from None


def _origin(clip: otio.schema.Clip, info: MediaInfo | None, rate: float, path: str) -> ot.RationalTime:
    """The time of the file's frame 0 on its own clock."""
    available = clip.media_reference.available_range if clip.media_reference else None
    if available is not None:
        return available.start_time
    if info is None:
        raise ShotError(
            f"cannot tell which frames of {path} the cut uses: the file is not readable here and the timeline "
            "gives no available range for it (run kvlock batch where the media is, or export with media ranges)"
        )
    if info.timecode:
        return ot.RationalTime(parse_timecode(info.timecode, info.rate), rate)
    return ot.RationalTime(0, rate)


def media_frames(clip: otio.schema.Clip, span: ot.TimeRange, folder: Path) -> MediaFrames:
    """The frames of the clip's file that ``span`` (in the clip's media time) covers."""
    path = media_path(clip, folder)
    info = _probe(path)
    rate = exact_rate(span.duration.rate)
    if info is not None and info.kind != "still" and info.rate != rate:
        raise ShotError(
            f"{Path(path).name} is {float(info.rate):g} fps but the cut plays it at {float(rate):g} fps: KV-Lock "
            "edits frames one to one, so conform the clip's rate first"
        )
    origin = _origin(clip, info, float(rate), path)
    start = (span.start_time - origin).rescaled_to(float(rate)).to_frames()
    count = span.duration.rescaled_to(float(rate)).to_frames()
    if start < 0 or (info is not None and start + count > info.frames):
        length = f"[0, {info.frames})" if info is not None else "frames from 0"
        raise ShotError(f"the cut uses frames [{start}, {start + count}) of {Path(path).name}, which has {length}")
    timecode = (timecode_at(info.timecode, info.rate, start) or "") if info is not None else ""
    linear = info is not None and info.transfer == "scene_linear"
    return MediaFrames(path, start, start + count, rate, span.start_time, timecode, info is not None, linear)


def time_effects(clip: otio.schema.Clip) -> list[str]:
    """The clip's speed changes and freezes: a shot with one plays other frames than its source range says."""
    timing = [effect for effect in clip.effects if isinstance(effect, otio.schema.TimeEffect)]
    return [effect.effect_name or type(effect).__name__ for effect in timing]
