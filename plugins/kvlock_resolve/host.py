"""Everything the script asks DaVinci Resolve, in one place, written to Blackmagic's scripting README
(Developer/Scripting/README.txt, 18.5 to 21.x) and robust where the README is silent.

Documented, and relied on:

- item ``GetStart``/``GetEnd`` and clipInfo ``recordFrame`` are timeline frames that include the start
  timecode; ``Timeline.GetMarkInOut()`` (from 19.1) is relative to the timeline start (its example
  ``{'video': {'in': 0, 'out': 134}}``; the 21.x type stub: "Record frame relative to timeline start"),
  so ``GetStartFrame()`` is added; keys are omitted when a mark is not set;
- ``GetSetting("timelineFrameRate")`` is "24", "23.976" or "29.97 DF" ("DF" appended for drop frame);
- ``AppendToTimeline([{clipInfo}])`` takes mediaPoolItem, startFrame, endFrame, mediaType (1 = video
  only), trackIndex (1-based) and recordFrame, and returns the appended items; ``DeleteClips`` removes
  items; there is no call that moves an item;
- Studio-only calls on Free "return with a False status" — none is used here;
- ``ImportMedia([{"FilePath": "file_%03d.dpx", "StartIndex": 1, "EndIndex": 100}])`` imports an image
  sequence as one clip, which Resolve names "file_[001-100].dpx";
- takes (18.5 and later): ``TimelineItem.AddTake(mediaPoolItem)`` "Initializes a take selector for the timeline
  item if needed" and adds "the full clip extents" by default; ``GetTakesCount``, ``GetTakeByIndex`` (keys
  "startFrame", "endFrame", "mediaPoolItem"), ``SelectTakeByIndex``, ``GetSelectedTakeIndex`` (1-based).

Not documented, so handled both ways or checked at run time:

- whether ``endFrame`` is inclusive (Blackmagic's example 7 appends "the first 24 frames" with 0..23) or
  exclusive (reported by others): the exclusive reading is tried first — for a file exactly as long as
  the shot it can only place the right length or nothing — then the inclusive one; every placement is
  checked by re-reading the track (returned items can be on no track), and a wrong one is deleted;
- an append that overlaps an item is dropped, so the result goes on a free, unlocked track;
- the Out mark is taken as inclusive, as the editor sees it; one frame past the clip's end is read as
  the clip's end (the exclusive reading of a whole-clip mark);
- which item ``GetCurrentVideoItem`` reports when clips are stacked: it is not used; the playhead's
  timecode (``GetCurrentTimecode``, drop-frame counted) picks the frame and the rules below the item;
- whether the timecode's last separator is ";" on drop-frame timelines: the rate setting decides;
- a clip's "FPS" property arrives as a number or a string; both are read;
- an image sequence's "File Path" may come in the bracketed form of its name: it is turned into the
  sequence's first file (``media_file``);
- Resolve answers *any* attribute (``hasattr`` is always true; an unknown name is ``None``), so members
  are tested with ``dir(obj)`` and every exception a call raises becomes a message in the caller;
- which index a take gets and which is selected after ``AddTake``: the takes are found by their media pool
  items (``GetTakeByIndex``) and take 1 is selected by its index; a refused or missing call leaves the
  other takes in the KV-Lock bin, said so.

Which clip is the source: the frame is the In mark (with both marks set) or the playhead; of the items on
enabled video tracks under it that have a media file, the one the editor selected (when Resolve reports
the timeline selection, 21.x) if exactly one is, else the one on the lowest track — a matte, title or
adjustment clip above the shot is never taken for it.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from kvlock.media.timecode import format_timecode, parse_timecode

KVLOCK_BIN = "KV-Lock"
NTSC = (24, 30, 48, 60, 120)
UI_GONE_ON_FREE = (19, 1)  # from 19.1, Resolve Free shows no UIManager window for third-party scripts
READINGS = (("exclusive", 0), ("inclusive", 1))  # endFrame = frames − this
SEQUENCE_RANGE = re.compile(r"\[(\d+)-(\d+)\]")  # "file_[001-100].dpx", as Resolve names a sequence
FRAME_FILE = re.compile(r"(.*?)(\d+)(\.[A-Za-z]+)")  # name.1004.exr: the number is the last digits before the suffix


class HostError(Exception):
    """Something in Resolve's state the editor can fix; the message says what."""


@dataclass(frozen=True)
class Product:
    """Which Resolve this is, from ``GetProductName`` and ``GetVersion``/``GetVersionString``."""

    name: str
    version: tuple[int, ...]  # () when Resolve did not say
    studio: bool

    @property
    def label(self) -> str:
        number = ".".join(str(v) for v in self.version)
        return f"{self.name} {number}".strip() + f" ({'Studio' if self.studio else 'Free'})"

    @property
    def dialogs(self) -> bool:
        """Whether UIManager windows show: Studio always, Free only before 19.1 (unknown version: no)."""
        return self.studio or (bool(self.version) and self.version[:2] < UI_GONE_ON_FREE)


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
    drop_frame: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def frames(self) -> int:
        return self.source_end - self.source_start

    def timecode(self, frame: int) -> str:
        return format_timecode(frame, self.rate, self.drop_frame)


@dataclass(frozen=True)
class Placement:
    track: int
    record_start: int
    confirmed: bool
    message: str
    item: Any = None  # the timeline item placed, once the track shows it where it belongs


def has(obj: Any, name: str) -> bool:
    return obj is not None and name in dir(obj)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HostError(f"Resolve gave {value!r} for {what}, not a frame number")
    return round(value)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def product(resolve: Any) -> Product:
    name = _text(resolve.GetProductName()) if has(resolve, "GetProductName") else ""
    version: tuple[int, ...] = ()
    fields_ = resolve.GetVersion() if has(resolve, "GetVersion") else None  # [major, minor, patch, build, suffix]
    if isinstance(fields_, (list, tuple)):
        version = tuple(int(v) for v in fields_[:4] if isinstance(v, int) and not isinstance(v, bool))
    if not version and has(resolve, "GetVersionString"):  # "major.minor.patch[suffix].build"
        version = tuple(int(v) for v in re.findall(r"\d+", _text(resolve.GetVersionString()))[:4])
    name = name or "DaVinci Resolve"
    return Product(name, version, "Studio" in name)


def current_timeline(resolve: Any) -> tuple[Any, Any]:
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise HostError("no project is open: open a project and a timeline first")
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise HostError("the project has no current timeline: open the timeline with the clip to edit")
    return project, timeline


def parse_rate(value: Any) -> tuple[Fraction, bool]:
    """A rate as Resolve writes it — 24, "23.976", 29.97, "29.97 DF" — as an exact fraction, and drop frame."""
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    number = re.match(r"^\d+(?:\.\d+)?", text)
    if not number or float(number.group()) <= 0:
        raise HostError(f"Resolve reported the frame rate as {value!r}, which is not a frame rate")
    rate = Fraction(number.group()).limit_denominator(1001)
    for ntsc in NTSC:
        if abs(float(rate) - ntsc * 1000 / 1001) < 0.01:
            rate = Fraction(ntsc * 1000, 1001)
    drop = bool(re.search(r"\bDF\b", text[number.end() :].upper())) and rate.denominator == 1001
    return rate, drop


def timeline_rate(timeline: Any) -> tuple[Fraction, bool]:
    return parse_rate(timeline.GetSetting("timelineFrameRate"))


def _timecode_frame(text: str, rate: Fraction, drop: bool) -> int:
    """Frame number of a timecode Resolve wrote, counted drop-frame when the timeline is (whatever its separator)."""
    normal = re.sub(r"[:;.,](\d+)$", (";" if drop else ":") + r"\1", text.strip())
    try:
        return parse_timecode(normal, rate)
    except ValueError:
        raise HostError(f"Resolve reported the timecode {text!r}, not a timecode at {float(rate):g} fps") from None


def playhead_frame(timeline: Any, rate: Fraction, drop: bool) -> int | None:
    """The playhead's timeline frame, or None where Resolve does not report it (pages other than Cut, Edit,
    Color, Fairlight and Deliver). Counted from the start timecode, so it matches ``GetStart``'s frames."""
    current = _text(timeline.GetCurrentTimecode()) if has(timeline, "GetCurrentTimecode") else ""
    if not current:
        return None
    frame = _timecode_frame(current, rate, drop)
    start = _text(timeline.GetStartTimecode()) if has(timeline, "GetStartTimecode") else ""
    if start:
        return _int(timeline.GetStartFrame(), "the timeline's start frame") + frame - _timecode_frame(start, rate, drop)
    return frame


