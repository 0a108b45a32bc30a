"""The ``kvlock`` command.

    kvlock edit     edit a clip range locally (engine in this process)
    kvlock models   list the models this machine can load (``kvlock models add PATH`` records a folder)
    kvlock calibrate  fit a model's τ from calibration edits and store it beside the model
    kvlock serve    run the gRPC server
    kvlock submit   send a job to a server (``--wait --out`` follows it and fetches the result)
    kvlock jobs     list a server's jobs
    kvlock cancel   cancel a job
    kvlock fetch    download a finished job's files

Exit codes (``exit_codes.py``): 0 done, 1 failed, 2 usage, 3 missing file, 4 unreadable media,
5 bad input (matte mismatch, settings, range, request refused), 6 output exists, 7 model cannot load,
8 device, 9 server unreachable, 10 bad token, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

from kvlock.catalog import add_model_dir, config_path, list_models

from . import cli_calibrate, cli_client, cli_edit, cli_serve
from .exit_codes import OK, exit_code_for
from .progress import Reporter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvlock", description="KV-Lock: edit the masked subject of a video.")
    commands = parser.add_subparsers(dest="command", required=True)
    cli_edit.add_arguments(commands.add_parser("edit", help="edit a clip range with a matte and a prompt"))
    models = commands.add_parser("models", help="list the models this machine can load")
    models.add_argument("--model-dir", action="append", default=[], help="extra folder of models (repeatable)")
    models.add_argument("--json", action="store_true", help="print JSON")
    models_commands = models.add_subparsers(dest="models_command")
    add = models_commands.add_parser("add", help="check a model folder (or a folder of models) and record it")
    add.add_argument("path", help="a diffusers model folder, or a folder whose sub-folders are models")
    add.add_argument("--json", action="store_true", help="print JSON")
    cli_calibrate.add_arguments(commands.add_parser("calibrate", help="fit a model's τ and store it beside it"))
    cli_serve.add_arguments(commands.add_parser("serve", help="run the gRPC server"))
    cli_client.add_submit(commands.add_parser("submit", help="send an edit to a server"))
    cli_client.add_jobs(commands.add_parser("jobs", help="list a server's jobs"))
    cli_client.add_job_id(commands.add_parser("cancel", help="cancel a job"))
    fetch = commands.add_parser("fetch", help="download a finished job's files")
    cli_client.add_job_id(fetch)
    fetch.add_argument("--out", required=True, help="folder for the files")
    fetch.add_argument("--shared-disk", action="store_true", help="copy from the server's paths instead of streaming")
    return parser


def run_models_add(args: argparse.Namespace) -> int:
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
        return run_models_add(args)
    entries = list_models(args.model_dir)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return OK
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.family:<4}  {e.location}  [{e.status}]")
    return OK


COMMANDS = {
    "edit": cli_edit.run_edit,
    "calibrate": cli_calibrate.run_calibrate,
    "submit": cli_client.run_submit,
    "jobs": cli_client.run_jobs,
    "cancel": cli_client.run_cancel,
    "fetch": cli_client.run_fetch,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = Reporter(json_lines=getattr(args, "json", False))
    try:
        if args.command == "models":
            return run_models(args)
        if args.command == "serve":
            return cli_serve.run_serve(args)
        return COMMANDS[args.command](args, reporter)
    except (Exception, KeyboardInterrupt) as exc:  # every failure leaves through one table of exit codes
        code = exit_code_for(exc)
        message = "interrupted; no output was written" if code == 130 else str(exc) or type(exc).__name__
        reporter.error(message, code)
        return code


if __name__ == "__main__":
    sys.exit(main())
