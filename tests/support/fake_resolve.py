"""A fake of DaVinci Resolve's scripting objects, per version, for tests (Resolve cannot run here).

Everything below is Blackmagic's scripting README (Developer/Scripting/README.txt) unless marked
UNDOCUMENTED: those are choices — third-party measurements where there are any — and where the script
depends on one, it is tested under each reading (``Api.end_frame``). Sources, cited by tag:

[R18.5] README "Updated as of 26 May 2023" (Resolve 18.5): github.com/francisqureshi/Resolve-API,
        "DVR 18.5 API README.txt".
[R20]   README "Last Updated: 7 Oct 2025" (Resolve 20.x): github.com/samuelgursky/davinci-resolve-mcp,
        docs/reference/resolve_scripting_api.txt at commit 320ce22.
[R21]   README "Last Updated: 24 Jul 2026" (Resolve 21.x): the same file at commit 3874ee5 — the first
        with Timeline.GetSelectedClips (the one of 5 May 2026, at a0efd28, has only MediaPool's).
[N19.1] a community copy of the README with per-version notes ("> New in 19.1.0" over Timeline.GetMarkInOut,
        "> New in 19.0.0" over TimelineItem.GetTrackTypeAndIndex; its repository could not be identified);
        consistent with the READMEs: both absent from [R18.5], present in [R20].
[STUB]  the 21.x Python type stub: MarkInOutRange "'in': int,  # Record frame relative to timeline start";
        ClipProperties "'FPS': float".
[EX7]   Blackmagic's example 7_add_subclips_to_timeline.py: "Adds subclips [frame 0 .. 23]" with
        "startFrame": 0, "endFrame": 23, "(first 24 frames)": github.com/deric/DaVinciResolve-API-Docs,
        examples/python/7_add_subclips_to_timeline.py.
[M]     a third party's live measurements: github.com/samuelgursky/davinci-resolve-mcp,
        docs/reference/api-limitations.md — "hasattr() / getattr() on Resolve API objects" (Studio 19.1.3.7:
        hasattr is true for every name, getattr returns None), "AppendToTimeline (overlapping records —
        earlier item wins)", "(null-id timeline items)", "TimelineItem.GetSourceStartFrame" (GetLeftOffset
        equals the startFrame sent), the Studio-only "limitation" dialog that blocks later calls;
        docs/guides/headless-edit-loop.md ("endFrame is inclusive-of-the-last-frame" there) against the
        same repository's "endFrame EXCLUSIVE (verified at 1, 119 and 120 frames)" on 21.0.4.5.
[F19.1] reports that Free 19.1 shows no UIManager window for third-party scripts but "You've reached a
        limitation with DaVinci Resolve": github.com/YourAverageMo/auto-silence-cut/issues/3,
        github.com/tmoroney/auto-subs/issues/116.
[T]     a third party's script that adds a take to a timeline clip and reads it back (found by its text; its
        repository could not be identified; its comment points at gist.github.com/X-Raym/
        2f2bf453fc481b9cca624d7ca0e19de8): after one AddTake on a plain clip, "takeCount =
        int(timelineItem.GetTakesCount()) # should always be 2", take 1 is "previous clip", take 2 "new clip",
        and it selects the new take itself ("SelectTakeByIndex(takeCount) # make new clip current selected take").
[QT]    UIManager's widgets are Qt's (QSpinBox, QDoubleSpinBox): decimals default to 2 and a value is
        rounded to them; minimum/maximum default to 0–99 (99.99); a value outside is clamped.

Per version (``VERSIONS``):

    behaviour                               18.5      19.1      20        21
    Timeline.GetMarkInOut                   absent    yes       yes       yes     [R18.5] [N19.1] [R20]
    TimelineItem.GetTrackTypeAndIndex       absent    yes       yes       yes     [N19.1] [R20]
    Timeline.GetSelectedClips               absent    absent    absent    yes     [R20] [R21]
    UIManager windows on Free               shown     none      none      none    [F19.1]
    clip property "FPS"                     text      text      text      number  [STUB]; text: UNDOCUMENTED

Unknown members answer as [M] measured: ``hasattr`` is true, the value is ``None`` (so calling it raises
``TypeError`` — a typo is never a silent no-op), and ``dir`` lists only what the version has. Lower-case
methods are the tests' own set-up helpers, not Resolve's API. ``Api.hidden`` (not Resolve's behaviour) names
calls this fake answers as unknown, to play a Resolve that lacks them.

Takes [R18.5 TimelineItem]: ``AddTake(mediaPoolItem, startFrame, endFrame)`` → Bool "Adds mediaPoolItem as a
new take. Initializes a take selector for the timeline item if needed. By default, the full clip extents is
added"; ``GetSelectedTakeIndex()`` / ``GetTakesCount()`` → int, 0 "if the clip is not a take selector";
``GetTakeByIndex(idx)`` → {"startFrame", "endFrame", "mediaPoolItem"}; ``DeleteTakeByIndex(idx)`` and
``SelectTakeByIndex(idx)`` → Bool, "1 <= idx <= number of takes"; ``FinalizeTake()`` → Bool. UNDOCUMENTED,
after [T]: initialising the selector makes the clip's own media take 1 and a new take goes last, and adding
a take does not change which take is selected. UNDOCUMENTED, this fake's choices: a take's endFrame is
inclusive (as [EX7] reads clipInfo's); the item keeps its place and length; the item shows (and
``GetMediaPoolItem`` returns) the selected take; finalising keeps the selected take as a plain clip; an index
out of range returns False, or {} from ``GetTakeByIndex``; ``Api.faults`` "takes_refused" makes ``AddTake``
return False (not Resolve's behaviour: a refusal to exercise the script's fallback).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

from kvlock.media.decode import probe
from kvlock.media.timecode import format_timecode

VERSIONS = {"18.5": (18, 5, 1, 6), "19.1": (19, 1, 3, 7), "20": (20, 3, 2, 9), "21": (21, 0, 4, 5)}
PLAYHEAD_PAGES = {"cut", "edit", "color", "fairlight", "deliver"}  # GetCurrentTimecode's pages [R18.5]
_ids = itertools.count(1)


def since(*version: int) -> Callable[[Callable], Callable]:
    """The first version whose README has the call; older versions answer it as an unknown name."""

    def mark(method: Callable) -> Callable:
        method.since = version  # type: ignore[attr-defined]
        return method

    return mark


@dataclass
class Api:
    """The Resolve being faked, shared by all its objects."""

    version: tuple[int, ...]
    studio: bool
    end_frame: str = "exclusive"  # UNDOCUMENTED: clipInfo endFrame; "inclusive" is [EX7]'s reading
    faults: set[str] = field(default_factory=set)  # not Resolve's behaviour: injected failures (see MediaPool)
    colour_locked: bool = False  # clip colour properties read only, as in an ACES workflow [R18.5]
    settings: dict[str, str] = field(default_factory=dict)  # Project.GetSetting values (key names UNDOCUMENTED)
    page: str = "edit"
    modals: list[str] = field(default_factory=list)  # dialogs Resolve raised (a human must dismiss them)
    unknown: list[str] = field(default_factory=list)  # unknown names the script asked for
    hidden: set[str] = field(default_factory=set)  # not Resolve's behaviour: calls answered as unknown


class ResolveObject:
    """Answers unknown names with None and hides calls newer than its version, as Resolve's proxies do [M]."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        first = getattr(value, "since", None) if not name.startswith("_") else None
        api = object.__getattribute__(self, "_api") if not name.startswith("_") else None
        if api is not None and ((first is not None and api.version < first) or name in api.hidden):
            api.unknown.append(f"{type(self).__name__}.{name}")
            return None
        return value

    def __getattr__(self, name: str) -> None:  # only names the class does not have
        if name.startswith("_"):
            raise AttributeError(name)
        self._api.unknown.append(f"{type(self).__name__}.{name}")
        return None

    def __dir__(self) -> list[str]:
        version = self._api.version
        return sorted({name for cls in type(self).__mro__ for name, value in vars(cls).items()
                       if name[:1].isupper() and getattr(value, "since", ()) <= version
                       and name not in self._api.hidden})  # fmt: skip


