"""Writing outputs so a reader never sees a half file under the final name.

Everything is written beside the target under a hidden temporary name and moved into place with one
``os.replace`` once complete; an interrupted or failed write removes the temporary and leaves the final
name untouched (and an existing file there is only replaced when the caller allowed it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputExistsError


def check_writable(path: Path, overwrite: bool) -> None:
    """Fail before any work when the output exists (without ``overwrite``) or its folder is missing."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")


@contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path (same suffix, same folder) that becomes ``path`` when the block succeeds."""
    path = Path(path)
    check_writable(path, overwrite)
    temp = path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield temp
        if path.is_dir() and temp.is_dir():
            shutil.rmtree(path)
        os.replace(temp, path)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        raise
