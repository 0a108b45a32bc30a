"""What both render buttons share: the guard around Resolve calls (every surprise becomes a message), the
output's name, and the frames to upload when the server cannot read the media."""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kvlock_bridge import ArrayClip, FileClip
from kvlock_bridge.background import Fallback
from kvlock_bridge.local import decode_clips

from . import host
from .colour import ColourPlan
from .form import FormError

FINAL = ("Done", "Error", "Warning", "Cancelled")
T = TypeVar("T")


def _print_traceback(exc: BaseException) -> None:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)  # Workspace › Console


def explain(what: str, exc: BaseException) -> str:
    """The message for a step that failed: the editor's own mistakes as they are, anything else by its type."""
    if isinstance(exc, (host.HostError, FormError)):
        return str(exc)
    _print_traceback(exc)
    return f"{type(exc).__name__} while {what}: {exc} (the details are in Workspace › Console)"


def guarded(what: str, action: Callable[[], T]) -> T:
    """Run a step that calls Resolve; anything but the editor's own mistakes becomes a HostError that says so."""
    try:
        return action()
    except (host.HostError, FormError):
        raise
    except Exception as exc:  # Resolve's proxies raise whatever they raise; the window must keep working
        _print_traceback(exc)
        raise host.HostError(f"Resolve answered unexpectedly while {what} ({type(exc).__name__}: {exc})") from None


def stem(path: str) -> str:
    """The output's name: a movie's stem, a sequence's name without its frame number (plate.1001.exr → plate)."""
    stem = Path(path).stem
    if Path(path).suffix.lower() in (".exr", ".png", ".tif", ".tiff", ".dpx"):
        stem = re.sub(r"[._-]?\d+$", "", stem) or stem
    return stem


def upload_for(shot: host.Shot, plan: ColourPlan, source: FileClip, matte: FileClip) -> Fallback:
    """The frames to send when the server cannot read this disk: read here (never for an EXR plate, whose
    linear values an upload's 8/16-bit code values would lose)."""

    def upload() -> tuple[ArrayClip, ArrayClip]:
        from kvlock.errors import KVLockError

        if plan.codec == "exr":
            raise ValueError(
                f"the server cannot read {shot.path}, and an EXR plate goes by path only: run the server "
                "where the plate is, with its folder in --media-root"
            )
        try:
            return decode_clips(source, matte)
        except KVLockError as exc:  # a matte that cannot go with the range, unreadable media: say which
            raise ValueError(str(exc)) from None

    return upload