def sequence_name(files: list[Path], digits: int) -> str:
    """An image sequence as Resolve names it: "file_[001-100].dpx" for file_001 … file_100 [R18.5 ImportMedia]."""
    first, last = files[0].name, files[-1].name
    head, number, tail = re.fullmatch(r"(.*?)(\d+)(\.[A-Za-z]+)", first).groups()
    end = re.fullmatch(r"(.*?)(\d+)(\.[A-Za-z]+)", last).group(2)
    return f"{head}[{number}-{end.zfill(digits)}]{tail}"


class MediaPoolItem(ResolveObject):
    """``colour``: the clip's colour properties as the Clip Attributes show them (set-up; key names UNDOCUMENTED).
    An image sequence's "File Path" is its folder and bracketed name, like the clip's name (UNDOCUMENTED)."""

    def __init__(self, api: Api, path: str, fps: Fraction | None = None, colour: dict[str, str] | None = None):
        super().__init__(api)
        info = probe(path)
        self._path, self._uid = str(path), f"mpi-{next(_ids)}"
        if info.kind == "sequence":
            self._path = str(info.files[0].parent / sequence_name(list(info.files), info.digits))
        self._fps, self.frames = fps if fps is not None else info.rate, info.frames
        self.colour = dict(colour or {})

    def GetName(self) -> str:
        return Path(self._path).name

    def GetUniqueId(self) -> str:
        return self._uid

    def GetClipProperty(self, key: str | None = None) -> Any:
        """One property, or with no key "a snapshot of all queryable properties" [R18.5 Project and Clip
        properties]; an invalid key gives "a trivial result" (here "")."""
        fps = round(float(self._fps), 3)  # 23.976, 29.97: a number in 21.x [STUB], text before (UNDOCUMENTED)
        props = {"File Path": self._path, "FPS": fps if self._api.version >= (21,) else f"{fps:g}",
                 "Frames": str(self.frames), **self.colour}  # fmt: skip
        return props if key is None else props.get(key, "")

    def SetClipProperty(self, key: str, value: str) -> bool:
        """Returns whether it worked ("please check the return value"); colour spaces are read only in an ACES
        workflow [R18.5 Project and Clip properties] — ``Api.colour_locked`` fakes that context."""
        colour = any(word in key.lower() for word in ("color space", "gamma", "input transform", "idt"))
        if colour and self._api.colour_locked:
            return False
        self.colour[key] = str(value)
        return True


