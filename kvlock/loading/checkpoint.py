"""Checking a model folder on disk before anything loads: is it a whole diffusers pipeline, and if not, why.

The usual ways a download goes wrong, each recognised and named with what to do:

- the original (non-diffusers) Wan2.1 or Wan2.2 release (``Wan2.1_VAE.pth``, ``Wan2.2_VAE.pth``,
  ``models_t5_umt5-xxl-enc-bf16.pth``, ``high_noise_model/`` and ``low_noise_model/``, a ``WanModel``
  config), the original HunyuanVideo 1.5 release (``upsampler/``, a transformer per variant), or a
  single-file checkpoint (one ``.safetensors`` and no ``model_index.json``);
- an image-to-video variant where KV-Lock needs the text-to-video one;
- a folder one level too high (it holds the model folder, or is a Hugging Face cache ``models--…`` folder)
  or too low (a component such as ``transformer/`` of a pipeline);
- a component folder, its ``config.json``, weights, or safetensors shards listed in an ``*.index.json``
  missing; a shard cut short or a Git LFS pointer in place of the weights (a clone without git-lfs);
- tokenizer files missing; an ``hf download`` into the folder that did not finish (``.incomplete`` files).

Only file names, sizes and safetensors headers are read: checking a 14B model takes milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VOCABULARY_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json", "vocab.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
ORIGINAL_WAN_FILES = ("Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth")
LFS_POINTER = b"version https://git-lfs"


@dataclass(frozen=True)
class Checkpoint:
    """A supported checkpoint and where the standard Hugging Face tooling fetches it."""

    name: str
    repo: str
    pipeline: str
    include: tuple[str, ...] = ()  # --include patterns, where the repository holds more than the pipeline

    def command(self, folder: str) -> str:
        include = "".join(f' "{p}"' for p in self.include)
        return f"hf download {self.repo} --local-dir {folder}" + (f" --include{include}" if include else "")


WAN21_SMALL = Checkpoint("Wan2.1 T2V 1.3B", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "WanPipeline")
WAN21_LARGE = Checkpoint("Wan2.1 T2V 14B", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "WanPipeline")
WAN22_A14B = Checkpoint("Wan2.2 T2V A14B", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "WanPipeline")
WAN22_TI2V = Checkpoint("Wan2.2 TI2V 5B", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "WanPipeline")
HUNYUAN15_480 = Checkpoint(
    "HunyuanVideo 1.5 480p T2V", "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v", "HunyuanVideo15Pipeline"
)
HUNYUAN15_720 = Checkpoint(
    "HunyuanVideo 1.5 720p T2V", "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v", "HunyuanVideo15Pipeline"
)
# image-to-video pipelines of the supported families: the text-to-video checkpoint to take instead
TEXT_TO_VIDEO_INSTEAD = {
    "WanImageToVideoPipeline": WAN22_A14B,
    "HunyuanVideo15ImageToVideoPipeline": HUNYUAN15_480,
    "CogVideoXImageToVideoPipeline": Checkpoint("CogVideoX-5b", "zai-org/CogVideoX-5b", "CogVideoXPipeline"),
    "LTXImageToVideoPipeline": None,
}

CHECKPOINTS = (
    WAN21_SMALL,
    WAN21_LARGE,
    WAN22_A14B,
    WAN22_TI2V,
    HUNYUAN15_480,
    HUNYUAN15_720,
    Checkpoint("CogVideoX-2b", "zai-org/CogVideoX-2b", "CogVideoXPipeline"),
    Checkpoint("CogVideoX-5b", "zai-org/CogVideoX-5b", "CogVideoXPipeline"),
    Checkpoint(
        "LTX-Video 0.9",
        "Lightricks/LTX-Video",
        "LTXPipeline",
        ("model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*", "transformer/*", "vae/*"),
    ),
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be loaded (missing, an LFS pointer, cut short), or None if it looks whole."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if head[:8] == LFS_POINTER[:8] and handle.read(len(LFS_POINTER) - 8) == LFS_POINTER[8:]:
            return f"{path.name} is a Git LFS pointer, not the weights (cloned without git-lfs; use hf download)"
        if len(head) < 8:
            return f"{path.name} is empty or cut short ({size} bytes)"
        length = int.from_bytes(head, "little")
        if 8 + length > size:
            return f"{path.name} is cut short ({size} bytes; its header alone needs {8 + length})"
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{path.name} is not a safetensors file (unreadable header)"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    need = 8 + length + max(ends, default=0)
    if need > size:
        return f"{path.name} is cut short ({size:,} of {need:,} bytes): the download did not finish"
    return None


def _weights_problems(folder: Path) -> list[str]:
    indexes = sorted(folder.glob("*.index.json"))
    if indexes:
        problems = []
        for index in indexes:
            data = _read_json(index)
            shards = sorted(set((data or {}).get("weight_map", {}).values()))
            if not shards:
                problems.append(f"{index.name} lists no shards")
            for shard in shards:
                problem = safetensors_problem(folder / shard) if shard.endswith(".safetensors") else None
                if problem is None and not (folder / shard).is_file():
                    problem = f"{shard} is missing"
                if problem is not None:
                    problems.append(f"{problem} (listed in {index.name})")
        return problems
    weights = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        return ["no weights (no .safetensors or .bin file)"]
    return [p for p in (safetensors_problem(w) for w in weights if w.suffix == ".safetensors") if p]


# tokenizers that need no vocabulary file (ByT5 maps bytes to ids by arithmetic)
VOCABULARY_FREE = ("ByT5Tokenizer",)


def _component_problems(folder: Path, library: str, class_name: str) -> list[str]:
    """What a component folder lacks, judged by the role its class plays in the pipeline."""
    if class_name.endswith("Scheduler") or (folder / "scheduler_config.json").is_file():
        return [] if (folder / "scheduler_config.json").is_file() else ["scheduler_config.json missing"]
    if class_name.endswith("Guidance") or (folder / "guider_config.json").is_file():  # a guider holds no weights
        return [] if (folder / "guider_config.json").is_file() else ["guider_config.json missing"]
    if "Token" in class_name or (folder / "tokenizer_config.json").is_file():
        problems = [] if (folder / "tokenizer_config.json").is_file() else ["tokenizer_config.json missing"]
        vocabulary = any((folder / name).is_file() for name in VOCABULARY_FILES)
        if not vocabulary and class_name not in VOCABULARY_FREE:
            problems.append("no vocabulary file (one of " + ", ".join(VOCABULARY_FILES) + ")")
        return problems
    problems = [] if (folder / "config.json").is_file() else ["config.json missing"]
    return problems + _weights_problems(folder)


def _unfinished_download(path: Path) -> list[str]:
    partial = list((path / ".cache" / "huggingface").rglob("*.incomplete")) if (path / ".cache").is_dir() else []
    if not partial:
        return []
    count = len(partial)
    return [f"an hf download into this folder did not finish ({count} .incomplete file(s)); run it again to resume"]


def checkpoint_for(index: dict[str, Any], path: Path) -> Checkpoint | None:
    """Which supported checkpoint a pipeline folder most likely is (by its class, components and size)."""
    class_name = index.get("_class_name", "")
    config = _read_json(path / "transformer" / "config.json") or {}
    if class_name == "WanPipeline":
        second = index.get("transformer_2")
        if index.get("boundary_ratio") is not None or (isinstance(second, list) and second[0] is not None):
            return WAN22_A14B
        if index.get("expand_timesteps"):
            return WAN22_TI2V
        big = config.get("num_layers", 0) >= 40 or config.get("num_attention_heads", 0) >= 40
        return WAN21_LARGE if big else WAN21_SMALL
    if class_name == "HunyuanVideo15Pipeline":
        return HUNYUAN15_720 if config.get("target_size", 640) >= 960 else HUNYUAN15_480
    candidates = [c for c in CHECKPOINTS if c.pipeline == class_name]
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    big = config.get("num_layers", 0) >= 40 or config.get("num_attention_heads", 0) >= 40
    return candidates[1 if big else 0]


def wrong_pipeline(class_name: str) -> str | None:
    """What to take instead of an image-to-video pipeline of a supported family (None: not one of those)."""
    if class_name not in TEXT_TO_VIDEO_INSTEAD:
        return None
    instead = TEXT_TO_VIDEO_INSTEAD[class_name]
    fetch = f"; fetch one with: {instead.command('FOLDER')}" if instead else ""
    return f"is an image-to-video model ({class_name}); KV-Lock edits with the text-to-video model of a family{fetch}"


def pipeline_problems(path: Path, index: dict[str, Any]) -> list[str]:
    """Every problem of a folder that has a model_index.json, as 'component: problem' lines."""
    problems = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        if not (path / name).is_dir():
            problems.append(f"missing component folder {name}/")
            continue
        problems += [f"{name}/: {p}" for p in _component_problems(path / name, str(spec[0]), str(spec[1] or ""))]
    return problems + _unfinished_download(path)


def original_release(path: Path) -> str | None:
    """Why a folder is a model's original (non-diffusers) release of Wan2.2 or HunyuanVideo 1.5, and which
    ``-Diffusers`` repository to download instead; None if it is neither."""
    if (path / "high_noise_model").is_dir() and (path / "low_noise_model").is_dir():
        config = _read_json(path / "high_noise_model" / "config.json") or {}
        if config.get("model_type") == "i2v":
            return (
                f"{path} is the original Wan2.2 image-to-video A14B release; KV-Lock edits with the text-to-video "
                f"model: {WAN22_A14B.command('DIR')}"
            )
        return _original(path, "Wan2.2 A14B", "high_noise_model/, low_noise_model/", WAN22_A14B)
    if (path / "Wan2.2_VAE.pth").is_file():
        return _original(path, "Wan2.2 TI2V-5B", "Wan2.2_VAE.pth", WAN22_TI2V)
    if (path / "upsampler").is_dir() or (path / "transformer" / "480p_t2v").is_dir():
        return _original(path, "HunyuanVideo 1.5", "a transformer per variant, upsampler/", HUNYUAN15_480)
    return None


def _original(path: Path, model: str, found: str, instead: Checkpoint) -> str:
    return (
        f"{path} is the original {model} release layout ({found}), which diffusers cannot load; download the "
        f"Diffusers version instead: {instead.command('DIR')}"
    )


def layout_problem(path: Path) -> str:
    """Why a folder without model_index.json is not a pipeline, and what to give instead."""
    original = original_release(path)
    if original is not None:
        return original
    original_wan = [n for n in ORIGINAL_WAN_FILES if (path / n).is_file()]
    config = _read_json(path / "config.json") or {}
    if original_wan or config.get("_class_name") == "WanModel":
        size = "14B" if config.get("dim", 0) >= 5120 else "1.3B"
        found = ", ".join(original_wan) or "a WanModel config.json"
        return (
            f"{path} is the original Wan2.1 release layout ({found}), which diffusers cannot load; download the "
            f"Diffusers version instead: hf download Wan-AI/Wan2.1-T2V-{size}-Diffusers --local-dir DIR"
        )
    if path.name.startswith("models--") and (path / "snapshots").is_dir():
        snapshots = sorted(p for p in (path / "snapshots").iterdir() if (p / "model_index.json").is_file())
        where = str(snapshots[-1]) if snapshots else f"{path / 'snapshots'}/<revision>"
        return f"{path} is a Hugging Face cache folder, one level too high: the model is {where}"
    children = sorted(c.name for c in path.iterdir() if c.is_dir() and (c / "model_index.json").is_file())
    if children:
        return (
            f"{path} holds model folder(s) {', '.join(children)} one level down: give one of them "
            "(a folder of models belongs in model_dirs: kvlock models add takes either)"
        )
    if (path.parent / "model_index.json").is_file():
        return f"{path} is the {path.name}/ component of the pipeline {path.parent}: give {path.parent} instead"
    single = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".ckpt", ".pth"))
    if single:
        return (
            f"{path} holds single-file checkpoint(s) ({', '.join(single[:3])}) and no model_index.json; KV-Lock "
            "loads the diffusers layout (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, "
            "scheduler/): see the README's list of checkpoints and their hf download commands"
        )
    return (
        f"{path} has no model_index.json; expected a diffusers pipeline folder "
        "(model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
    )


def looks_like_model(path: Path) -> bool:
    """Whether a folder inside a folder of models is meant to be a model (so a broken one is listed, not hidden)."""
    if path.name.startswith(".") or not path.is_dir():
        return False
    if path.name.startswith("models--") or (path / "model_index.json").is_file() or (path / "config.json").is_file():
        return True
    return any(p.suffix in (".safetensors", ".ckpt", ".pth") for p in path.iterdir())
