"""Finding and loading a model: the embedded default (``"tiny"``) or a local diffusers folder, offline.

Nothing is ever fetched from a hub: a folder that is missing or incomplete gets an error naming what was
expected. A folder may carry ``kvlock.json`` with its native working size and sampling defaults
(height, width, frames, steps, guidance, text_length).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError, SettingsError, UnsupportedDeviceError
from ..families import ModelDefaults, ModelFamily, family_for_pipeline, supported_pipelines
from ..lock.token_mask import Compression
from ..settings import SCHEDULE_DEFAULTS, EditSettings, resolve_schedule
from .checkpoint import checkpoint_for, layout_problem, pipeline_problems, wrong_pipeline

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

TINY = "tiny"  # the project's own trained model, shipped inside the package
TINY_FOLDER = Path(__file__).resolve().parents[1] / "models" / "kvlock-tiny"


@dataclass(frozen=True)
class BuiltinModel:
    """A model made in memory rather than read from a folder (test models built from config)."""

    name: str
    description: str
    family: ModelFamily
    defaults: ModelDefaults
    build: Callable[[torch.dtype], Any]


BUILTIN_GROUP = "kvlock.models"  # the entry-point group through which installed packages offer models
_BUILTINS: dict[str, BuiltinModel] = {}
_DISCOVERED = False
_DISCOVERY = threading.RLock()  # one thread imports the offering packages; the others wait for it


def register_builtin(model: BuiltinModel) -> None:
    """Make ``model.name`` loadable and listed (tests and scripts may add their own)."""
    _BUILTINS[model.name] = model


def builtin_models() -> dict[str, BuiltinModel]:
    """Models made in memory: those registered, and those installed packages offer as entry points of the
    ``kvlock.models`` group (the project's own world offers ``tiny-random`` so; the engine imports no world)."""
    global _DISCOVERED
    with _DISCOVERY:
        if not _DISCOVERED:
            for point in entry_points(group=BUILTIN_GROUP):
                try:
                    model = point.load()
                except Exception as error:  # said, and tried again next time: never a model quietly missing
                    offered = f"the model {point.name!r} offered by {point.value}"
                    raise ModelLoadError(f"{offered} cannot load: {error}") from error
                _BUILTINS.setdefault(model.name, model)
            _DISCOVERED = True
    return dict(_BUILTINS)


@dataclass
class LoadedModel:
    """A pipeline in CPU memory and the device it is meant for (the editor places it)."""

    name: str
    family: ModelFamily
    pipe: Any
    defaults: ModelDefaults
    device: torch.device
    dtype: torch.dtype
    folder: Path | None = None  # the diffusers folder it was read from (None: made in memory)

    @property
    def compression(self) -> Compression:
        return self.family.geometry(self.pipe)[0]

    @property
    def spatial_multiple(self) -> int:
        return self.family.geometry(self.pipe)[1]


def resolve_device(device: str | torch.device, dtype: str | torch.dtype) -> tuple[torch.device, torch.dtype]:
    """Check that ``device`` exists here and ``dtype`` is one the engine runs, before loading anything."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UnsupportedDeviceError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UnsupportedDeviceError(f"device {device!r} requested but no CUDA GPU is visible; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UnsupportedDeviceError(f"cuda:{dev.index} requested but only {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UnsupportedDeviceError("device 'mps' requested but Metal is not available here")
    elif dev.type != "cpu":
        raise UnsupportedDeviceError(f"device type {dev.type!r} is not supported; use cpu, cuda or mps")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise UnsupportedDeviceError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise UnsupportedDeviceError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
    if dtype == torch.float16 and dev.type == "cpu":
        raise UnsupportedDeviceError("float16 is not supported on the CPU; use float32 or bfloat16")
    return dev, dtype


def _folder_defaults(path: Path, defaults: ModelDefaults) -> ModelDefaults:
    """The checkpoint's own defaults, with what the folder's ``kvlock.json`` sets over them."""
    extra = path / "kvlock.json"
    if extra.is_file():
        try:
            data = json.loads(extra.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{extra} is not valid JSON: {exc}") from exc
        known = {f.name for f in fields(ModelDefaults)}
        check_folder_values(extra, data)
        defaults = replace(defaults, **{k: v for k, v in data.items() if k in known})
    return _with_sigmas(defaults)


def check_folder_values(extra: Path, data: dict[str, Any]) -> None:
    """A ``kvlock.json``'s values (a model folder's or a LoRA's) held to the ranges a request's are, so a bad file
    fails when it is read, not mid-job."""
    tau = data.get("tau")
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, int | float) or not tau > 0):
        raise ModelLoadError(f"{extra}: tau must be a positive number, got {tau!r}; run kvlock calibrate again")
    sampling = {k: data[k] for k in ("steps", "guidance", "guidance_2") if data.get(k) is not None}
    try:
        EditSettings(**sampling)
    except SettingsError as exc:
        raise ModelLoadError(f"{extra}: {exc}") from exc
    _check_schedule(extra, data.get("schedule"))
    _check_sigmas(extra, data)


def _check_sigmas(extra: Path, data: dict[str, Any]) -> None:
    """A step-distilled model's noise levels: a list falling from at most 1 to above 0, one per step; its
    steps are then exactly these (a ``steps`` that disagrees is refused)."""
    sigmas = data.get("sigmas")
    if sigmas is None:
        return
    ok = isinstance(sigmas, list) and 0 < len(sigmas) <= 1000
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in sigmas)
    ok = ok and all(0.0 < v <= 1.0 for v in sigmas) and all(a > b for a, b in itertools.pairwise(sigmas))
    if not ok:
        raise ModelLoadError(f"{extra}: sigmas must be a list of 1–1000 noise levels falling within (0, 1]")
    if data.get("steps") is not None and data["steps"] != len(sigmas):
        raise ModelLoadError(f"{extra}: steps is {data['steps']} but sigmas lists {len(sigmas)} noise levels")


def _with_sigmas(defaults: ModelDefaults) -> ModelDefaults:
    """Listed noise levels as a tuple, and the steps they make."""
    if defaults.sigmas is None:
        return defaults
    sigmas = tuple(float(v) for v in defaults.sigmas)
    return replace(defaults, sigmas=sigmas, steps=len(sigmas))


def _check_schedule(extra: Path, schedule: Any) -> None:
    """A folder's schedule is held to the same ranges as a request's, so a bad file fails at load, not mid-job."""
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        raise ModelLoadError(f"{extra}: schedule must be an object of lock settings, got {type(schedule).__name__}")
    unknown = sorted(set(schedule) - set(SCHEDULE_DEFAULTS))
    if unknown:
        raise ModelLoadError(
            f"{extra}: schedule has unknown settings {', '.join(unknown)}; known: {', '.join(SCHEDULE_DEFAULTS)}"
        )
    try:
        resolve_schedule(EditSettings(**schedule))
    except (SettingsError, TypeError) as exc:
        raise ModelLoadError(f"{extra}: schedule is not valid: {exc}") from exc


def inspect_folder(path: Path) -> tuple[ModelFamily, dict[str, Any]]:
    """Check a diffusers folder's shape and files and return its family and model index, or say what is wrong.

    See :mod:`kvlock.loading.checkpoint` for what is recognised (wrong layouts, missing shards, tokenizer files …).
    """
    if not path.exists():
        raise ModelLoadError(f"model folder {path} does not exist; give a local diffusers folder or 'tiny'")
    if not path.is_dir():
        raise ModelLoadError(f"{path} is a file; give the folder that holds model_index.json")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(layout_problem(path))
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{index_file} is not valid JSON: {exc}") from exc
    class_name = index.get("_class_name", "")
    family = family_for_pipeline(class_name)
    advice = wrong_pipeline(class_name)
    if advice is not None:
        raise ModelLoadError(f"{path} {advice}")
    if family is None:
        raise ModelLoadError(
            f"{path} holds a {class_name or 'unnamed'} pipeline; supported: {', '.join(supported_pipelines())}"
        )
    problems = pipeline_problems(path, index)
    if problems:
        known = checkpoint_for(index, path)
        fix = (
            f"; fetch what is missing with: {known.command(str(path))} (it resumes)"
            if known
            else "; download the folder again"
        )
        raise ModelLoadError(f"{path} is incomplete: " + "; ".join(problems) + fix)
    return family, index


def load_model(
    source: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32
) -> LoadedModel:
    """Load ``"tiny"`` (the shipped model), a registered built-in (``"tiny-random"`` once ``kvlock.world`` is
    imported) or a local diffusers folder."""
    dev, dt = resolve_device(device, dtype)
    builtin = builtin_models().get(str(source))
    if builtin is not None:
        return LoadedModel(builtin.description, builtin.family, builtin.build(dt), builtin.defaults, dev, dt)
    if str(source) == TINY:
        loaded = load_model(TINY_FOLDER, dev, dt)
        loaded.name = "tiny (kvlock-tiny, the project's own 96×96 model)"
        return loaded
    path = Path(source).expanduser()
    family, _ = inspect_folder(path)
    pipe = family.load(path, dt)
    defaults = _folder_defaults(path, family.defaults_for(pipe))
    return LoadedModel(str(path), family, pipe, defaults, dev, dt, path)