class TimelineItem(ResolveObject):
    def __init__(self, api: Api, media: MediaPoolItem | None, start: int, end: int, left: int, name: str = "") -> None:
        super().__init__(api)
        self._media, self._start, self._end, self._left = media, start, end, left
        self._name = name or (media.GetName() if media else "Text+")
        self._uid, self._timeline = f"ti-{next(_ids)}", None
        self._takes: list[dict[str, Any]] = []  # the take selector's takes, empty while it is a plain clip
        self._take = 0

    def GetName(self) -> str:
        return self._name

    def GetUniqueId(self) -> str:
        return self._uid

    def GetStart(self, subframe_precision: bool = False) -> int:
        return self._start

    def GetEnd(self, subframe_precision: bool = False) -> int:  # exclusive: GetEnd − GetStart = GetDuration
        return self._end

    def GetDuration(self, subframe_precision: bool = False) -> int:
        return self._end - self._start

    def GetLeftOffset(self, subframe_precision: bool = False) -> int:  # the first media frame shown [M]
        return self._left

    def GetMediaPoolItem(self) -> MediaPoolItem | None:  # "if one exists": titles and generators have none
        return self._takes[self._take - 1]["mediaPoolItem"] if self._takes else self._media

    def AddTake(self, media: MediaPoolItem, start_frame: int | None = None, end_frame: int | None = None) -> bool:
        if "takes_refused" in self._api.faults or not isinstance(media, MediaPoolItem):
            return False
        if not self._takes:  # the clip's own media becomes take 1 [T]
            self._takes.append({"startFrame": self._left, "endFrame": self._left + self.GetDuration() - 1,
                                "mediaPoolItem": self._media})  # fmt: skip
            self._take = 1
        first = 0 if start_frame is None else int(start_frame)
        last = media.frames - 1 if end_frame is None else int(end_frame)  # "the full clip extents"
        self._takes.append({"startFrame": first, "endFrame": last, "mediaPoolItem": media})
        return True

    def GetSelectedTakeIndex(self) -> int:
        return self._take if self._takes else 0

    def GetTakesCount(self) -> int:
        return len(self._takes)

    def GetTakeByIndex(self, idx: int) -> dict[str, Any]:
        return dict(self._takes[idx - 1]) if 1 <= idx <= len(self._takes) else {}

    def DeleteTakeByIndex(self, idx: int) -> bool:
        if not 1 <= idx <= len(self._takes):
            return False
        del self._takes[idx - 1]
        self._take = min(max(1, self._take - (idx < self._take)), len(self._takes))
        return True

    def SelectTakeByIndex(self, idx: int) -> bool:
        if not 1 <= idx <= len(self._takes):
            return False
        self._take = idx
        return True

    def FinalizeTake(self) -> bool:
        if not self._takes:
            return False
        self._media, self._takes, self._take = self._takes[self._take - 1]["mediaPoolItem"], [], 0
        return True

    @since(19, 0)
    def GetTrackTypeAndIndex(self) -> list[Any]:
        return ["video", self._timeline._track_of(self)] if self._timeline else []


