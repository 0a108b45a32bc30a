"""The ``kvlock`` command: ``kvlock edit`` and ``kvlock models``.

Exit codes (``exit_codes.py``): 0 done, 1 failed, 2 usage, 3 missing file, 4 unreadable media,
5 bad input (matte mismatch, settings, range), 6 output exists, 7 model cannot load, 8 device, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

from kvlock.catalog import list_models

from . import cli_edit
from .exit_codes import OK, exit_code_for
from .progress import Reporter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvlock", description="KV-Lock: edit the masked subject of a video.")
    commands = parser.add_subparsers(dest="command", required=True)
    edit = commands.add_parser("edit", help="edit a clip range with a matte and a prompt")
    cli_edit.add_arguments(edit)
    models = commands.add_parser("models", help="list the models this machine can load")
    models.add_argument("--model-dir", action="append", default=[], help="extra folder of models (repeatable)")
    models.add_argument("--json", action="store_true", help="print JSON")
    return parser


def run_models(args: argparse.Namespace) -> int:
    entries = list_models(args.model_dir)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return OK
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.family:<4}  {e.location}  [{e.status}]")
    return OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = Reporter(json_lines=getattr(args, "json", False))
    try:
        if args.command == "models":
            return run_models(args)
        return cli_edit.run_edit(args, reporter)
    except (Exception, KeyboardInterrupt) as exc:  # every failure leaves through one table of exit codes
        code = exit_code_for(exc)
        if code == 1 and not hasattr(exc, "__module__"):
            raise
        message = "interrupted; no output was written" if code == 130 else str(exc) or type(exc).__name__
        reporter.error(message, code)
        return code


if __name__ == "__main__":
    sys.exit(main())