def marked_range(timeline: Any) -> tuple[tuple[int, int] | None, list[str]]:
    """[In, Out] as absolute frames, end exclusive, or None; and notes for the editor."""
    if not has(timeline, "GetMarkInOut"):
        return None, ["this Resolve cannot report In/Out marks to scripts (19.1 and later can): editing the "
                      "whole clip under the playhead"]  # fmt: skip
    marks = timeline.GetMarkInOut()
    marks = marks if isinstance(marks, dict) else {}
    video = marks.get("video") or marks.get("audio") or {}
    video = video if isinstance(video, dict) else {}
    if "in" not in video and "out" not in video:
        return None, []
    if "in" not in video or "out" not in video:
        missing = "In" if "in" not in video else "Out"
        raise HostError(f"only one mark is set: set the {missing} mark too, or clear the marks (Alt+X) to edit "
                        "the clip under the playhead")  # fmt: skip
    origin = _int(timeline.GetStartFrame(), "the timeline's start frame")
    first = origin + _int(video["in"], "the In mark")
    last = origin + _int(video["out"], "the Out mark")
    if last < first:
        raise HostError("the Out mark is before the In mark: set them again")
    return (first, last + 1), []


def _track_count(timeline: Any) -> int:
    return _int(timeline.GetTrackCount("video"), "the number of video tracks")


def _items_on(timeline: Any, track: int) -> list[Any]:
    items = timeline.GetItemListInTrack("video", track)
    return [i for i in items if i] if isinstance(items, (list, tuple)) else []


def _span(item: Any) -> tuple[int, int]:
    return _int(item.GetStart(), f"{item.GetName()}'s start"), _int(item.GetEnd(), f"{item.GetName()}'s end")


def _uid(item: Any) -> str:
    return _text(item.GetUniqueId()) if has(item, "GetUniqueId") else ""


def _track_flag(timeline: Any, call: str, track: int, default: bool) -> bool:
    return bool(getattr(timeline, call)("video", track)) if has(timeline, call) else default


def media_file(path: str) -> str:
    """A path the server can read for what Resolve calls ``path``.

    Resolve names an image sequence by its frame range, ``plate.[1001-1100].exr`` (the README's ImportMedia
    example: "file_%03d.dpx" 1..100 "would import clip file_[001-100].dpx"; that "File Path" has the same
    form is UNDOCUMENTED, so a plain path passes through unchanged): the sequence's first file is named instead,
    and the server finds its siblings. The padding in the brackets is tried first, then any file of the
    sequence whose number is the first one."""
    found = list(SEQUENCE_RANGE.finditer(path))
    if not found:
        return path
    last = found[-1]
    head, tail, first = path[: last.start()], path[last.end() :], last.group(1)
    if Path(head + first + tail).exists():
        return head + first + tail
    folder, stem = Path(head).parent, Path(head).name
    for candidate in sorted(folder.glob(f"{glob.escape(stem)}*{glob.escape(tail)}")):
        digits = candidate.name[len(stem) : len(candidate.name) - len(tail)]
        if digits.isdigit() and int(digits) == int(first):
            return str(candidate)
    return head + first + tail


def _media_path(item: Any) -> str:
    media = item.GetMediaPoolItem() if has(item, "GetMediaPoolItem") else None
    return media_file(_text(media.GetClipProperty("File Path"))) if media else ""


def _selected_ids(timeline: Any) -> set[str]:
    selected = timeline.GetSelectedClips() if has(timeline, "GetSelectedClips") else None
    return {_uid(i) for i in selected if i} - {""} if isinstance(selected, (list, tuple)) else set()


def source_at(timeline: Any, frame: int, where: str) -> tuple[int, Any, str | None]:
    """The source item under ``frame`` by the module's rule: (track, item, note)."""
    under = [
        (track, item)
        for track in range(1, _track_count(timeline) + 1)
        if _track_flag(timeline, "GetIsTrackEnabled", track, True)
        for item in _items_on(timeline, track)
        if _span(item)[0] <= frame < _span(item)[1]
    ]
    if not under:
        raise HostError(f"no clip at {where}: move the playhead onto the clip, or set In/Out marks on it")
    media = [(track, item) for track, item in under if _media_path(item)]
    if not media:
        names = ", ".join(item.GetName() for _, item in under)
        raise HostError(f"nothing at {where} has a media file ({names}): generators and titles cannot be edited")
    selected = _selected_ids(timeline)
    chosen = [(track, item) for track, item in media if _uid(item) in selected]
    if len(chosen) == 1:
        track, item = chosen[0]
        return track, item, f"the selected clip on V{track}" if len(media) > 1 else None
    track, item = media[0]
    return track, item, None