class Timeline(ResolveObject):
    def __init__(self, api: Api, name: str, start_frame: int, rate: Fraction, drop: bool = False, tracks: int = 1):
        super().__init__(api)
        self._name, self._start_frame, self._rate, self._drop = name, start_frame, rate, drop
        self._tracks: list[list[TimelineItem]] = [[] for _ in range(tracks)]
        self._locked: set[int] = set()
        self._disabled: set[int] = set()
        self._marks: dict[str, dict[str, int]] = {}
        self._selected: list[TimelineItem] = []
        self.playhead = start_frame

    # test set-up helpers
    def put(self, track: int, media: MediaPoolItem | None, start: int, end: int, left_offset: int = 0,
            name: str = "") -> TimelineItem:  # fmt: skip
        while len(self._tracks) < track:
            self._tracks.append([])
        item = TimelineItem(self._api, media, start, end, left_offset, name)
        item._timeline = self
        self._tracks[track - 1].append(item)
        return item

    def mark(self, mark_in: int | None, mark_out: int | None) -> None:
        """Set In/Out at absolute frames; Resolve reports them relative to the timeline start [STUB]."""
        marks = {k: v - self._start_frame for k, v in (("in", mark_in), ("out", mark_out)) if v is not None}
        self._marks = {"video": marks, "audio": dict(marks)} if marks else {}

    def select(self, *items: TimelineItem) -> None:
        self._selected = list(items)

    def lock(self, track: int) -> None:
        self._locked.add(track)

    def disable(self, track: int) -> None:
        self._disabled.add(track)

    def items(self, track: int) -> list[TimelineItem]:
        return sorted(self._tracks[track - 1], key=lambda i: i._start) if 1 <= track <= len(self._tracks) else []

    def _track_of(self, item: TimelineItem) -> int:
        return next(n for n, items in enumerate(self._tracks, 1) if item in items)

    def _place(self, media: MediaPoolItem, track: int, record: int, first: int, count: int) -> TimelineItem | None:
        """An append's item, or None where Resolve places nothing (no such or a locked track: UNDOCUMENTED)."""
        if not 1 <= track <= len(self._tracks) or track in self._locked:
            return None
        item = TimelineItem(self._api, media, record, record + count, first)
        if any(i._start < item._end and item._start < i._end for i in self._tracks[track - 1]):
            item._uid = ""  # overlap: dropped, and the returned item is on no track, with no id [M]
            return item
        item._timeline = self
        self._tracks[track - 1].append(item)
        return item

    # Resolve API [R18.5] unless marked
    def GetName(self) -> str:
        return self._name

    def GetStartFrame(self) -> int:
        return self._start_frame

    def GetStartTimecode(self) -> str:
        return format_timecode(self._start_frame, self._rate, self._drop)

    def GetSetting(self, key: str | None = None) -> str:
        """'timelineFrameRate' is e.g. "23.976", or "29.97 DF" with drop frame ("appending the frame rate with DF")."""
        rate = f"{float(self._rate):.3f}".rstrip("0").rstrip(".") + (" DF" if self._drop else "")
        return {"timelineFrameRate": rate}.get(key or "", "")

    def GetTrackCount(self, track_type: str) -> int:
        return len(self._tracks) if track_type == "video" else 0

    def GetItemListInTrack(self, track_type: str, index: int) -> list[TimelineItem]:
        return self.items(index) if track_type == "video" else []  # outside 1..count: [] (UNDOCUMENTED)

    def AddTrack(self, track_type: str, sub_track_type: Any = None) -> bool:
        if track_type != "video":
            return False
        self._tracks.append([])  # added above the others (UNDOCUMENTED before 21's 'index' option)
        return True

    def GetIsTrackEnabled(self, track_type: str, index: int) -> bool:
        return index not in self._disabled

    def GetIsTrackLocked(self, track_type: str, index: int) -> bool:
        return index in self._locked

    def DeleteClips(self, items: list[TimelineItem], ripple: bool = False) -> bool:
        if "no_delete" in self._api.faults:
            return False
        found = [i for i in items if any(i in t for t in self._tracks)]
        for item in found:
            self._tracks[self._track_of(item) - 1].remove(item)
        return len(found) == len(items)

    def GetCurrentTimecode(self) -> str:
        """The playhead on the Cut, Edit, Color, Fairlight and Deliver pages; elsewhere "" (UNDOCUMENTED).
        On a drop-frame timeline the last separator is ";" (UNDOCUMENTED: as Resolve displays it)."""
        return format_timecode(self.playhead, self._rate, self._drop) if self._api.page in PLAYHEAD_PAGES else ""

    def GetCurrentVideoItem(self) -> TimelineItem | None:
        """UNDOCUMENTED which item of a stack: the topmost one, as the viewer shows it."""
        for items in reversed(self._tracks):
            for item in items:
                if item._start <= self.playhead < item._end:
                    return item
        return None

    @since(19, 1)
    def GetMarkInOut(self) -> dict[str, dict[str, int]]:
        """Relative to the timeline start [STUB], keys omitted when not set [R20]; Out inclusive (UNDOCUMENTED)."""
        return {kind: dict(marks) for kind, marks in self._marks.items()}

    @since(21)
    def GetSelectedClips(self) -> list[TimelineItem]:
        return list(self._selected)


