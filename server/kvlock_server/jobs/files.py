"""The job store's files: private to the server's user, sized without following links, removed without
following them either."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    if not path.is_dir() or path.is_symlink():
        return 0
    total = 0
    for p in path.rglob("*"):
        info = p.lstat()
        if stat.S_ISREG(info.st_mode):
            total += info.st_size
    return total


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) readable by this user only; tighten it if it exists looser."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a regular file with mode 0600 before a library opens it by name."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def remove_any(entry: Path) -> None:
    """Remove a leftover entry of ``jobs/`` or ``incoming/`` (a link is removed, never followed)."""
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)
