"""A fake of the DaVinci Resolve scripting objects the KV-Lock script uses, for tests (Resolve cannot run here).

Behaviour encoded, and where it comes from:

- From Resolve's scripting README (``Developer/Scripting/README.txt``): the object tree Resolve →
  ProjectManager → Project → MediaPool / Timeline → TimelineItem → MediaPoolItem; ``GetCurrentProject``,
  ``GetCurrentTimeline``, ``GetCurrentVideoItem``, ``GetMarkInOut`` (``{"video": {"in", "out"}}``),
  ``GetItemListInTrack``, ``GetTrackCount``, ``AddTrack``, ``GetSetting("timelineFrameRate")``,
  ``GetStart/GetEnd/GetLeftOffset/GetMediaPoolItem``, ``GetClipProperty("File Path" | "FPS" | "Frames")``,
  ``ImportMedia``, ``AddSubFolder``, ``SetCurrentFolder``, ``GetClipMatteList``, and ``AppendToTimeline``
  with clip-info dicts whose ``endFrame`` is exclusive; menu scripts get ``resolve``, ``fusion``, ``bmd``.
- From the project's host notes (DESIGN §5, measured against Resolve): timeline frames are absolute (they
  include the start timecode); ``GetEnd`` is exclusive; items cannot be moved after placement (no setters
  here); an append overlapping an existing item is dropped silently while the call still returns an item
  object that is on no track; a Studio-only call on Free opens a modal dialog (recorded in ``modals``);
  Resolve objects answer every attribute, so ``hasattr`` is always true — only ``dir()`` tells.
- Assumed, not documented: the Out mark is inclusive (as the editor sees it in the UI); the current video
  item is the topmost item under the playhead.
- UIManager/UIDispatcher: just enough of Fusion's UI for a dialog — elements with ``Text``/``Value``/
  ``CurrentIndex``, ``GetItems``, ``On.<ID>.<Event>`` handlers, timers, and a ``RunLoop`` that plays the
  test's scripted actions (Resolve's real loop waits for clicks).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from kvlock.media.decode import probe

_ids = itertools.count(1)


class ResolveObject:
    """Answers any attribute (as Resolve's proxies do) with a no-op; ``dir`` lists only what exists."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None

    def __dir__(self) -> list[str]:
        return [n for n in type(self).__dict__ if n[:1].isupper()] + [
            n for base in type(self).__mro__[1:] for n in base.__dict__ if n[:1].isupper()
        ]


class MediaPoolItem(ResolveObject):
    def __init__(self, path: str, fps: Fraction | None = None) -> None:
        info = probe(path)
        self._path, self._uid = str(path), f"mpi-{next(_ids)}"
        self._fps = fps if fps is not None else info.rate
        self._frames = info.frames

    def GetName(self) -> str:
        return Path(self._path).name

    def GetUniqueId(self) -> str:
        return self._uid

    def GetClipProperty(self, key: str) -> str:
        props = {
            "File Path": self._path,
            "FPS": f"{float(self._fps):.3f}".rstrip("0").rstrip("."),
            "Frames": str(self._frames),
        }
        return props.get(key, "")


class TimelineItem(ResolveObject):
    def __init__(self, media: MediaPoolItem, start: int, end: int, left_offset: int) -> None:
        self._media, self._start, self._end, self._left = media, start, end, left_offset
        self._uid = f"ti-{next(_ids)}"

    def GetName(self) -> str:
        return self._media.GetName()

    def GetUniqueId(self) -> str:
        return self._uid

    def GetStart(self) -> int:
        return self._start

    def GetEnd(self) -> int:  # exclusive
        return self._end

    def GetDuration(self) -> int:
        return self._end - self._start

    def GetLeftOffset(self) -> int:
        return self._left

    def GetMediaPoolItem(self) -> MediaPoolItem:
        return self._media


class Timeline(ResolveObject):
    def __init__(self, name: str, start_frame: int, rate: Fraction, tracks: int = 1) -> None:
        self._name, self._start_frame, self._rate = name, start_frame, rate
        self._tracks: list[list[TimelineItem]] = [[] for _ in range(tracks)]
        self._marks: dict[str, dict[str, int]] = {}
        self.playhead = start_frame

    # test set-up helpers (lower-case: not part of Resolve's API)
    def put(self, track: int, media: MediaPoolItem, start: int, end: int, left_offset: int = 0) -> TimelineItem:
        while len(self._tracks) < track:
            self._tracks.append([])
        item = TimelineItem(media, start, end, left_offset)
        self._tracks[track - 1].append(item)
        return item

    def mark(self, mark_in: int, mark_out: int) -> None:
        self._marks = {"video": {"in": mark_in, "out": mark_out}}

    def append(self, media: MediaPoolItem, info: dict[str, Any]) -> TimelineItem:
        start = int(info.get("recordFrame", self._end_of_track(info.get("trackIndex", 1))))
        item = TimelineItem(
            media, start, start + int(info["endFrame"]) - int(info["startFrame"]), int(info["startFrame"])
        )
        track = int(info.get("trackIndex", 1))
        if track > len(self._tracks):
            return item  # no such track: not placed
        if any(i.GetStart() < item.GetEnd() and item.GetStart() < i.GetEnd() for i in self._tracks[track - 1]):
            return item  # overlap: silently dropped, the returned item is on no track
        self._tracks[track - 1].append(item)
        return item

    def _end_of_track(self, track: int) -> int:
        items = self._tracks[track - 1] if track <= len(self._tracks) else []
        return max((i.GetEnd() for i in items), default=self._start_frame)

    # Resolve API
    def GetName(self) -> str:
        return self._name

    def GetStartFrame(self) -> int:
        return self._start_frame

    def GetSetting(self, key: str) -> str:
        return {"timelineFrameRate": f"{float(self._rate):.3f}".rstrip("0").rstrip(".")}.get(key, "")

    def GetTrackCount(self, kind: str) -> int:
        return len(self._tracks) if kind == "video" else 0

    def GetItemListInTrack(self, kind: str, index: int) -> list[TimelineItem]:
        if kind != "video" or not 1 <= index <= len(self._tracks):
            return []
        return sorted(self._tracks[index - 1], key=lambda i: i.GetStart())

    def AddTrack(self, kind: str, *args: Any) -> bool:
        if kind != "video":
            return False
        self._tracks.append([])
        return True

    def GetMarkInOut(self) -> dict[str, dict[str, int]]:
        return self._marks

    def GetCurrentVideoItem(self) -> TimelineItem | None:
        for items in reversed(self._tracks):
            for item in items:
                if item.GetStart() <= self.playhead < item.GetEnd():
                    return item
        return None


class Folder(ResolveObject):
    def __init__(self, name: str) -> None:
        self._name, self.clips, self.subfolders = name, [], []

    def GetName(self) -> str:
        return self._name

    def GetSubFolderList(self) -> list[Folder]:
        return list(self.subfolders)

    def GetClipList(self) -> list[MediaPoolItem]:
        return list(self.clips)


class MediaPool(ResolveObject):
    def __init__(self, project: Project) -> None:
        self._project, self.root = project, Folder("Master")
        self._current = self.root
        self.mattes: dict[str, list[str]] = {}
        self.drop_appends = False  # a returned item that is unusable (Resolve sometimes does this)

    def GetRootFolder(self) -> Folder:
        return self.root

    def AddSubFolder(self, parent: Folder, name: str) -> Folder:
        folder = Folder(name)
        parent.subfolders.append(folder)
        return folder

    def SetCurrentFolder(self, folder: Folder) -> bool:
        self._current = folder
        return True

    def GetCurrentFolder(self) -> Folder:
        return self._current

    def ImportMedia(self, paths: list[str]) -> list[MediaPoolItem]:
        items = [MediaPoolItem(p) for p in paths if Path(p).exists()]
        self._current.clips.extend(items)
        return items

    def AppendToTimeline(self, infos: list[dict[str, Any]]) -> list[TimelineItem]:
        timeline = self._project.GetCurrentTimeline()
        placed = []
        for info in infos:
            if self.drop_appends:
                placed.append(TimelineItem(info["mediaPoolItem"], 0, 0, 0))
                continue
            placed.append(timeline.append(info["mediaPoolItem"], info))
        return placed

    def GetClipMatteList(self, item: MediaPoolItem) -> list[str]:
        return list(self.mattes.get(item.GetUniqueId(), []))


class Project(ResolveObject):
    def __init__(self, name: str) -> None:
        self._name, self.timeline = name, None
        self.media_pool = MediaPool(self)

    def GetName(self) -> str:
        return self._name

    def GetCurrentTimeline(self) -> Timeline | None:
        return self.timeline

    def GetMediaPool(self) -> MediaPool:
        return self.media_pool


class ProjectManager(ResolveObject):
    def __init__(self) -> None:
        self.project: Project | None = None

    def GetCurrentProject(self) -> Project | None:
        return self.project


@dataclass
class Resolve(ResolveObject):
    studio: bool = False
    studio_only: frozenset[str] = frozenset({"ExportCurrentFrameAsStill", "GetFusionCompByIndex"})
    modals: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.manager = ProjectManager()

    def GetProductName(self) -> str:
        return "DaVinci Resolve Studio" if self.studio else "DaVinci Resolve"

    def GetProjectManager(self) -> ProjectManager:
        return self.manager

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name in self.studio_only and not self.studio:
            self.modals.append(name)  # on Free this opens a modal "Studio only" dialog
        return super().__getattr__(name)


# --- Fusion UIManager, just enough for a dialog ---------------------------------------------------------


class Element:
    def __init__(self, kind: str, props: dict[str, Any], children: list[Element] | None = None) -> None:
        self.kind, self.ID = kind, props.get("ID")
        self.Text = props.get("Text", "")
        self.Value = props.get("Value", 0)
        self.CurrentIndex = 0
        self.entries: list[str] = []
        self.children = children or []
        self.running = False

    def AddItem(self, text: str) -> None:
        self.entries.append(text)

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
    def __getattr__(self, kind: str) -> Callable[..., Element]:
        if kind.startswith("_") or kind == "timers":
            raise AttributeError(kind)

        def make(props: Any = None, children: Any = None) -> Element:
            if isinstance(props, list):
                props, children = {}, props
            return Element(kind, props or {}, children)

        return make


class Window:
    def __init__(self, props: dict[str, Any], root: Element) -> None:
        self.ID, self.root, self.On, self.visible = props["ID"], root, _Handlers(), False
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
        self.visible = True

    def Hide(self) -> None:
        self.visible = False


class Dispatcher:
    """``bmd.UIDispatcher(ui)``. ``script`` holds the test's actions, played by ``RunLoop``."""

    def __init__(self, ui: UIManager, script: list[Callable[[Dispatcher], Any]]) -> None:
        self.ui, self.On, self.windows, self.script = ui, _Handlers(), [], script
        self._exit = False

    def AddWindow(self, props: dict[str, Any], root: Element) -> Window:
        window = Window(props, root)
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
        for action in self.script:
            if self._exit:
                break
            action(self)

    def ExitLoop(self) -> None:
        self._exit = True


class TimerUIManager(UIManager):
    """Keeps the dialog's timers so the dispatcher can fire them."""

    def __init__(self) -> None:
        self.timers: dict[str, Element] = {}

    def Timer(self, props: dict[str, Any]) -> Element:
        element = Element("Timer", props)
        self.timers[props["ID"]] = element
        return element


class Fusion:
    def __init__(self) -> None:
        self.UIManager = TimerUIManager()


class Bmd:
    def __init__(self, script: list[Callable[[Dispatcher], Any]]) -> None:
        self.script = script
        self.dispatchers: list[Dispatcher] = []

    def UIDispatcher(self, ui: UIManager) -> Dispatcher:
        disp = Dispatcher(ui, self.script)
        self.dispatchers.append(disp)
        return disp