class Folder(ResolveObject):
    def __init__(self, api: Api, name: str) -> None:
        super().__init__(api)
        self._name, self.clips, self.subfolders = name, [], []

    def GetName(self) -> str:
        return self._name

    def GetSubFolderList(self) -> list[Folder]:
        return list(self.subfolders)

    def GetClipList(self) -> list[MediaPoolItem]:
        return list(self.clips)


class MediaPool(ResolveObject):
    """``faults`` (not Resolve's behaviour, to exercise the script's safety nets): "drop" — appends place
    nothing and return an item on no track; "misplace" — appends land one frame late; "no_delete" —
    DeleteClips refuses."""

    def __init__(self, api: Api, project: Project) -> None:
        super().__init__(api)
        self._project, self.root = project, Folder(api, "Master")
        self._current = self.root
        self.mattes: dict[str, list[str]] = {}
        self.appends: list[dict[str, Any]] = []

    def GetRootFolder(self) -> Folder:
        return self.root

    def AddSubFolder(self, parent: Folder, name: str) -> Folder:
        folder = Folder(self._api, name)
        parent.subfolders.append(folder)
        return folder

    def SetCurrentFolder(self, folder: Folder) -> bool:
        self._current = folder
        return True

    def GetCurrentFolder(self) -> Folder:
        return self._current

    def ImportMedia(self, paths: list[Any]) -> list[MediaPoolItem]:
        """File paths, or clipInfo dicts ``{"FilePath": "file_%03d.dpx", "StartIndex": 1, "EndIndex": 100}``
        for an image sequence, "imported as one MediaPoolItem" [R18.5]. A missing file gives none (UNDOCUMENTED)."""
        items = []
        for entry in paths:
            if isinstance(entry, dict):
                pattern, first, last = str(entry["FilePath"]), int(entry["StartIndex"]), int(entry["EndIndex"])
                files = [Path(pattern % n) for n in range(first, last + 1)]
                if all(f.exists() for f in files):
                    items.append(MediaPoolItem(self._api, pattern))
            elif Path(entry).exists():
                items.append(MediaPoolItem(self._api, entry))
        self._current.clips.extend(items)
        return items

    def AppendToTimeline(self, infos: list[dict[str, Any]]) -> list[TimelineItem]:
        """Returns the appended items [R18.5]. endFrame per ``Api.end_frame`` (UNDOCUMENTED); a range outside
        the media places nothing ([M]: an inclusive endFrame one too far "appends nothing")."""
        timeline, placed = self._project.GetCurrentTimeline(), []
        for info in infos:
            self.appends.append(dict(info))
            media = info["mediaPoolItem"]
            first, end = int(info.get("startFrame", 0)), int(info.get("endFrame", media.frames))
            count = end - first + (1 if self._api.end_frame == "inclusive" else 0)
            track = int(info.get("trackIndex", 1))
            record = int(info.get("recordFrame", max((i._end for i in timeline.items(track)), default=0)))
            if count < 1 or first < 0 or first + count > media.frames:
                continue
            if "drop" in self._api.faults:
                placed.append(TimelineItem(self._api, media, 0, 0, 0))
                continue
            item = timeline._place(media, track, record + ("misplace" in self._api.faults), first, count)
            if item is not None:
                placed.append(item)
        return placed

    def GetClipMatteList(self, item: MediaPoolItem) -> list[str]:
        return list(self.mattes.get(item.GetUniqueId(), []))


