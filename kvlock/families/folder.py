"""Loading a family's diffusers pipeline from a local folder: offline, quietly, with one kind of error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Load without progress bars or advisory warnings: the engine prints nothing nobody asked for."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def load_pipeline(pipeline_class: Any, path: Path, dtype: torch.dtype | dict[str, torch.dtype]) -> Any:
    """``pipeline_class.from_pretrained`` on the CPU from ``path`` only; a broken folder is a ModelLoadError.

    Placement on the device is the editor's job (by its memory mode).
    """
    try:
        with quiet_loading():
            pipe = pipeline_class.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load a {pipeline_class.__name__} from {path}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe
