"""Everything the script asks DaVinci Resolve, in one place, written to Resolve's documented behaviour:

- timeline frames are absolute (they include the timeline's start timecode);
- a clip's source frame at record frame r is ``left offset + (r − start)``, counted from the media's first
  frame; ``AppendToTimeline``'s ``endFrame`` is exclusive;
- an append that overlaps an item is dropped silently, and a returned item may be unusable, so placement
  uses a free track and is confirmed by re-reading that track;
- Studio-only calls open a modal dialog on Free, so the product is checked first and none is used;
- members are tested with ``dir(obj)``, never ``hasattr`` (Resolve objects answer any attribute).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

KVLOCK_BIN = "KV-Lock"


class HostError(Exception):
    """Something in Resolve's state the editor can fix; the message says what."""


@dataclass(frozen=True)
class Shot:
    """The frames to edit: a clip's media file and the source and record ranges that match."""

    name: str
    path: str
    source_start: int  # first media frame (0-based, in the file)
    source_end: int  # exclusive
    record_start: int  # absolute timeline frame
    track: int
    rate: Fraction

    @property
    def frames(self) -> int:
        return self.source_end - self.source_start


@dataclass(frozen=True)
class Placement:
    track: int
    record_start: int
    confirmed: bool
    message: str


def has(obj: Any, name: str) -> bool:
    return obj is not None and name in dir(obj)


def product(resolve: Any) -> tuple[str, bool]:
    """The product name and whether it is Studio."""
    name = resolve.GetProductName() if has(resolve, "GetProductName") else "DaVinci Resolve"
    return name, "Studio" in name


def current_timeline(resolve: Any) -> tuple[Any, Any]:
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise HostError("no project is open: open a project and a timeline first")
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise HostError("the project has no current timeline: open the timeline with the clip to edit")
    return project, timeline


def parse_rate(value: Any) -> Fraction:
    """Resolve writes rates as "23.976", "24" or 29.97 — map the NTSC ones to their exact fractions."""
    rate = Fraction(str(value)).limit_denominator(1001)
    for ntsc in (24, 30, 48, 60, 120):
        if abs(float(rate) - ntsc * 1000 / 1001) < 0.01:
            return Fraction(ntsc * 1000, 1001)
    return rate


def _items_on(timeline: Any, track: int) -> list[Any]:
    return list(timeline.GetItemListInTrack("video", track) or [])


def _item_at(timeline: Any, frame: int) -> tuple[Any, int] | tuple[None, None]:
    """The topmost video item covering ``frame`` and its track."""
    for track in range(int(timeline.GetTrackCount("video")), 0, -1):
        for item in _items_on(timeline, track):
            if item.GetStart() <= frame < item.GetEnd():
                return item, track
    return None, None


def _track_of(timeline: Any, item: Any) -> int:
    for track in range(1, int(timeline.GetTrackCount("video")) + 1):
        if any(i.GetUniqueId() == item.GetUniqueId() for i in _items_on(timeline, track)):
            return track
    raise HostError(f"{item.GetName()} is not on a video track")


def _below(timeline: Any, item: Any, track: int) -> Any:
    """The item on the track directly below ``item`` covering all of it, if any."""
    if track <= 1:
        return None
    for candidate in _items_on(timeline, track - 1):
        if candidate.GetStart() <= item.GetStart() and candidate.GetEnd() >= item.GetEnd():
            return candidate
    return None


def shot_to_edit(timeline: Any, matte_above: bool = False) -> Shot:
    """In/Out marks if both are set (inclusive Out, as the editor sees it), else the clip under the playhead.

    Resolve reports the topmost item at the playhead (and at the In mark), which is the matte itself when
    the matte clip sits on the track above: with ``matte_above``, the clip directly below is the source.
    """
    marks = timeline.GetMarkInOut() if has(timeline, "GetMarkInOut") else {}
    video = (marks or {}).get("video", {})
    if "in" in video and "out" in video:
        start, end = int(video["in"]), int(video["out"]) + 1
        item, track = _item_at(timeline, start)
        if item is None:
            raise HostError(f"no clip at the In mark (frame {start})")
        below = _below(timeline, item, track) if matte_above else None
        if below is not None:
            item, track = below, track - 1
        if end > item.GetEnd():
            raise HostError("the In/Out range spans more than one clip: mark a range within one clip")
    else:
        item = timeline.GetCurrentVideoItem()
        if not item:
            raise HostError("no clip under the playhead: move the playhead onto the clip or set In/Out marks")
        track = _track_of(timeline, item)
        below = _below(timeline, item, track) if matte_above else None
        if below is not None:
            item, track = below, track - 1
        start, end = int(item.GetStart()), int(item.GetEnd())
    media = item.GetMediaPoolItem()
    path = media.GetClipProperty("File Path") if media else ""
    if not path:
        raise HostError(f"{item.GetName()} has no media file (generators and titles cannot be edited)")
    timeline_rate = parse_rate(timeline.GetSetting("timelineFrameRate"))
    clip_rate = parse_rate(media.GetClipProperty("FPS"))
    if clip_rate != timeline_rate:
        raise HostError(
            f"{item.GetName()} is {float(clip_rate):g} fps on a {float(timeline_rate):g} fps timeline: KV-Lock edits "
            "source frames one to one, so the rates must match (conform the clip or use a matching timeline)"
        )
    offset = int(item.GetLeftOffset()) + (start - int(item.GetStart()))
    return Shot(item.GetName(), path, offset, offset + (end - start), start, track, timeline_rate)


