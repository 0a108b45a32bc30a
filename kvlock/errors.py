"""Errors the engine raises, so callers (CLI, server) can map each kind to one response.

    KVLockError                    base of everything raised on purpose
    ├── InvalidRequest             the request cannot be edited as given (fix the input)
    │   ├── MatteError             the matte is empty, full, mis-sized, NaN or out of range
    │   ├── SettingsError          a setting is out of range or names an unknown method
    │   └── LoraError              a LoRA name that no configured folder lists
    │       └── LoraUnusableError  the LoRA named cannot be applied to this model: not a LoRA, made for another
    │                              base model, keys or ranks that do not match its transformer
    ├── MediaError                 a media file cannot be used
    │   ├── MediaNotFoundError     the file, folder or sequence does not exist
    │   └── UnreadableMediaError   no decoder for it, or it is damaged
    │       └── MediaTooLargeError its header claims frames or a range beyond the reader's limits
    ├── OutputExistsError          the output exists and overwriting was not allowed
    ├── ModelLoadError             the model folder is missing, incomplete or of an unknown family
    ├── UnsupportedDeviceError     the device or dtype cannot run here
    └── EditCancelled              the caller's cancel event was set; raised between steps

Every error carries a message a person can act on: what was wrong, what was expected.
"""

from __future__ import annotations


class KVLockError(Exception):
    """Base class for every error the engine raises deliberately."""


class InvalidRequest(KVLockError):
    """The request is malformed; nothing has been computed yet."""


class MatteError(InvalidRequest):
    """The matte does not describe a usable edit region for the source."""


class SettingsError(InvalidRequest):
    """A setting is out of its documented range."""


class LoraError(InvalidRequest):
    """A LoRA the request names cannot be found (or is named twice, or too many are asked)."""


class LoraUnusableError(LoraError):
    """The LoRA exists but cannot be applied to the model: the server's files, not the request, must change."""


class MediaError(KVLockError):
    """A media file cannot be used as given."""


class MediaNotFoundError(MediaError, FileNotFoundError):
    """The media path does not exist."""


class UnreadableMediaError(MediaError):
    """The media exists but cannot be decoded (unknown codec, damaged file, unsupported pixel format)."""


class MediaTooLargeError(UnreadableMediaError):
    """The file's header claims frames (or a range) larger than the reader's limits; nothing was decoded."""


class OutputExistsError(KVLockError, FileExistsError):
    """The output path exists and overwriting was not allowed."""


class ModelLoadError(KVLockError):
    """The model could not be loaded from the given place."""


class UnsupportedDeviceError(KVLockError):
    """The requested device or dtype is not available or not supported."""


class EditCancelled(KVLockError):
    """The edit stopped between denoising steps (or between takes) because the caller asked it to;
    ``kept``: how many takes had been finished and handed over before it stopped."""

    def __init__(self, step: int, total: int, kept: int = 0) -> None:
        takes = "; take 1 was finished and kept" if kept == 1 else f"; takes 1–{kept} were finished and kept"
        super().__init__(f"edit cancelled after step {step} of {total}" + (takes if kept else ""))
        self.step = step
        self.total = total
        self.kept = kept
