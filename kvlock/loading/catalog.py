"""Which models this machine can load: the embedded default and the folders a user configured.

Folders come from ``--model-dir`` options, the ``KVLOCK_MODEL_DIRS`` environment variable (separated like
PATH) and ``model_dirs = [...]`` in the config file (``$KVLOCK_CONFIG``, else
``$XDG_CONFIG_HOME/kvlock/config.toml``, else ``~/.config/kvlock/config.toml``). A configured folder is
either a diffusers model itself or a parent whose sub-folders are models. Listing never loads weights; it
checks each folder's files (:mod:`kvlock.loading.checkpoint`), so a broken download shows with what it lacks.

``kvlock models add PATH`` (:func:`add_model_dir`) checks a folder and records it in ``model_dirs``, keeping
everything else in the config file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .checkpoint import looks_like_model, original_release
from .config_file import ConfigError, read_config, write_array
from .load import TINY, builtin_models, inspect_folder


@dataclass(frozen=True)
class ModelEntry:
    name: str
    location: str
    family: str
    status: str  # "ok" or why it cannot be loaded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_path() -> Path:
    if os.environ.get("KVLOCK_CONFIG"):
        return Path(os.environ["KVLOCK_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kvlock" / "config.toml"


def configured_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    dirs = [Path(d).expanduser() for d in extra]
    dirs += [Path(d).expanduser() for d in os.environ.get("KVLOCK_MODEL_DIRS", "").split(os.pathsep) if d]
    dirs += [Path(d).expanduser() for d in _config_dirs(config_path())]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _config_dirs(config: Path) -> list[str]:
    try:
        data = read_config(config)
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from exc
    dirs = data.get("model_dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ModelLoadError(f"model_dirs in {config} must be a list of folder names, got {dirs!r}")
    return dirs


def _entry(folder: Path) -> ModelEntry:
    try:
        family, _ = inspect_folder(folder)
        return ModelEntry(folder.name, str(folder), family.name, "ok")
    except ModelLoadError as exc:
        return ModelEntry(folder.name, str(folder), "?", str(exc))


def list_models(extra_dirs: Iterable[str | Path] = ()) -> list[ModelEntry]:
    entries = [
        ModelEntry(TINY, "embedded", "wan", "ok (the project's own 96×96 model, trained on synthetic clips)"),
    ]
    entries += [
        ModelEntry(b.name, "embedded", b.family.name, "ok (random weights: for tests, not for results)")
        for b in builtin_models().values()
    ]
    for d in configured_dirs(extra_dirs):
        entries.extend(_entry(folder) for folder in _model_folders(d))
    return entries


def _model_folders(folder: Path) -> list[Path]:
    """``folder`` itself if it is (or tries to be) one model, else its sub-folders that try to be models."""
    if (folder / "model_index.json").is_file() or not folder.is_dir() or original_release(folder) is not None:
        return [folder]
    children = sorted(c for c in folder.iterdir() if looks_like_model(c))
    return children or [folder]  # nothing inside looks like a model: say what is wrong with the folder itself


def add_model_dir(path: str | Path) -> tuple[bool, list[ModelEntry]]:
    """Check ``path`` (a model folder, or a folder of models) and record it in the config's ``model_dirs``.

    Returns (whether the config changed, the models found there). A folder in which nothing loads is refused
    with the reason, and the config is left as it was; adding a folder already recorded changes nothing.
    """
    folder = Path(path).expanduser().resolve()
    entries = [_entry(f) for f in _model_folders(folder)]
    if not any(e.status == "ok" for e in entries):
        reasons = "; ".join(e.status for e in entries)
        raise ModelLoadError(f"not added: {reasons}")
    config = config_path()
    recorded = _config_dirs(config)
    if any(Path(d).expanduser().resolve() == folder for d in recorded):
        return False, entries
    try:
        write_array(config, "model_dirs", [*recorded, str(folder)])
    except (ConfigError, OSError) as exc:
        raise ModelLoadError(f"could not record {folder} in {config}: {exc}") from exc
    return True, entries


def find_model(name: str, extra_dirs: Iterable[str | Path] = (), allow_paths: bool = False) -> str:
    """What :func:`load_model` takes for ``name``: ``tiny`` or a built-in model, a model *named* in
    :func:`list_models`, or — only with ``allow_paths``, for a user on their own machine — a folder path.

    A server passes no ``allow_paths``, so a client can neither make it load an arbitrary folder nor learn
    which paths exist: every unknown name gets the same answer.
    """
    if name == TINY or name in builtin_models():
        return name
    if allow_paths and Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    entries = list_models(extra_dirs)
    for entry in entries:
        if entry.name == name and entry.location != "embedded":
            if not entry.status.startswith("ok"):
                raise ModelLoadError(f"model {name!r} is listed but cannot be loaded: {entry.status}")
            return entry.location
    shown = name if len(name) <= 80 else name[:80] + "…"
    if allow_paths:
        names = ", ".join(e.name for e in entries)
        raise ModelLoadError(f"no model folder or configured model named {shown!r}; available: {names}")
    names = ", ".join(e.name for e in entries if e.status.startswith("ok"))
    raise ModelLoadError(f"no model named {shown!r} on this server; ListModels names those it offers: {names}")
