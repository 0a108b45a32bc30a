"""KV-Lock: edit the masked subject of a video with a pre-trained video DiT while the background stays locked."""

from .editor import Editor, EditRequest, EditResult
from .errors import (
    EditCancelled,
    InvalidRequest,
    KVLockError,
    MatteError,
    MediaError,
    MediaNotFoundError,
    ModelLoadError,
    OutputExistsError,
    SettingsError,
    UnreadableMediaError,
    UnsupportedDeviceError,
)
from .settings import EditSettings

__all__ = [
    "EditCancelled",
    "EditRequest",
    "EditResult",
    "EditSettings",
    "Editor",
    "InvalidRequest",
    "KVLockError",
    "MatteError",
    "MediaError",
    "MediaNotFoundError",
    "ModelLoadError",
    "OutputExistsError",
    "SettingsError",
    "UnreadableMediaError",
    "UnsupportedDeviceError",
]
__version__ = "0.1.0"
