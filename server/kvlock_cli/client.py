"""``kvlock submit`` / ``jobs`` / ``cancel`` / ``fetch``: headless and farm use of a server, on the bridge."""

from __future__ import annotations

import argparse
import json
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from kvlock.errors import InvalidRequest
from kvlock.media.decode import probe, read_frames
from kvlock.media.matte import MatteOptions, load_matte
from kvlock.media.timecode import parse_range, timecode_at
from kvlock_bridge import ArrayClip, Client, FileClip, Params, Progress, render
from kvlock_bridge.client import read_token
from kvlock_wire import DEFAULT_ADDRESS

from .media_flags import add_media_limit_arguments, media_limits_from_args
from .progress import Reporter
from .settings_flags import add_setting_arguments, prompt_for, settings_from_args


def add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=DEFAULT_ADDRESS, help="host:port or unix:/path")
    parser.add_argument("--token", help="bearer token (else KVLOCK_TOKEN, --token-file, or the local server's)")
    parser.add_argument("--token-file")
    parser.add_argument("--tls-ca", help="CA certificate for a TLS server")


def connect(args: argparse.Namespace) -> Client:
    ca = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    return Client(args.server, read_token(args.token, args.token_file), root_certificates=ca)


def add_submit(parser: argparse.ArgumentParser) -> None:
    add_connection(parser)
    parser.add_argument("--input", required=True)
    parser.add_argument("--matte", required=True)
    parser.add_argument("--prompt", help="what the masked subject should become (with --erase: the background)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", help="START:END or HH:MM:SS:FF-HH:MM:SS:FF")
    parser.add_argument(
        "--matte-frames",
        help="the matte file's own START:END or timecodes, when it is offset from the source (a slipped matte "
        "clip); as many frames as --frames, or one (default: the matte follows the source's frames)",
    )
    parser.add_argument("--path", action="store_true", help="let the server read the files (shared disk)")
    parser.add_argument("--job-id", help="your id for the job; resubmitting it does nothing new")
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--codec", default="ffv1", choices=["ffv1", "prores", "png", "h264", "exr"])
    parser.add_argument("--region", action="store_true", help="also return the edited region with alpha")
    parser.add_argument(
        "--plate", action="store_true", help="also return the clean plate (alpha 1 where seen, 0 where invented)"
    )
    parser.add_argument("--wait", action="store_true", help="follow the job and fetch the result into --out")
    parser.add_argument("--out", help="with --wait: where the result goes")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", action="store_true")
    add_media_limit_arguments(parser)
    add_setting_arguments(parser)


def _clips(args: argparse.Namespace, reporter: Reporter) -> tuple[object, object, Fraction, str]:
    limits = media_limits_from_args(args)
    source = probe(args.input, limits=limits)  # headers only: a file larger than the limits is refused here
    start, end = (
        parse_range(args.frames, source.frames, source.rate, source.timecode) if args.frames else (0, source.frames)
    )
    timecode = timecode_at(source.timecode, source.rate, start) or ""
    matte_info = probe(args.matte, limits=limits) if args.matte_frames or not args.path else None
    for warning in [*source.warnings, *(matte_info.warnings if matte_info else ())]:
        reporter.message(f"warning: {warning}")
    own = (
        parse_range(args.matte_frames, matte_info.frames, matte_info.rate, matte_info.timecode)
        if matte_info is not None and args.matte_frames
        else None
    )
    if args.path:
        src = FileClip("Source", str(Path(args.input).resolve()), start, end)
        return src, FileClip("Matte", str(Path(args.matte).resolve()), *(own or (None, None))), source.rate, timecode
    if source.transfer == "scene_linear":
        raise InvalidRequest(
            f"{source.path.name} is a scene-linear EXR plate: send it with --path so the server reads its float "
            "values itself (an upload carries 8/16-bit display-referred pixels only)"
        )
    frames = read_frames(source, start, end)[..., :3]
    matte, _ = load_matte(matte_info, source, start, end, MatteOptions(), own)
    gray = np.rint(matte * 65535.0).astype(np.uint16)
    return ArrayClip("Source", frames), ArrayClip("Matte", gray), source.rate, timecode


