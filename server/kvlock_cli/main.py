"""The ``kvlock`` command.

    kvlock edit     edit a clip range locally (engine in this process)
    kvlock models   list the models this machine can load (``kvlock models add PATH`` records a folder)
    kvlock loras    list the LoRAs this machine offers (``kvlock loras add DIR`` records a folder)
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
import contextlib
import sys

from . import calibrate, client, edit, loras, models, serve
from .exit_codes import exit_code_for
from .progress import Reporter, stdout_for_json_only


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvlock", description="KV-Lock: edit the masked subject of a video.")
    commands = parser.add_subparsers(dest="command", required=True)
    edit.add_arguments(commands.add_parser("edit", help="edit a clip range with a matte and a prompt"))
    models.add_arguments(commands.add_parser("models", help="list the models this machine can load"))
    loras.add_arguments(commands.add_parser("loras", help="list the LoRAs this machine offers"))
    calibrate.add_arguments(commands.add_parser("calibrate", help="fit a model's τ and store it beside it"))
    serve.add_arguments(commands.add_parser("serve", help="run the gRPC server"))
    client.add_submit(commands.add_parser("submit", help="send an edit to a server"))
    client.add_jobs(commands.add_parser("jobs", help="list a server's jobs"))
    client.add_job_id(commands.add_parser("cancel", help="cancel a job"))
    fetch = commands.add_parser("fetch", help="download a finished job's files")
    client.add_job_id(fetch)
    fetch.add_argument("--out", required=True, help="folder for the files")
    fetch.add_argument("--shared-disk", action="store_true", help="copy from the server's paths instead of streaming")
    return parser


COMMANDS = {
    "edit": edit.run_edit,
    "calibrate": calibrate.run_calibrate,
    "submit": client.run_submit,
    "jobs": client.run_jobs,
    "cancel": client.run_cancel,
    "fetch": client.run_fetch,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_lines = getattr(args, "json", False) and args.command in COMMANDS
    with stdout_for_json_only() if json_lines else contextlib.nullcontext(sys.stdout) as out:
        reporter = Reporter(json_lines=json_lines, stream=out)
        try:
            if args.command == "models":
                return models.run_models(args)
            if args.command == "loras":
                return loras.run_loras(args)
            if args.command == "serve":
                return serve.run_serve(args)
            return COMMANDS[args.command](args, reporter)
        except (Exception, KeyboardInterrupt) as exc:  # every failure leaves through one table of exit codes
            code = exit_code_for(exc)
            message = one_line(str(exc)) or type(exc).__name__
            if code == 130:
                kept = getattr(exc, "kept", 0)  # the takes an edit of several finished (and wrote) before it
                nothing = "interrupted; no output was written"
                message = f"interrupted; {kept} finished take(s) written" if kept else nothing
            reporter.error(message, code)
            return code


def one_line(text: str) -> str:
    """An error as one line (a decoder's message may hold newlines), at most 2000 characters."""
    line = " ".join(text.split())
    return line if len(line) <= 2000 else line[:2000] + "…"


if __name__ == "__main__":
    sys.exit(main())
