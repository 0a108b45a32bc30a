"""Cuts for ``kvlock batch`` tests, built with OpenTimelineIO's own API: shots on V1 (gaps between), matte
clips on V2 slipped against their shots, KV-Lock markers on the shots; and the media they point at."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio

from kvlock.media.encode import write_video
from kvlock.media.timecode import parse_timecode

from .media_helpers import unique_frames

ot = otio.opentime
SIZE = 64
MEDIA_FRAMES = 40


def moving_matte(count: int, size: int = SIZE) -> np.ndarray:
    """A box moving 2 pixels a frame: a matte read at the wrong frames puts the lock's edge elsewhere."""
    matte = np.zeros((count, size, size), np.uint8)
    for index in range(count):
        left = 2 * index % (size // 2)
        matte[index, size // 4 : 3 * size // 4, left : left + size // 3] = 255
    return matte


@dataclass
class Media:
    """One source file and its matte file, and what they hold."""

    source: Path
    matte: Path
    frames: np.ndarray
    mattes: np.ndarray
    rate: Fraction
    timecode: str  # of the files' first frame


def write_media(folder: Path, name: str, rate: Fraction, timecode: str, seed: int = 0) -> Media:
    folder.mkdir(parents=True, exist_ok=True)
    frames, mattes = unique_frames(MEDIA_FRAMES, SIZE, SIZE, seed=seed), moving_matte(MEDIA_FRAMES)
    write_video(folder / f"{name}.mkv", frames, rate, "ffv1", timecode=timecode)
    write_video(folder / f"{name}_matte.mkv", np.repeat(mattes[..., None], 3, -1), rate, "ffv1", timecode=timecode)
    return Media(folder / f"{name}.mkv", folder / f"{name}_matte.mkv", frames, mattes, rate, timecode)


@dataclass
class ShotSpec:
    """A shot: ``length`` frames of ``media`` from its frame ``source_in``, at record frame ``record``."""

    name: str
    media: Media
    record: int
    source_in: int
    length: int
    prompt: str = "a red cube"
    marker: tuple[int, int] | None = None  # (first frame within the clip, frames); None: a point marker
    metadata: dict = field(default_factory=dict)
    matte_slip: int | None = 3  # the matte clip's own first frame is source_in + slip; None: no matte clip
    marker_name: str = "KV-Lock"
    comment: bool = True  # the prompt as the marker's comment (else only where metadata/name carry it)


def _reference(path: Path, media: Media, available: bool) -> otio.schema.ExternalReference:
    rate = float(media.rate)
    start = ot.RationalTime(parse_timecode(media.timecode, media.rate), rate)
    span = ot.TimeRange(start, ot.RationalTime(MEDIA_FRAMES, rate)) if available else None
    return otio.schema.ExternalReference(target_url=path.as_uri(), available_range=span)


def _clip(name: str, path: Path, media: Media, first: int, length: int, available: bool) -> otio.schema.Clip:
    rate = float(media.rate)
    origin = parse_timecode(media.timecode, media.rate)
    span = ot.TimeRange(ot.RationalTime(origin + first, rate), ot.RationalTime(length, rate))
    return otio.schema.Clip(name, _reference(path, media, available), span)


def _append_at(track: otio.schema.Track, item: otio.schema.Item, record: int, rate: float) -> None:
    end = track.duration().to_frames() if len(track) else 0
    if record > end:
        track.append(otio.schema.Gap(duration=ot.RationalTime(record - end, rate)))
    track.append(item)


def build_cut(rate: Fraction, start: str, shots: list[ShotSpec], available: bool = True) -> otio.schema.Timeline:
    """The cut: V1 the shots with their markers, V2 the matte clips (where a shot has one)."""
    fps = float(rate)
    timeline = otio.schema.Timeline("cut", global_start_time=ot.RationalTime(parse_timecode(start, rate), fps))
    v1 = otio.schema.Track("V1", kind=otio.schema.TrackKind.Video)
    v2 = otio.schema.Track("V2", kind=otio.schema.TrackKind.Video)
    for shot in sorted(shots, key=lambda s: s.record):
        clip = _clip(shot.name, shot.media.source, shot.media, shot.source_in, shot.length, available)
        first, count = shot.marker or (0, 0)
        marked = ot.TimeRange(clip.source_range.start_time + ot.RationalTime(first, fps), ot.RationalTime(count, fps))
        marker = otio.schema.Marker(shot.marker_name, marked, otio.schema.MarkerColor.RED, shot.metadata)
        if shot.comment:
            marker.comment = shot.prompt
        clip.markers.append(marker)
        _append_at(v1, clip, shot.record, fps)
        if shot.matte_slip is not None:
            matte = _clip(f"{shot.name}_matte", shot.media.matte, shot.media, shot.source_in + shot.matte_slip,
                          shot.length, available)  # fmt: skip
            _append_at(v2, matte, shot.record, fps)
    timeline.tracks.append(v1)
    timeline.tracks.append(v2)
    return timeline


def record_frames(clip: otio.schema.Item, timeline: otio.schema.Timeline) -> tuple[int, int]:
    """An item's [first, end) record frames, from the timeline's start."""
    span = clip.transformed_time_range(clip.trimmed_range(), timeline.tracks)
    return span.start_time.to_frames(), span.end_time_exclusive().to_frames()
