"""Which models this machine can load: the embedded default and the folders a user configured.

Folders come from ``--model-dir`` options, the ``KVLOCK_MODEL_DIRS`` environment variable (separated like
PATH) and ``model_dirs = [...]`` in the config file (``$KVLOCK_CONFIG``, else
``$XDG_CONFIG_HOME/kvlock/config.toml``, else ``~/.config/kvlock/config.toml``). A configured folder is
either a diffusers model itself or a parent whose sub-folders are models. Listing never loads weights.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .loading import TINY, builtin_models, inspect_folder


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
    config = config_path()
    if config.is_file():
        try:
            data = tomllib.loads(config.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ModelLoadError(f"config file {config} is not valid TOML: {exc}") from exc
        dirs += [Path(d).expanduser() for d in data.get("model_dirs", [])]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


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
        if (d / "model_index.json").is_file() or not d.is_dir():
            entries.append(_entry(d))
            continue
        children = sorted(c for c in d.iterdir() if (c / "model_index.json").is_file())
        if not children:
            entries.append(ModelEntry(d.name, str(d), "?", f"{d} holds no diffusers model folder"))
        entries.extend(_entry(c) for c in children)
    return entries


def resolve_model(spec: str, extra_dirs: Iterable[str | Path] = ()) -> str:
    """``tiny``, a folder path, or the name of a configured model → what :func:`load_model` takes."""
    if spec == TINY or spec in builtin_models():
        return spec
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    entries = list_models(extra_dirs)
    for entry in entries:
        if entry.name == spec and entry.location != "embedded":
            return entry.location
    names = ", ".join(e.name for e in entries)
    raise ModelLoadError(f"no model folder or configured model named {spec!r}; available: {names}")


def listed_model(name: str, extra_dirs: Iterable[str | Path] = ()) -> str:
    """What :func:`load_model` takes for a model *named* in :func:`list_models` — never a path.

    A server resolves clients' model names with this, so a client can neither make it load an arbitrary
    folder nor learn which paths exist: every unknown name gets the same answer.
    """
    if name == TINY or name in builtin_models():
        return name
    entries = list_models(extra_dirs)
    for entry in entries:
        if entry.name == name and entry.location != "embedded":
            if not entry.status.startswith("ok"):
                raise ModelLoadError(f"model {name!r} is listed but cannot be loaded: {entry.status}")
            return entry.location
    shown = name if len(name) <= 80 else name[:80] + "…"
    names = ", ".join(e.name for e in entries if e.status.startswith("ok"))
    raise ModelLoadError(f"no model named {shown!r} on this server; ListModels names those it offers: {names}")