def shot_to_edit(timeline: Any) -> Shot:
    """The In/Out range within one clip if both marks are set, else the whole clip under the playhead."""
    rate, drop = timeline_rate(timeline)
    marked, notes = marked_range(timeline)
    if marked is not None:
        frame, where = marked[0], f"the In mark ({format_timecode(marked[0], rate, drop)})"
    else:
        frame = playhead_frame(timeline, rate, drop)
        if frame is None:
            raise HostError("Resolve did not report the playhead (it does on the Cut, Edit, Color, Fairlight and "
                            "Deliver pages): open the Edit page, or set In/Out marks")  # fmt: skip
        where = f"the playhead ({format_timecode(frame, rate, drop)})"
    track, item, note = source_at(timeline, frame, where)
    notes += [note] if note else []
    item_start, item_end = _span(item)
    if marked is None:
        start, end = item_start, item_end
    else:
        start, end = marked
        if end == item_end + 1:
            end = item_end
            notes.append("the Out mark is one frame past the clip's end: rendering to its last frame")
        elif end > item_end:
            raise HostError(f"the In/Out range spans more than {item.GetName()} (it ends at "
                            f"{format_timecode(item_end - 1, rate, drop)}): mark a range within one clip")  # fmt: skip
    path = _media_path(item)
    clip_rate, _ = parse_rate(item.GetMediaPoolItem().GetClipProperty("FPS"))
    if clip_rate != rate:
        raise HostError(
            f"{item.GetName()} is {float(clip_rate):g} fps on a {float(rate):g} fps timeline: KV-Lock edits "
            "source frames one to one, so the rates must match (conform the clip or use a matching timeline)"
        )
    offset = _int(item.GetLeftOffset(), f"{item.GetName()}'s left offset") + (start - item_start)
    return Shot(item.GetName(), path, offset, offset + (end - start), start, track, rate, drop, tuple(notes))


def matte_above(timeline: Any, shot: Shot) -> tuple[str, int, int]:
    """The matte clip on the track directly above covering the shot: (file, its own first frame, its end).

    The matte's frames are its own: a matte clip slipped against the source (another left offset) keeps
    its offset, so the server reads the matte frames that sit above the shot."""
    track, end = shot.track + 1, shot.record_start + shot.frames
    for item in _items_on(timeline, track) if track <= _track_count(timeline) else []:
        start, stop = _span(item)
        if start <= shot.record_start and stop >= end:
            path = _media_path(item)
            if not path:
                raise HostError(f"{item.GetName()} on V{track} has no media file, so it cannot be the matte")
            rate, _ = parse_rate(item.GetMediaPoolItem().GetClipProperty("FPS"))
            if rate != shot.rate:
                raise HostError(f"the matte {item.GetName()} is {float(rate):g} fps, the shot {float(shot.rate):g} "
                                "fps: render the matte at the shot's rate")  # fmt: skip
            first = _int(item.GetLeftOffset(), f"{item.GetName()}'s left offset") + (shot.record_start - start)
            return path, first, first + shot.frames
        if start < end and shot.record_start < stop:
            raise HostError(
                f"matte length mismatch: {item.GetName()} on V{track} covers {shot.timecode(start)}–"
                f"{shot.timecode(stop - 1)}, the shot needs {shot.timecode(shot.record_start)}–{shot.timecode(end - 1)}"
            )
    raise HostError(f"no matte clip on V{track} above the shot (V{shot.track}) covering all of its frames")


def shot_media(timeline: Any, shot: Shot) -> Any:
    """The shot's media pool item (None if Resolve no longer shows the clip)."""
    item = next((i for i in _items_on(timeline, shot.track) if _span(i)[0] <= shot.record_start < _span(i)[1]), None)
    return item.GetMediaPoolItem() if item else None


def clip_matte(project: Any, timeline: Any, shot: Shot) -> str:
    """The source clip's first clip matte file (Resolve's Clip Mattes, frame for frame with its media)."""
    media = shot_media(timeline, shot)
    mattes = project.GetMediaPool().GetClipMatteList(media) if media else None
    mattes = [m for m in mattes if _text(m)] if isinstance(mattes, (list, tuple)) else []
    if not mattes:
        raise HostError(f"{shot.name} has no clip matte: add one, or use a matte clip above or a file")
    return mattes[0]