def matte_above(timeline: Any, shot: Shot) -> tuple[str, int, int]:
    """A matte clip on the track directly above covering the shot: (file, first media frame, end)."""
    end = shot.record_start + shot.frames
    for item in _items_on(timeline, shot.track + 1):
        if item.GetStart() <= shot.record_start and item.GetEnd() >= end:
            media = item.GetMediaPoolItem()
            path = media.GetClipProperty("File Path") if media else ""
            if path:
                first = int(item.GetLeftOffset()) + (shot.record_start - int(item.GetStart()))
                return path, first, first + shot.frames
        elif item.GetStart() < end and shot.record_start < item.GetEnd():
            raise HostError(
                f"matte length mismatch: {item.GetName()} on track {shot.track + 1} covers frames "
                f"{item.GetStart()}–{item.GetEnd() - 1}, the shot needs {shot.record_start}–{end - 1}"
            )
    raise HostError(f"no matte clip on video track {shot.track + 1} above the shot")


def clip_matte(project: Any, timeline: Any, shot: Shot) -> str:
    """The source clip's first clip matte file (Resolve's Clip Mattes)."""
    item, _ = _item_at(timeline, shot.record_start)
    media = item.GetMediaPoolItem() if item else None
    mattes = project.GetMediaPool().GetClipMatteList(media) if media else []
    if not mattes:
        raise HostError(f"{shot.name} has no clip matte: add one, or use a matte clip above or a file")
    return str(mattes[0])


def _kvlock_bin(media_pool: Any) -> Any:
    root = media_pool.GetRootFolder()
    for folder in root.GetSubFolderList() or []:
        if folder.GetName() == KVLOCK_BIN:
            return folder
    folder = media_pool.AddSubFolder(root, KVLOCK_BIN)
    if not folder:
        raise HostError(f"could not create the {KVLOCK_BIN} bin")
    return folder


def free_track(timeline: Any, above: int, start: int, end: int) -> int:
    """The lowest video track above ``above`` with nothing in [start, end); a new track if none is free."""
    for track in range(above + 1, int(timeline.GetTrackCount("video")) + 1):
        if not any(i.GetStart() < end and start < i.GetEnd() for i in _items_on(timeline, track)):
            return track
    if not timeline.AddTrack("video"):
        raise HostError("no free video track above the shot and Resolve would not add one")
    return int(timeline.GetTrackCount("video"))


def place_result(project: Any, timeline: Any, shot: Shot, result: Path) -> Placement:
    """Import into the KV-Lock bin, append on a free track at the shot's record frame, confirm by re-reading."""
    media_pool = project.GetMediaPool()
    media_pool.SetCurrentFolder(_kvlock_bin(media_pool))
    imported = media_pool.ImportMedia([str(result)])
    if not imported:
        raise HostError(f"Resolve could not import {result}")
    clip = imported[0]
    end = shot.record_start + shot.frames
    track = free_track(timeline, shot.track, shot.record_start, end)
    media_pool.AppendToTimeline(
        [
            {
                "mediaPoolItem": clip,
                "startFrame": 0,
                "endFrame": shot.frames,  # exclusive
                "trackIndex": track,
                "recordFrame": shot.record_start,
                "mediaType": 1,  # video only
            }
        ]
    )
    landed = [
        i
        for i in _items_on(timeline, track)
        if i.GetStart() == shot.record_start and i.GetEnd() == end and i.GetMediaPoolItem() is not None
        and i.GetMediaPoolItem().GetName() == clip.GetName()
    ]  # fmt: skip
    if landed:
        return Placement(track, shot.record_start, True, f"placed on V{track} at frame {shot.record_start}")
    return Placement(
        track,
        shot.record_start,
        False,
        f"Resolve did not place the result on V{track} at frame {shot.record_start}; it is in the "
        f"{KVLOCK_BIN} bin as {clip.GetName()} — drag it to the timeline",
    )
