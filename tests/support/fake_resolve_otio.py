"""The fake Resolve's OpenTimelineIO export and import (``Timeline.Export(path, resolve.EXPORT_OTIO,
resolve.EXPORT_NONE)`` and ``MediaPool.ImportTimelineFromFile``), written with OpenTimelineIO's own API.

What Resolve puts in an OTIO file is UNDOCUMENTED (fake_resolve.py's header says so), so this writes the
timeline in OTIO's documented model and nothing Resolve-specific: the timeline's start frame as
``global_start_time``; one video track per Resolve track, items at their record frames with gaps between;
a clip's media as an ExternalReference to its file (a plain path: UNDOCUMENTED) whose available range
starts at the file's own first-frame timecode, and its source range from its left offset; a title or
generator as a clip with a GeneratorReference; timeline markers on the timeline's stack, at their offset
from the timeline's start, the note as the marker's comment. Import reads the same model back; a clip whose
file is missing is left out (UNDOCUMENTED: Resolve would make it an offline clip).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio

from kvlock.media.timecode import exact_rate, parse_timecode

from . import fake_resolve as fr

ot = otio.opentime


def _clip(item: fr.TimelineItem, rate: float) -> otio.schema.Clip:
    media, length = item._media, item._end - item._start
    if media is None:
        span = ot.TimeRange(ot.RationalTime(0, rate), ot.RationalTime(length, rate))
        return otio.schema.Clip(item._name, otio.schema.GeneratorReference(item._name, "title"), span)
    origin = parse_timecode(media.timecode, Fraction(rate).limit_denominator(1001)) if media.timecode else 0
    available = ot.TimeRange(ot.RationalTime(origin, rate), ot.RationalTime(media.frames, rate))
    reference = otio.schema.ExternalReference(target_url=media._path, available_range=available)
    span = ot.TimeRange(ot.RationalTime(origin + item._left, rate), ot.RationalTime(length, rate))
    return otio.schema.Clip(item._name, reference, span)


def export_otio(timeline: fr.Timeline, path: Path) -> bool:
    rate, start = float(timeline._rate), timeline._start_frame
    out = otio.schema.Timeline(timeline._name, global_start_time=ot.RationalTime(start, rate))
    for number in range(1, len(timeline._tracks) + 1):
        track, end = otio.schema.Track(f"Video {number}", kind=otio.schema.TrackKind.Video), start
        for item in timeline.items(number):
            if item._start > end:
                track.append(otio.schema.Gap(duration=ot.RationalTime(item._start - end, rate)))
            track.append(_clip(item, rate))
            end = item._end
        out.tracks.append(track)
    offset = 0 if timeline._api.marker_frames == "offset" else start
    for key, info in sorted(timeline._markers.items()):
        span = ot.TimeRange(ot.RationalTime(key - offset, rate), ot.RationalTime(info["duration"], rate))
        marker = otio.schema.Marker(info["name"], span, str(info["color"]).upper())
        marker.comment = info["note"]
        out.tracks.markers.append(marker)
    otio.adapters.write_to_file(out, str(path))
    return True


def _media_path(clip: otio.schema.Clip) -> str | None:
    reference = clip.media_reference
    if not isinstance(reference, otio.schema.ExternalReference):
        return None
    url = reference.target_url
    return otio.url_utils.filepath_from_url(url) if url.startswith("file:") else url


def import_otio(api: fr.Api, pool: fr.MediaPool, path: Path, options: dict[str, Any]) -> fr.Timeline | None:
    timeline = otio.adapters.read_from_file(str(path))
    tracks = timeline.video_tracks()
    rate = exact_rate(timeline.global_start_time.rate)
    start = timeline.global_start_time.to_frames()
    drop = rate.denominator == 1001 and round(rate) in (30, 60)  # OTIO counts these drop-frame
    made = fr.Timeline(api, options.get("timelineName") or path.stem, start, rate, drop, tracks=len(tracks))
    items: dict[str, fr.MediaPoolItem] = {}
    for number, track in enumerate(tracks, 1):
        for clip in (c for c in track if isinstance(c, otio.schema.Clip)):
            file = _media_path(clip)
            if file is None or not Path(file).exists():
                continue
            if file not in items:
                imported = pool.ImportMedia([file]) if options.get("importSourceClips", True) else []
                items[file] = imported[0] if imported else fr.MediaPoolItem(api, file)
            span = clip.transformed_time_range(clip.trimmed_range(), timeline.tracks)
            available = clip.media_reference.available_range
            origin = available.start_time if available is not None else ot.RationalTime(0, span.start_time.rate)
            record = start + span.start_time.to_frames()
            left = (clip.source_range.start_time - origin).to_frames()
            made.put(number, items[file], record, record + span.duration.to_frames(), left, clip.name)
    for marker in timeline.tracks.markers:
        at, length = marker.marked_range.start_time.to_frames(), marker.marked_range.duration.to_frames()
        made.marker(start + at, marker.name, marker.comment, max(length, 1), str(marker.color).title())
    return made
