"""The timeline ``kvlock batch`` writes: the cut as it was read, plus a video track named ``KV-Lock`` on top
holding each result at its shot's record range, so an NLE that imports it shows the edits over the originals.

Each result clip references the result file (a ``file://`` URL) with the source's rate and the source's
own time for its first frame as its available range, so it conforms like the source did; its metadata
names the job, prompt, model and settings (``metadata["kvlock"]``). Shots whose record ranges overlap go on a
second track (``KV-Lock 2``) rather than over each other. A shot of several takes puts take 1 on ``KV-Lock``
and take k on ``KV-Lock take k``, stacked under it in order: the top track shows the first take, and turning
off the tracks above a take shows it — the way editors audition versions stacked on a timeline, in every
NLE the adapters reach. The file is written through the adapter its suffix names, under a temporary name
moved into place, and only when every shot has ended: the input is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import opentimelineio as otio

from kvlock.media.atomic import atomic_path, check_writable

from .cut import Shot

ot = otio.opentime
TRACK = "KV-Lock"
ONE_VIDEO_TRACK = {"cmx_3600"}  # formats that hold a single video track: the results need one of their own


@dataclass(frozen=True)
class Placed:
    """A shot's result as the written timeline shows it."""

    shot: Shot
    job_id: str
    output: Path
    take: int = 1  # 1-based, of ``takes``
    takes: int = 1


def check_output(path: Path, source: Path, overwrite: bool) -> None:
    """Before any work: an adapter writes ``path``'s format, with more than one video track, and it is free."""
    if path.resolve() == source.resolve():
        raise ValueError(f"--out {path} is the cut itself, which is never changed: name another file")
    try:
        adapter = otio.adapters.from_filepath(str(path))
    except otio.exceptions.NoKnownAdapterForExtensionError:
        suffixes = ", ".join(sorted({s for a in otio.adapters.available_adapter_names() for s in _suffixes(a)}))
        raise ValueError(f"no OpenTimelineIO adapter writes {path.suffix or 'files without a suffix'} "
                         f"(it writes {suffixes})") from None  # fmt: skip
    if adapter.name in ONE_VIDEO_TRACK:
        raise ValueError(f"{path.name}: an EDL holds one video track and the results need their own; write "
                         ".otio or an FCP 7 .xml")  # fmt: skip
    check_writable(path, overwrite)


def _suffixes(adapter_name: str) -> list[str]:
    return [f".{s}" for s in otio.plugins.ActiveManifest().from_name(adapter_name).suffixes]


def result_clip(placed: Placed) -> otio.schema.Clip:
    shot = placed.shot
    rate = float(shot.source.rate)
    available = ot.TimeRange(shot.source.first, ot.RationalTime(shot.frames, rate))
    reference = otio.schema.ExternalReference(target_url=placed.output.resolve().as_uri(), available_range=available)
    settings = {k: v for k, v in shot.settings.to_dict().items() if v is not None}
    metadata = {"kvlock": {"job_id": placed.job_id, "prompt": shot.prompt, "model": shot.model,
                           "settings": settings, "source": shot.source.path,
                           "source_frames": [shot.source.start, shot.source.end],
                           "take": placed.take, "takes": placed.takes}}  # fmt: skip
    label = f"KV-Lock take {placed.take}" if placed.takes > 1 else "KV-Lock"
    return otio.schema.Clip(f"{shot.name} ({label})", reference, available, metadata)


def _track_name(take: int, index: int) -> str:
    """``KV-Lock``, ``KV-Lock 2`` … for take 1; ``KV-Lock take 2``, ``KV-Lock take 2 (2)`` … for the others."""
    base = TRACK if take == 1 else f"{TRACK} take {take}"
    if index == 0:
        return base
    return f"{base} {index + 1}" if take == 1 else f"{base} ({index + 1})"


def _place(tracks: list[otio.schema.Track], take: int, clip: otio.schema.Clip, record: ot.TimeRange) -> None:
    """Append ``clip`` at ``record`` on the first of ``take``'s tracks free there (a new one if none is)."""
    for track in tracks:
        end = track.duration() if len(track) else ot.RationalTime(0, record.start_time.rate)
        if end <= record.start_time:
            break
    else:
        track = otio.schema.Track(_track_name(take, len(tracks)), kind=otio.schema.TrackKind.Video)
        tracks.append(track)
    gap = record.start_time - (track.duration() if len(track) else ot.RationalTime(0, record.start_time.rate))
    if gap.to_frames() > 0:
        track.append(otio.schema.Gap(duration=gap))
    track.append(clip)


def with_results(timeline: otio.schema.Timeline, placed: list[Placed]) -> otio.schema.Timeline:
    """A copy of ``timeline`` with the results on ``KV-Lock`` tracks above everything: take 1's on top, the
    other takes' under it, the last take lowest."""
    out = timeline.deepcopy()
    takes: dict[int, list[otio.schema.Track]] = {1: []}
    for item in sorted(placed, key=lambda p: (p.take, p.shot.record.start_time.to_seconds())):
        _place(takes.setdefault(item.take, []), item.take, result_clip(item), item.shot.record)
    for take in sorted(takes, reverse=True):
        for track in takes[take] or [otio.schema.Track(TRACK, kind=otio.schema.TrackKind.Video)]:
            out.tracks.append(track)
    return out


def write_timeline(timeline: otio.schema.Timeline, path: Path, overwrite: bool) -> None:
    with atomic_path(path, overwrite) as temp:
        otio.adapters.write_to_file(timeline, str(temp))
