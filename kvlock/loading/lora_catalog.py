"""Which LoRAs this machine offers, found like models and named like them.

Folders of LoRAs come from ``--lora-dir`` options, the ``KVLOCK_LORA_DIRS`` environment variable (separated
like PATH) and ``lora_dirs = [...]`` in the config file that ``kvlock models add`` writes (``kvlock loras add
DIR`` records one there); a model folder's own ``loras/`` sub-folder is searched too (the embedded model's
included), so a LoRA made for one model can ship inside it. In a folder, every ``NAME.safetensors`` and every
sub-folder of a known LoRA layout (:mod:`.lora_file`) is one LoRA, named NAME. The first folder that offers a
name wins; a later LoRA of the same name is listed as shadowed and cannot be chosen.

Listing reads headers only (never weights), so a LoRA that cannot be used shows with the reason. A request
names LoRAs by these names only: a server never opens a path a client sends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import KVLockError, LoraError, LoraUnusableError, ModelLoadError
from ..settings import LORA_NAME, LORA_NAME_RULE
from .catalog import config_path, list_models
from .config_file import ConfigError, read_config, write_array
from .load import TINY_FOLDER
from .lora_file import LoraFile, looks_like_lora, lora_name, read_lora
from .lora_schedule import LoraSchedule, read_lora_schedule

ENVIRONMENT = "KVLOCK_LORA_DIRS"
CONFIG_KEY = "lora_dirs"
MODEL_SUBFOLDER = "loras"
# what a Wan LoRA's width says about the checkpoint it was made for (the released sizes)
WAN_WIDTHS = {1536: "Wan2.1 1.3B", 5120: "Wan2.1 14B or Wan2.2 A14B", 3072: "Wan2.2 TI2V-5B"}


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA as ``kvlock loras`` and ``ListLoras`` show it."""

    name: str
    location: str
    family: str  # the family its keys belong to ("wan", "cogvideox or ltx", "?")
    base: str  # what it was made for, as far as its file tells
    rank: int
    size: int  # bytes
    experts: int  # files: 1, or 2 for a Wan2.2 A14B LoRA with one per expert
    steps: int | None  # what its kvlock.json sets, if anything
    guidance: float | None
    status: str  # "ok" or why it cannot be used
    model: str = ""  # the model folder whose loras/ holds it ("" for a configured LoRA folder)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _config_lora_dirs(config: Path) -> list[str]:
    try:
        data = read_config(config)
    except ConfigError as exc:
        raise LoraError(str(exc)) from exc
    dirs = data.get(CONFIG_KEY, [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise LoraError(f"{CONFIG_KEY} in {config} must be a list of folder names, got {dirs!r:.120}")
    return dirs


def _unique(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def family_of(lora: LoraFile) -> tuple[str, str]:
    """The family a LoRA's keys belong to, and the checkpoint its sizes point at (for people; the check that
    counts is against the model itself, :func:`kvlock.loading.lora_fit.check_lora_fits`)."""
    keys = list(lora.parts[0].tensors)
    wan = any(".blocks." in k or k.startswith(("blocks.", "lora_unet_blocks_")) for k in keys) and not any(
        "transformer_blocks" in k for k in keys
    )
    if wan:
        widths = [
            t.shape[-1]
            for k, t in lora.parts[0].tensors.items()
            if any(q in k for q in ("attn1.to_q.lora_A", "self_attn.q.lora_down", "self_attn_q.lora_down"))
        ]
        base = WAN_WIDTHS.get(widths[0], f"a Wan model of width {widths[0]}") if widths else "a Wan model"
        return "wan", base + (" (both experts)" if len(lora.parts) > 1 else "")
    if any("transformer_blocks" in k for k in keys):
        return "cogvideox or ltx", "?"
    return "?", "?"


def _schedule(lora: LoraFile) -> LoraSchedule | None:
    return read_lora_schedule(lora.sidecar) if lora.sidecar is not None else None


def describe(path: Path, model: str = "") -> LoraEntry:
    """The listing's line for the LoRA at ``path``, with the reason it cannot be used if it cannot."""
    name = lora_name(path)
    try:
        if LORA_NAME.fullmatch(name) is None:
            raise LoraUnusableError(f"its name cannot be requested: rename it to {LORA_NAME_RULE}")
        lora = read_lora(path)
        schedule = _schedule(lora)
    except KVLockError as exc:
        return LoraEntry(name, str(path), "?", "?", 0, _size(path), 0, None, None, str(exc), model)
    family, base = family_of(lora)
    if schedule is not None and schedule.base:
        base = schedule.base
    if model:
        base = f"{base}; ships with {model}"
    steps = schedule.steps if schedule else None
    guidance = schedule.guidance if schedule else None
    return LoraEntry(name, str(path), family, base, lora.rank, lora.size, len(lora.parts), steps, guidance, "ok", model)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.glob("*.safetensors"))
    except OSError:
        return 0


def _loras_in(folder: Path) -> list[Path]:
    """``folder`` itself if it is one LoRA, else the LoRAs inside it."""
    if looks_like_lora(folder) or folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if looks_like_lora(p))


@dataclass(frozen=True)
class LoraCatalog:
    """Where an editor or a server finds LoRAs: folders given (``--lora-dir``), the environment's and the
    config file's, and the ``loras/`` of the model folders it offers (``model_dirs`` as :mod:`.catalog` reads
    them, the embedded model's, and ``model_folder``, the editor's own). Plain data, so it travels to workers."""

    extra_dirs: tuple[str, ...] = ()
    model_dirs: tuple[str, ...] = ()
    model_folder: str | None = None

    def lora_dirs(self) -> list[Path]:
        dirs = [Path(d).expanduser() for d in self.extra_dirs]
        dirs += [Path(d).expanduser() for d in os.environ.get(ENVIRONMENT, "").split(os.pathsep) if d]
        dirs += [Path(d).expanduser() for d in _config_lora_dirs(config_path())]
        return _unique(dirs)

    def model_folders(self) -> list[tuple[Path, str]]:
        """(folder, model name) of every model whose ``loras/`` is searched."""
        found = [(TINY_FOLDER, "tiny")]
        with contextlib.suppress(ModelLoadError):  # a broken model config is `kvlock models`' to report
            found += [(Path(e.location), e.name) for e in list_models(self.model_dirs) if e.location != "embedded"]
        if self.model_folder is not None:
            found.append((Path(self.model_folder), Path(self.model_folder).name))
        return [(folder, name) for folder, name in _unique_pairs(found)]

    def entries(self) -> list[LoraEntry]:
        """Every LoRA offered, in the order names are looked up; a repeated name is listed as shadowed."""
        candidates = [(p, "") for d in self.lora_dirs() for p in _loras_in(d)]
        candidates += [
            (p, model) for folder, model in self.model_folders() for p in _loras_in(folder / MODEL_SUBFOLDER)
        ]
        entries: list[LoraEntry] = []
        first: dict[str, str] = {}
        for path, model in candidates:
            name = lora_name(path)
            if name in first:
                entries.append(_shadowed(path, model, first[name]))
                continue
            first[name] = str(path)
            entries.append(describe(path, model))
        return entries

    def find(self, name: str) -> LoraFile:
        """The LoRA listed as ``name``; an unknown name is a :class:`LoraError` listing the names offered."""
        entries = self.entries()
        for entry in entries:
            if entry.name == name and not entry.status.startswith("shadowed"):
                if not entry.ok:
                    raise LoraUnusableError(f"LoRA {name} is listed but cannot be used: {entry.status}")
                return read_lora(Path(entry.location))
        offered = ", ".join(e.name for e in entries if e.ok) or "none (add a folder with `kvlock loras add DIR`)"
        raise LoraError(f"no LoRA named {name!r:.80} here; `kvlock loras` (ListLoras) lists those offered: {offered}")

    def schedule(self, lora: LoraFile) -> LoraSchedule | None:
        return _schedule(lora)


def _unique_pairs(pairs: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    seen: set[Path] = set()
    out = []
    for folder, name in pairs:
        key = folder.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            out.append((folder, name))
    return out


def _shadowed(path: Path, model: str, winner: str) -> LoraEntry:
    name = lora_name(path)
    status = f"shadowed: {winner} offers the name {name} first; rename one of them"
    return LoraEntry(name, str(path), "?", "?", 0, _size(path), 0, None, None, status, model)


def add_lora_dir(path: str | Path) -> tuple[bool, list[LoraEntry]]:
    """Check ``path`` (a folder of LoRAs, or one LoRA) and record it in the config's ``lora_dirs``.

    Returns (whether the config changed, the LoRAs found there). A folder in which no LoRA can be used is
    refused with the reasons, and the config is left as it was.
    """
    folder = Path(path).expanduser().resolve()
    entries = [describe(p) for p in _loras_in(folder)]
    if not any(e.ok for e in entries):
        reasons = "; ".join(f"{e.name}: {e.status}" for e in entries) or f"{folder} holds no .safetensors LoRA"
        raise LoraError(f"not added: {reasons}")
    config = config_path()
    recorded = _config_lora_dirs(config)
    if any(Path(d).expanduser().resolve() == folder for d in recorded):
        return False, entries
    try:
        write_array(config, CONFIG_KEY, [*recorded, str(folder)])
    except (ConfigError, OSError) as exc:
        raise LoraError(f"could not record {folder} in {config}: {exc}") from exc
    return True, entries
