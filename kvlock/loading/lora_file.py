"""What a LoRA on disk is, read from its files' headers alone: its parts, tensor names, shapes, rank and size.

A LoRA is one ``.safetensors`` file (diffusers/PEFT keys ``transformer.….lora_A.weight``, or a format diffusers
converts, such as Wan's original ``diffusion_model.….lora_down.weight``), or a folder holding one: either
``pytorch_lora_weights.safetensors`` (what diffusers' ``save_lora_weights`` writes) or, for a model of two
experts (Wan2.2 A14B), ``high_noise_model.safetensors`` and ``low_noise_model.safetensors`` — the layout the
Wan2.2 LoRAs ship in, one file per expert. A LoRA may carry a ``kvlock.json`` (``NAME.kvlock.json`` beside a
file, ``kvlock.json`` inside a folder) with the sampling defaults it brings (:mod:`.lora_schedule`).

Reading a safetensors header costs a few kilobytes whatever the file's size (an 8-byte length, then JSON naming
every tensor's dtype, shape and byte range), so listing and checking LoRAs never loads their weights. A file
that is not safetensors (a pickled ``.ckpt``/``.pt``: diffusers reads LoRAs as safetensors only) or holds no
LoRA weights is said to be so, with what it looks like instead.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import LoraUnusableError

SUFFIX = ".safetensors"
SIDECAR = ".kvlock.json"
SINGLE_FILE = "pytorch_lora_weights.safetensors"
EXPERT_FILES = ("high_noise_model.safetensors", "low_noise_model.safetensors")  # Wan2.2 A14B: expert 0, 1
MAX_HEADER = 64 * 1024**2  # a header names tensors; one this large is not a LoRA's
# the names of LoRA weights in the formats diffusers reads (PEFT's, kohya's, Wan's original release's)
LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LoraPart:
    """One file of a LoRA and the expert it goes into (0: the model's transformer; 1: Wan2.2 A14B's
    low-noise ``transformer_2``)."""

    path: Path
    expert: int
    tensors: Mapping[str, TensorInfo]
    size: int

    @property
    def rank(self) -> int:
        """The largest rank among the part's LoRA matrices (the smaller side of each down/A weight)."""
        ranks = [min(t.shape) for k, t in self.tensors.items() if _is_down(k) and len(t.shape) >= 2]
        return max(ranks, default=0)


@dataclass(frozen=True)
class LoraFile:
    """A LoRA found on disk: its name (what requests use), where it is, and its parts."""

    name: str
    location: Path
    parts: tuple[LoraPart, ...]
    sidecar: Path | None

    @property
    def rank(self) -> int:
        return max(p.rank for p in self.parts)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def experts(self) -> tuple[int, ...]:
        return tuple(p.expert for p in self.parts)


def _is_down(key: str) -> bool:
    return any(marker in key for marker in ("lora_A", "lora_down", "lora.down"))


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """A safetensors file's tensors (name → dtype, shape) and its ``__metadata__``, without reading the tensors.

    The layout is safetensors' own: a little-endian u64 N, then N bytes of JSON; every tensor's byte range must
    lie inside the file, so a truncated download is told apart from a whole one.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER, size - 8):
                raise LoraUnusableError(f"{path.name} is not a safetensors file: {_looks_like(head)}")
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise LoraUnusableError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LoraUnusableError(f"{path.name} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise LoraUnusableError(f"{path.name} is not a safetensors file: its header is not a table of tensors")
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    data = size - 8 - length
    for name, entry in header.items():
        try:
            start, end = entry["data_offsets"]
            tensors[name] = TensorInfo(str(entry["dtype"]), tuple(int(n) for n in entry["shape"]))
        except (KeyError, TypeError, ValueError):
            raise LoraUnusableError(f"{path.name}: the header's entry for {name!r:.80} is damaged") from None
        if not 0 <= start <= end <= data:
            raise LoraUnusableError(
                f"{path.name} is cut short: {name!r:.80} lies past the end of the file; copy or download it again"
            )
    return tensors, {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def _looks_like(head: bytes) -> str:
    if head.startswith(b"PK"):
        return "it is a zip archive (a PyTorch .pt/.ckpt pickle?); diffusers loads LoRAs from .safetensors files"
    if head.startswith(b"\x80"):
        return "it is a Python pickle; diffusers loads LoRAs from .safetensors files"
    if head.startswith(b"GGUF"):
        return "it is a GGUF file; diffusers loads LoRAs from .safetensors files"
    return "its first bytes are no safetensors header"


def read_part(path: Path, expert: int) -> LoraPart:
    """One LoRA file, checked to hold LoRA weights (and nothing that is not)."""
    tensors, _ = read_header(path)
    if not tensors:
        raise LoraUnusableError(f"{path.name} holds no tensors")
    lora = [k for k in tensors if any(m in k for m in LORA_MARKERS)]
    if not lora:
        sample = ", ".join(sorted(tensors)[:3])
        raise LoraUnusableError(
            f"{path.name} is not a LoRA: none of its {len(tensors)} tensors is a LoRA weight (lora_A/lora_B or "
            f"lora_down/lora_up); it looks like a full checkpoint ({sample} …)"
        )
    return LoraPart(path, expert, tensors, path.stat().st_size)


def lora_name(path: Path) -> str:
    """The name a LoRA is listed and requested by: its file's name without ``.safetensors``, or its folder's."""
    return path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name


def looks_like_lora(path: Path) -> bool:
    """Whether ``path`` is meant as a LoRA (a safetensors file, or a folder of one of the known layouts)."""
    if path.is_file():
        return path.name.endswith(SUFFIX)
    return path.is_dir() and any((path / name).is_file() for name in (SINGLE_FILE, *EXPERT_FILES))


def read_lora(path: Path) -> LoraFile:
    """The LoRA at ``path`` (a file or a folder), from its headers; raise :class:`LoraUnusableError` saying why not."""
    name = lora_name(path)
    if path.is_file():
        if not path.name.endswith(SUFFIX):
            raise LoraUnusableError(f"{path.name} is not a .safetensors file; diffusers loads LoRAs from those")
        sidecar = path.with_name(name + SIDECAR)
        return LoraFile(name, path, (read_part(path, 0),), sidecar if sidecar.is_file() else None)
    if not path.is_dir():
        raise LoraUnusableError(f"{path} does not exist")
    sidecar = path / "kvlock.json"
    experts = [path / f for f in EXPERT_FILES]
    if any(p.is_file() for p in experts):
        missing = [p.name for p in experts if not p.is_file()]
        if missing:
            raise LoraUnusableError(
                f"{path.name} holds one expert's LoRA of two: {', '.join(missing)} is missing (a Wan2.2 A14B LoRA "
                "carries high_noise_model.safetensors and low_noise_model.safetensors)"
            )
        parts = tuple(read_part(p, i) for i, p in enumerate(experts))
    elif (path / SINGLE_FILE).is_file():
        parts = (read_part(path / SINGLE_FILE, 0),)
    else:
        raise LoraUnusableError(
            f"{path.name} is a folder without a LoRA: expected {SINGLE_FILE}, or {' and '.join(EXPERT_FILES)}"
        )
    return LoraFile(name, path, parts, sidecar if sidecar.is_file() else None)
