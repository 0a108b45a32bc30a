"""``kvlock calibrate``: fit a model's τ from calibration edits and store it beside the model.

    kvlock calibrate --model tiny                                   # the benchmark's calibration split
    kvlock calibrate --model wan-1.3b --clip shot1.mov matte1.mov "a red car" --clip shot2.mov ...

The rule is ``kvlock.calibration``'s: a start with the lock held firm, then rounds with the control live
until τ settles; τ = a quantile of the metric the control computes α from. User clips need no ground truth,
only a matte and an edit prompt; four to eight short shots like the ones you edit are enough (each costs one
edit at the model's steps per round: up to ``--rounds`` + 1 rounds). The result lands in the model folder's
``kvlock.json`` (other keys kept) and every later edit's trace names it as its τ's source.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from kvlock import Editor, InvalidRequest, ModelLoadError
from kvlock.calibration import ROUNDS, TAU_QUANTILE, CalibrationClip, calibration_record, fit_tau, write_calibration
from kvlock.loading.catalog import find_model
from kvlock.loading.load import TINY, TINY_FOLDER, builtin_models
from kvlock.media.decode import probe, read_frames
from kvlock.media.matte import MatteOptions, load_matte
from kvlock.settings import EditSettings, control_windows

from .acceleration import acceleration_from_args, add_acceleration_arguments
from .progress import Reporter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="'tiny', a diffusers folder, or a configured model's name")
    parser.add_argument("--model-dir", action="append", default=[], help="extra folder of models (repeatable)")
    parser.add_argument(
        "--clip",
        nargs=3,
        action="append",
        default=[],
        metavar=("SOURCE", "MATTE", "PROMPT"),
        help="a calibration edit: source media, its matte, the edit prompt (repeatable; 'tiny' needs none)",
    )
    parser.add_argument("--cases", type=int, default=24, help="calibration cases for 'tiny' (default 24)")
    parser.add_argument("--quantile", type=float, default=TAU_QUANTILE, help=f"default {TAU_QUANTILE}")
    parser.add_argument("--steps", type=int, help="denoising steps (the model's default)")
    parser.add_argument("--metric-window", type=int, help="W (default: in proportion to the steps; 10 at 50)")
    parser.add_argument("--kappa", type=int, help="κ (default: in proportion to the steps; 20 at 50)")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"in-regime rounds after the firm-lock start (default {ROUNDS})"
    )
    parser.add_argument("--dry-run", action="store_true", help="print τ without writing it")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
    add_acceleration_arguments(parser, "off")


def _model_folder(spec: str, model_dirs: list[str]) -> tuple[str, Path]:
    resolved = find_model(spec, model_dirs, allow_paths=True)
    if resolved in builtin_models():
        raise ModelLoadError(f"{spec!r} is built in memory and has no folder to store τ in; calibrate a folder")
    return resolved, TINY_FOLDER if resolved == TINY else Path(resolved)


def _user_clips(specs: list[list[str]]) -> list[CalibrationClip]:
    clips = []
    for index, (source_path, matte_path, prompt) in enumerate(specs):
        if not prompt.strip():
            raise InvalidRequest(f"--clip {source_path}: the edit prompt is empty")
        source = probe(source_path)
        matte, _ = load_matte(probe(matte_path), source, 0, source.frames, MatteOptions())
        clips.append(CalibrationClip(read_frames(source, 0, source.frames)[..., :3], matte, prompt, seed=index))
    return clips


def _world_clips(count: int) -> list[CalibrationClip]:
    from kvlock.world.cases import make_case  # the embedded model's own calibration split

    cases = [make_case("calibration", i) for i in range(count)]
    return [CalibrationClip(c.frames, c.matte, c.prompt, c.source_prompt, c.seed) for c in cases]


def run_calibrate(args: argparse.Namespace, reporter: Reporter) -> int:
    if not 0.0 < args.quantile < 1.0:
        raise InvalidRequest(f"--quantile must be in (0, 1), got {args.quantile}")
    if not 0 <= args.rounds <= 10:
        raise InvalidRequest(f"--rounds must be in [0, 10], got {args.rounds}")
    resolved, folder = _model_folder(args.model, args.model_dir)
    if not args.clip and resolved != TINY:
        raise InvalidRequest(
            "give calibration edits with --clip SOURCE MATTE PROMPT (four to eight short shots like yours); "
            "only 'tiny' has a built-in calibration split"
        )
    clips = _user_clips(args.clip) if args.clip else _world_clips(args.cases)
    if not clips:
        raise InvalidRequest("no calibration edits: --cases must be at least 1")
    editor = Editor.from_pretrained(resolved, args.device, args.dtype, acceleration_from_args(args))
    steps = args.steps or editor.model.defaults.steps
    window, kappa = control_windows(steps)
    base = EditSettings(steps=args.steps, metric_window=args.metric_window or window, kappa=args.kappa or kappa)
    reporter.event("started", model=editor.name, edits=len(clips), folder=str(folder))
    fit = fit_tau(
        editor,
        clips,
        base,
        args.quantile,
        args.rounds,
        threading.Event(),
        progress=lambda i, n: reporter.message(f"calibration edit {i + 1}/{len(clips)}: {n} h values so far"),
    )
    tau = fit.tau
    record = calibration_record(
        fit, args.quantile, base, steps, model=editor.name, clips="calibration split" if not args.clip else "user"
    )
    if args.dry_run:
        reporter.result(f"τ = {tau:.6g} ({record['tau_source']}); not written (--dry-run)", tau=tau)
        return 0
    path = write_calibration(folder, record)
    reporter.result(f"τ = {tau:.6g} written to {path} ({record['tau_source']})", tau=tau, path=str(path))
    return 0
