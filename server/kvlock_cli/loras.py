"""``kvlock loras`` (the LoRAs this machine offers) and ``kvlock loras add DIR`` (record a folder of LoRAs)."""

from __future__ import annotations

import argparse
import json

from kvlock.errors import KVLockError
from kvlock.loading.catalog import config_path, find_model
from kvlock.loading.lora_catalog import LoraCatalog, LoraEntry, add_lora_dir
from kvlock.loading.lora_check import check_loras_for_model
from kvlock.settings import LoraChoice

from .exit_codes import OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora-dir", action="append", default=[], help="extra folder of LoRAs (repeatable)")
    parser.add_argument("--model-dir", action="append", default=[], help="extra folder of models (repeatable)")
    parser.add_argument("--model", help="also say whether each LoRA fits this model (read from headers only)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    commands = parser.add_subparsers(dest="loras_command")
    add = commands.add_parser("add", help="check a folder of LoRAs (or one LoRA) and record it")
    add.add_argument("path", help="a folder of .safetensors LoRAs or LoRA folders, or one LoRA")
    add.add_argument("--json", action="store_true", help="print JSON")


def _size(size: int) -> str:
    return f"{size / 1024**2:.1f} MB" if size >= 1024**2 else f"{size / 1024:.0f} kB"


def _fits(entry: LoraEntry, model: str | None, location: str | None, catalog: LoraCatalog) -> str:
    """The entry's status, or for a usable LoRA whether it fits ``model``."""
    if model is None or location is None or not entry.ok:
        return entry.status
    try:
        check_loras_for_model(location, [LoraChoice(entry.name)], catalog)
    except KVLockError as exc:
        return f"does not fit {model}: {exc}"
    return f"ok, fits {model}"


def _line(entry: LoraEntry, status: str) -> str:
    sampling = ", ".join(
        part
        for part in (
            f"{entry.steps} steps" if entry.steps is not None else "",
            f"guidance {entry.guidance:g}" if entry.guidance is not None else "",
        )
        if part
    )
    about = f"rank {entry.rank}, {_size(entry.size)}" + (f", {sampling}" if sampling else "")
    return f"{entry.name}  {entry.family}  {entry.base}  ({about})  {entry.location}  [{status}]"


def run_loras(args: argparse.Namespace) -> int:
    if args.loras_command == "add":
        changed, entries = add_lora_dir(args.path)
        if args.json:
            print(json.dumps({"added": changed, "config": str(config_path()), "loras": [e.to_dict() for e in entries]}))
            return OK
        verb = f"recorded in {config_path()}" if changed else f"already in {config_path()}; nothing changed"
        print(f"{args.path}: {verb}")
        for e in entries:
            print("  " + _line(e, e.status))
        return OK
    catalog = LoraCatalog(tuple(args.lora_dir), tuple(args.model_dir))
    location = find_model(args.model, args.model_dir, allow_paths=True) if args.model else None
    entries = catalog.entries()
    statuses = [_fits(e, args.model, location, catalog) for e in entries]
    if args.json:
        print(json.dumps([e.to_dict() | {"status": s} for e, s in zip(entries, statuses, strict=True)], indent=2))
        return OK
    if not entries:
        print("no LoRAs: add a folder with `kvlock loras add DIR`, or put LoRAs in a model folder's loras/")
    for entry, status in zip(entries, statuses, strict=True):
        print(_line(entry, status))
    return OK
