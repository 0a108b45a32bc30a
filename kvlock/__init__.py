"""KV-Lock: edit the masked subject of a video with a pre-trained video DiT while the background stays locked.

The names below load lazily, so light modules (``kvlock.errors``, ``kvlock.media.atomic``) can be used by
clients without importing torch or diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Editor": "editing.editor",
    "EditRequest": "editing.request",
    "EditResult": "editing.request",
    "StepProgress": "progress",
    "EditSettings": "settings",
    "EditCancelled": "errors",
    "InvalidRequest": "errors",
    "KVLockError": "errors",
    "MatteError": "errors",
    "MediaError": "errors",
    "MediaNotFoundError": "errors",
    "ModelLoadError": "errors",
    "OutputExistsError": "errors",
    "SettingsError": "errors",
    "UnreadableMediaError": "errors",
    "UnsupportedDeviceError": "errors",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'kvlock' has no attribute {name!r}")