class Project(ResolveObject):
    def __init__(self, api: Api, name: str) -> None:
        super().__init__(api)
        self._name, self.timeline = name, None
        self.media_pool = MediaPool(api, self)

    def GetName(self) -> str:
        return self._name

    def GetCurrentTimeline(self) -> Timeline | None:
        return self.timeline

    def GetMediaPool(self) -> MediaPool:
        return self.media_pool

    def GetSetting(self, key: str | None = None) -> Any:
        """A project setting, or all of them with no key [R18.5]; "colorScienceMode" and "colorSpaceInput" are
        the names public scripts use (UNDOCUMENTED), defaulting to Resolve's YRGB with Rec.709 Gamma 2.4."""
        settings = {"colorScienceMode": "davinciYRGB", "colorSpaceInput": "Rec.709 Gamma 2.4", **self._api.settings}
        return dict(settings) if not key else settings.get(key, "")


class ProjectManager(ResolveObject):
    def __init__(self, api: Api) -> None:
        super().__init__(api)
        self.project: Project | None = None

    def GetCurrentProject(self) -> Project | None:
        return self.project


class Resolve(ResolveObject):
    def __init__(self, version: str = "21", studio: bool = False, **options: Any) -> None:
        super().__init__(Api(VERSIONS[version], studio, **options))
        self.manager = ProjectManager(self._api)
        self.fusion = Fusion(self._api)

    @property
    def api(self) -> Api:
        return self._api

    def GetProductName(self) -> str:
        return "DaVinci Resolve Studio" if self._api.studio else "DaVinci Resolve"

    def GetVersion(self) -> list[Any]:  # [major, minor, patch, build, suffix]
        return [*self._api.version, ""]

    def GetVersionString(self) -> str:  # "major.minor.patch[suffix].build"
        return ".".join(str(v) for v in self._api.version)

    def GetProjectManager(self) -> ProjectManager:
        return self.manager

    def Fusion(self) -> Fusion:
        return self.fusion


# --- Fusion's UIManager, as much as a dialog needs [QT] ---------------------------------------------------


class Element:
    """A widget. SpinBox/DoubleSpinBox clamp (and round to ``Decimals``) every value set, as Qt does [QT]."""

    SPIN: ClassVar = {"SpinBox": (0, 99, 0), "DoubleSpinBox": (0.0, 99.99, 2)}  # Qt's default min, max, decimals

    def __init__(self, kind: str, props: dict[str, Any], children: list[Element] | None = None) -> None:
        low, high, decimals = self.SPIN.get(kind, (None, None, 0))
        object.__setattr__(self, "kind", kind)
        self.Minimum, self.Maximum, self.Decimals = props.get("Minimum", low), props.get("Maximum", high), decimals
        if kind == "DoubleSpinBox":
            self.Decimals = props.get("Decimals", decimals)
        self.ID, self.Text, self.children = props.get("ID"), props.get("Text", ""), children or []
        self.Value = props.get("Value", low or 0)
        self.entries: list[str] = []
        self.CurrentIndex, self.running = -1, False

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "Value" and self.kind in self.SPIN:
            value = min(max(value, self.Minimum), self.Maximum)
            value = round(value, self.Decimals) if self.kind == "DoubleSpinBox" else int(value)
        object.__setattr__(self, name, value)

    def AddItem(self, text: str) -> None:
        self.entries.append(text)
        self.CurrentIndex = max(self.CurrentIndex, 0)

    def Clear(self) -> None:
        self.entries, self.CurrentIndex = [], -1

    def Start(self) -> None:
        self.running = True

    def Stop(self) -> None:
        self.running = False


