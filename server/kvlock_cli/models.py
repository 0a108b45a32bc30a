"""``kvlock models`` (the models this machine can load) and ``kvlock models add PATH`` (record a folder)."""

from __future__ import annotations

import argparse
import json

from kvlock.loading.catalog import add_model_dir, config_path, list_models

from .exit_codes import OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", action="append", default=[], help="extra folder of models (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    commands = parser.add_subparsers(dest="models_command")
    add = commands.add_parser("add", help="check a model folder (or a folder of models) and record it")
    add.add_argument("path", help="a diffusers model folder, or a folder whose sub-folders are models")
    add.add_argument("--json", action="store_true", help="print JSON")


def run_add(args: argparse.Namespace) -> int:
    changed, entries = add_model_dir(args.path)
    config = config_path()
    if args.json:
        print(json.dumps({"added": changed, "config": str(config), "models": [e.to_dict() for e in entries]}))
        return OK
    verb = f"recorded in {config}" if changed else f"already in {config}; nothing changed"
    print(f"{args.path}: {verb}")
    for e in entries:
        print(f"  {e.name}  {e.family}  [{e.status}]")
    return OK


def run_models(args: argparse.Namespace) -> int:
    if args.models_command == "add":
        return run_add(args)
    entries = list_models(args.model_dir)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return OK
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.family:<4}  {e.location}  [{e.status}]")
    return OK