def _kvlock_bin(media_pool: Any) -> Any:
    root = media_pool.GetRootFolder()
    for folder in root.GetSubFolderList() or []:
        if folder and folder.GetName() == KVLOCK_BIN:
            return folder
    folder = media_pool.AddSubFolder(root, KVLOCK_BIN)
    if not folder:
        raise HostError(f"could not create the {KVLOCK_BIN} bin")
    return folder


def free_track(timeline: Any, above: int, start: int, end: int) -> int:
    """The lowest unlocked video track above ``above`` with nothing in [start, end); a new track if none is."""
    for track in range(above + 1, _track_count(timeline) + 1):
        if _track_flag(timeline, "GetIsTrackLocked", track, False):
            continue
        if not any(_span(i)[0] < end and start < _span(i)[1] for i in _items_on(timeline, track)):
            return track
    if not timeline.AddTrack("video"):
        raise HostError("no free video track above the shot and Resolve would not add one")
    return _track_count(timeline)


def _landed(timeline: Any, track: int, before: set[str], returned: Any, clip: Any) -> list[Any]:
    """Items of ``clip`` that appeared on ``track``: the returned ones if the track shows them, else any new."""
    new = [
        i for i in _items_on(timeline, track)
        if _uid(i) not in before and i.GetMediaPoolItem() and _uid(i.GetMediaPoolItem()) == _uid(clip)
    ]  # fmt: skip
    ids = {_uid(i) for i in returned if i} - {""} if isinstance(returned, (list, tuple)) else set()
    return [i for i in new if _uid(i) in ids] or new


def _delete(timeline: Any, track: int, items: list[Any]) -> bool:
    """Remove items Resolve placed wrongly (they cannot be moved); True once the track no longer shows them."""
    gone = {_uid(i) for i in items}
    return bool(timeline.DeleteClips(items, False)) and not gone & {_uid(i) for i in _items_on(timeline, track)}


def _import(media_pool: Any, result: Path) -> Any:
    """The result as one media pool item: a movie by path; an EXR sequence (a folder of numbered frames) by
    the README's clipInfo form, ``{"FilePath": "name.%04d.exr", "StartIndex": first, "EndIndex": last}``."""
    if result.is_dir():
        numbered = [(m.group(1), m.group(2), m.group(3)) for f in sorted(result.iterdir())
                    if (m := FRAME_FILE.fullmatch(f.name))]  # fmt: skip
        if not numbered or len({(head, len(n), tail) for head, n, tail in numbered}) != 1:
            raise HostError(f"{result} does not hold one numbered image sequence")
        head, number, tail = numbered[0]
        numbers = [int(n) for _, n, _ in numbered]
        info = {"FilePath": str(result / f"{head}%0{len(number)}d{tail}"), "StartIndex": min(numbers),
                "EndIndex": max(numbers)}  # fmt: skip
        imported = media_pool.ImportMedia([info])
    else:
        imported = media_pool.ImportMedia([str(result)])
    if not isinstance(imported, (list, tuple)) or not imported or not imported[0]:
        raise HostError(f"Resolve could not import {result}")
    return imported[0]


def place_result(
    project: Any, timeline: Any, shot: Shot, result: Path, tag: Callable[[Any], list[str]] | None = None
) -> Placement:
    """Import into the KV-Lock bin, give the clip its colour interpretation (``tag``: the notes of what Resolve
    refused), and append on a free track at the shot's record frame, checked by re-reading the track under
    each reading of ``endFrame``; a wrong placement is deleted, and the clip waits in the bin."""
    return place_takes(project, timeline, shot, [result], tag)


def place_takes(
    project: Any, timeline: Any, shot: Shot, results: list[Path], tag: Callable[[Any], list[str]] | None = None
) -> Placement:
    """:func:`place_result` for the first of ``results``, the others added to the placed clip's Take Selector
    (``add_takes``); every one imported into the KV-Lock bin and tagged."""
    media_pool = project.GetMediaPool()
    media_pool.SetCurrentFolder(_kvlock_bin(media_pool))
    clips = [_import(media_pool, result) for result in results]
    notes = tuple(dict.fromkeys(note for clip in clips for note in (tag(clip) if tag is not None else ())))
    placed = _append(media_pool, timeline, shot, clips[0])
    if len(clips) > 1:
        placed = add_takes(placed, clips)
    return replace(placed, message=placed.message + "".join(f"; {n}" for n in notes)) if notes else placed


