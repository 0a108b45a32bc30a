"""The command line's exit codes, and the one table that maps the engine's errors onto them."""

from __future__ import annotations

from kvlock.errors import (
    EditCancelled,
    InvalidRequest,
    KVLockError,
    MediaNotFoundError,
    ModelLoadError,
    OutputExistsError,
    UnreadableMediaError,
    UnsupportedDeviceError,
)
from kvlock_bridge.errors import AuthenticationError, RequestRejectedError, ServerUnavailableError

OK = 0
FAILED = 1
USAGE = 2
NOT_FOUND = 3
UNREADABLE = 4
BAD_INPUT = 5
OUTPUT_EXISTS = 6
MODEL = 7
DEVICE = 8
SERVER_UNAVAILABLE = 9
BAD_TOKEN = 10
INTERRUPTED = 130

# most specific first
ERROR_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (MediaNotFoundError, NOT_FOUND),
    (UnreadableMediaError, UNREADABLE),
    (OutputExistsError, OUTPUT_EXISTS),
    (InvalidRequest, BAD_INPUT),
    (ModelLoadError, MODEL),
    (UnsupportedDeviceError, DEVICE),
    (ServerUnavailableError, SERVER_UNAVAILABLE),
    (AuthenticationError, BAD_TOKEN),
    (RequestRejectedError, BAD_INPUT),
    (EditCancelled, INTERRUPTED),
    (KeyboardInterrupt, INTERRUPTED),
    (FileNotFoundError, NOT_FOUND),
    (KVLockError, FAILED),
)


def exit_code_for(error: BaseException) -> int:
    for kind, code in ERROR_CODES:
        if isinstance(error, kind):
            return code
    return FAILED