class _Handlers:
    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    def __getattr__(self, ident: str) -> _Slot:
        if ident.startswith("_"):
            raise AttributeError(ident)
        return self._slots.setdefault(ident, _Slot())


class _Slot:
    def __init__(self) -> None:
        object.__setattr__(self, "events", {})

    def __setattr__(self, event: str, handler: Callable[[Any], None]) -> None:
        self.events[event] = handler


class UIManager:
    KINDS: ClassVar = {"VGroup", "HGroup", "Label", "LineEdit", "Button", "ComboBox", "SpinBox", "DoubleSpinBox"}

    def __init__(self) -> None:
        self.timers: dict[str, Element] = {}

    def __getattr__(self, kind: str) -> Callable[..., Element] | None:
        if kind not in self.KINDS:
            return None  # an unknown widget is an unknown name, answered None like any other [M]

        def make(props: Any = None, children: Any = None) -> Element:
            if isinstance(props, list):
                props, children = {}, props
            return Element(kind, props or {}, children)

        return make

    def Timer(self, props: dict[str, Any]) -> Element:
        element = Element("Timer", props)
        self.timers[props["ID"]] = element
        return element


class Fusion:
    """``resolve.Fusion()`` [R18.5]. On Free from 19.1 its UI raises the "limitation" dialog [F19.1]."""

    def __init__(self, api: Api) -> None:
        self._api, self._ui = api, UIManager()

    @property
    def windows_blocked(self) -> bool:
        return not self._api.studio and self._api.version >= (19, 1)

    @property
    def UIManager(self) -> UIManager:
        if self.windows_blocked:
            self._api.modals.append("You've reached a limitation with DaVinci Resolve")
        return self._ui


class Window:
    def __init__(self, props: dict[str, Any], root: Element, blocked: bool) -> None:
        self.ID, self.root, self.On, self.visible, self._blocked = props["ID"], root, _Handlers(), False, blocked
        self._items: dict[str, Element] = {}
        self._collect(root)

    def _collect(self, element: Element) -> None:
        if element.ID:
            self._items[element.ID] = element
        for child in element.children:
            self._collect(child)

    def GetItems(self) -> dict[str, Element]:
        return self._items

    def Find(self, ident: str) -> Element:
        return self._items[ident]

    def Show(self) -> None:
        self.visible = not self._blocked

    def Hide(self) -> None:
        self.visible = False


class Dispatcher:
    """``bmd.UIDispatcher(ui)``. ``RunLoop`` plays the test's actions (Resolve's real loop waits for clicks)."""

    def __init__(self, ui: UIManager, script: list[Callable[[Dispatcher], Any]], blocked: bool) -> None:
        self.ui, self.On, self.windows, self.script, self._blocked = ui, _Handlers(), [], script, blocked
        self._exit = False

    def AddWindow(self, props: dict[str, Any], root: Element) -> Window:
        window = Window(props, root, self._blocked)
        self.windows.append(window)
        return window

    def click(self, ident: str) -> None:
        self.windows[-1].On.__getattr__(ident).events["Clicked"]({"who": ident})

    def tick_timers(self) -> bool:
        """Fire every running timer once; False when none is running."""
        fired = False
        for ident, timer in self.ui.timers.items():
            handler = self.On.__getattr__(ident).events.get("Timeout")
            if timer.running and handler is not None:
                handler({"who": ident})
                fired = True
        return fired

    def RunLoop(self) -> None:
        for action in [] if self._blocked else self.script:
            if self._exit:
                break
            action(self)

    def ExitLoop(self) -> None:
        self._exit = True


class Bmd:
    """The ``bmd`` a menu script gets, holding the test's scripted clicks."""

    def __init__(self, resolve: Resolve, script: list[Callable[[Dispatcher], Any]]) -> None:
        self._resolve, self.script = resolve, script
        self.dispatchers: list[Dispatcher] = []

    def UIDispatcher(self, ui: UIManager) -> Dispatcher:
        disp = Dispatcher(ui, self.script, self._resolve.fusion.windows_blocked)
        self.dispatchers.append(disp)
        return disp