TAKE_CALLS = ("AddTake", "GetTakesCount", "GetTakeByIndex", "SelectTakeByIndex")


def add_takes(placed: Placement, clips: list[Any]) -> Placement:
    """Add ``clips[1:]`` as takes of the placed clip ``clips[0]`` and show take 1; the takes are found by their
    media pool items, whatever index Resolve gave them. Where a call is missing or refused, or the selector
    does not hold them all, the takes not in it wait in the KV-Lock bin and the message says so."""
    count = len(clips)

    def waiting(first: int, why: str) -> Placement:
        names = ", ".join(clip.GetName() for clip in clips[first - 1 :])
        takes = f"take {first}" if first == count else f"takes {first}–{count}"
        return replace(placed, confirmed=False, message=f"{placed.message}; {why}: {takes} wait in the "
                       f"{KVLOCK_BIN} bin ({names})")  # fmt: skip

    item = placed.item
    if not placed.confirmed or item is None:
        return waiting(2, "the first take is not on the timeline")
    missing = [call for call in TAKE_CALLS if not has(item, call)]
    if missing:
        return waiting(2, f"this Resolve gives scripts no {missing[0]} (the Take Selector)")
    for number, clip in enumerate(clips[1:], 2):
        if not item.AddTake(clip):
            return waiting(number, f"Resolve refused take {number} (AddTake)")
    found = {}  # our take → Resolve's index
    ids = {_uid(clip): number for number, clip in enumerate(clips, 1)}
    for index in range(1, _int(item.GetTakesCount(), "the number of takes") + 1):
        info = item.GetTakeByIndex(index)
        media = info.get("mediaPoolItem") if isinstance(info, dict) else None
        if media is not None and _uid(media) in ids:
            found[ids[_uid(media)]] = index
    if sorted(found) != list(range(1, count + 1)):
        return waiting(2, f"the Take Selector on V{placed.track} does not hold all {count} takes")
    if not item.SelectTakeByIndex(found[1]):
        return replace(placed, message=f"{placed.message}; takes 1–{count} in its Take Selector (Resolve would not "
                       "show take 1: pick it in the Take Selector)")  # fmt: skip
    return replace(placed, message=f"{placed.message}; takes 1–{count} in its Take Selector, take 1 shown "
                   "(Clip › Take Selector to compare, Finalize Take to keep one)")  # fmt: skip


def _append(media_pool: Any, timeline: Any, shot: Shot, clip: Any) -> Placement:
    frames, at = shot.frames, shot.record_start
    track = free_track(timeline, shot.track, at, at + frames)
    where, when = f"V{track}", f"{shot.timecode(at)} (frame {at})"
    tried = []
    for reading, less in READINGS:
        before = {_uid(i) for i in _items_on(timeline, track)}
        info = {"mediaPoolItem": clip, "startFrame": 0, "endFrame": frames - less, "trackIndex": track,
                "recordFrame": at, "mediaType": 1}  # fmt: skip
        landed = _landed(timeline, track, before, media_pool.AppendToTimeline([info]), clip)
        if not landed:
            tried.append(f"endFrame {frames - less} ({reading}): nothing placed")
            continue
        spans = [(*_span(i), _int(i.GetLeftOffset(), "the placed clip's left offset")) for i in landed]
        if spans == [(at, at + frames, 0)]:
            return Placement(track, at, True, f"placed on {where} at {when}, {frames} frames", landed[0])
        got = ", ".join(f"{shot.timecode(s)}–{shot.timecode(e - 1)}" for s, e, _ in spans)
        if not _delete(timeline, track, landed):
            return Placement(track, at, False, f"Resolve placed the result on {where} at {got} instead of {when}, "
                             f"{frames} frames, and would not let the script remove it: delete it, then drag "
                             f"{clip.GetName()} from the {KVLOCK_BIN} bin to {where} at {when}")  # fmt: skip
        tried.append(f"endFrame {frames - less} ({reading}): placed at {got}, removed")
    return Placement(track, at, False, f"Resolve did not place the result on {where} at {when} ({'; '.join(tried)}); "
                     f"it waits in the {KVLOCK_BIN} bin as {clip.GetName()}: drag it there")  # fmt: skip