def run_submit(args: argparse.Namespace, reporter: Reporter) -> int:
    settings = settings_from_args(args)
    prompt = prompt_for(args.prompt, settings)
    source, matte, rate, timecode = _clips(args, reporter)
    params = Params(
        prompt=prompt,
        model=args.model,
        settings=settings,
        priority=args.priority,
        codec=args.codec,
        region=args.region,
        plate=args.plate,
        rate=rate,
        timecode=timecode,
    )
    with connect(args) as client:
        if not args.wait:
            result = client.submit(source, matte, params, job_id=args.job_id)
            reporter.result(
                f"{result.job_id} {result.state}" + (" (already submitted)" if result.duplicate else ""),
                job_id=result.job_id,
                state=result.state,
                duplicate=result.duplicate,
            )
            return 0
        if not args.out:
            raise ValueError("--wait needs --out")
        cancel = threading.Event()

        def show(update: Progress) -> None:
            if update.denoising is not None:
                reporter.step(update.denoising)

        try:
            done = render(
                client,
                source,
                matte,
                params,
                args.out,
                progress=show,
                cancel=cancel,
                job_id=args.job_id,
                overwrite=args.overwrite,
            )
        except KeyboardInterrupt:
            cancel.set()
            raise
        outputs = [str(take.output) for take in done.takes] or [str(done.output)]
        if done.cancelled:
            reporter.message(f"job {done.job_id}: {done.cancelled}")
        reporter.result(
            f"wrote {', '.join(outputs)} (job {done.job_id})",
            job_id=done.job_id,
            output=str(done.output),
            outputs=outputs,
            cancelled=done.cancelled,
            plate=str(done.plate) if done.plate else None,
        )
    return 0


def add_jobs(parser: argparse.ArgumentParser) -> None:
    add_connection(parser)
    parser.add_argument("--state", action="append", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--json", action="store_true")


def run_jobs(args: argparse.Namespace, reporter: Reporter) -> int:
    from kvlock_bridge.client import STATE_NAMES

    with connect(args) as client:
        jobs = client.jobs(args.state, args.limit)
    rows = [
        {
            "job_id": j.job_id,
            "state": STATE_NAMES[j.state],
            "model": j.model,
            "priority": j.priority,
            "frames": j.frames,
            "message": j.message,
            "fetched": j.fetched,
        }
        for j in jobs
    ]
    if args.json:
        reporter.out.write(json.dumps(rows, indent=2) + "\n")
    else:
        for r in rows:
            reporter.out.write(
                f"{r['job_id']:<34} {r['state']:<10} p{r['priority']:<3} {r['frames']:>5}f  {r['message']}\n"
            )
    return 0


def add_job_id(parser: argparse.ArgumentParser) -> None:
    add_connection(parser)
    parser.add_argument("job_id")
    parser.add_argument("--json", action="store_true")


def run_cancel(args: argparse.Namespace, reporter: Reporter) -> int:
    with connect(args) as client:
        state = client.cancel(args.job_id)
    reporter.result(f"{args.job_id} {state}", job_id=args.job_id, state=state)
    return 0


def run_fetch(args: argparse.Namespace, reporter: Reporter) -> int:
    with connect(args) as client:
        takes = client.fetch_takes(args.job_id, Path(args.out), "path" if args.shared_disk else "stream")
    lines = [f"{f'take {take} ' if take else ''}{kind}: {path}" for take, files in takes.items()
             for kind, path in files.items()]  # fmt: skip
    first = takes[min(takes)] if takes else {}
    reporter.result(
        "\n".join(lines),
        files={k: str(v) for k, v in first.items()},
        takes={str(take): {k: str(v) for k, v in files.items()} for take, files in takes.items()},
    )
    return 0
