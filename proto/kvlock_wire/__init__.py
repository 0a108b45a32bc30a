"""Python stubs of the wire contract, generated at build time from ``proto/kvlock/v1/*.proto``.

The ``editor_pb2*`` modules here are written by ``proto/generate_stubs.py``; never edit them by hand.
This module itself holds the few facts both ends share beyond the messages.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PORT = 50051
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024


def default_state_dir() -> Path:
    """Where a local server keeps its store and token (``$XDG_DATA_HOME/kvlock/server``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kvlock" / "server"


def default_token_file() -> Path:
    return default_state_dir() / "token"
