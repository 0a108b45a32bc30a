"""``kvlock edit``: read a clip range and its matte, edit it, write the result, its trace and a plot.

Every check that can fail (input, matte, frame range, output name) runs before the model loads; the
result is written under a temporary name and moved into place, so Ctrl-C or a failure never leaves a
partial file under the final name, and the source is never written to.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from dataclasses import fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kvlock import Editor, EditRequest, EditSettings, InvalidRequest, OutputExistsError
from kvlock.catalog import resolve_model
from kvlock.colour import DEFAULT_CEILING, encoding_for
from kvlock.media.atomic import atomic_path, check_writable
from kvlock.media.decode import MediaInfo, probe, read_frames
from kvlock.media.matte import CHANNELS, MatteOptions, load_matte
from kvlock.media.output import OUTPUT_SUFFIXES, check_output, write_result
from kvlock.media.timecode import format_timecode, parse_range, parse_timecode
from kvlock.settings import validate_settings

from .cli_acceleration import acceleration_from_args, add_acceleration_arguments
from .progress import Reporter

SUFFIX_CODEC = {".mkv": "ffv1", ".mov": "prores", ".mp4": "h264", "": "png"}
INPUT_COLOUR = {"auto": None, "display": "display", "linear": "scene_linear"}

SETTING_HELP = {
    "negative_prompt": "prompt of the unconditional pass",
    "source_prompt": "prompt describing the source (used by the source pass)",
    "steps": "denoising steps (model default)",
    "guidance": "guidance scale ω0 (model default)",
    "strength": "1 starts from noise; lower keeps more of the source",
    "method": "kvlock, no_lock, fixed_alpha=<a>, static_cfg or paper_omega (default: the model's schedule, "
    "e.g. no_lock for tiny; else kvlock)",
    "metric_window": "W: steps in the hallucination metric's window",
    "kappa": "κ: control is active in the last κ steps",
    "tau": "τ: metric threshold",
    "b": "guidance ceiling factor",
    "geometry": "fit (whole frame) or crop_to_matte (box around the matte)",
    "feather": "outward feather of the composite, in pixels",
    "source_pass": "full (the method) or background (faster: the source pass sees only the background)",
    "source_refresh": "run the source pass every N-th locked step, reusing its K/V between (1: exact)",
}


def _setting_type(annotation: str) -> Any:
    base = annotation.replace(" | None", "").strip()
    return {"str": str, "int": int, "float": float, "bool": bool}[base]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("media")
    io.add_argument("--model", default="tiny", help="'tiny', a diffusers folder, or a configured model's name")
    io.add_argument("--model-dir", action="append", default=[], help="extra folder of models (repeatable)")
    io.add_argument("--input", required=True, help="movie, image sequence (folder, pattern or one file) or still")
    io.add_argument("--matte", required=True, help="matte movie, RGBA movie, image sequence or one still")
    io.add_argument("--prompt", required=True, help="what the masked subject should become")
    io.add_argument("--frames", help="START:END (end exclusive) or HH:MM:SS:FF-HH:MM:SS:FF; default: all")
    io.add_argument("--out", help="output file (.mkv ffv1, .mov prores, .mp4 h264) or folder (png; exr for EXR)")
    io.add_argument(
        "--codec", choices=sorted(OUTPUT_SUFFIXES), help="default: from --out's suffix, else exr for EXR, else ffv1"
    )
    io.add_argument("--region-out", help="also write the edited region as straight RGBA (.mkv, .mov or folder)")
    io.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the source)")
    io.add_argument("--fps", help="frame rate of image sequences, e.g. 24000/1001 (default 24)")
    io.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    io.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    io.add_argument("--json", action="store_true", help="machine-readable progress as JSON lines on stdout")
    colour = parser.add_argument_group("colour")
    colour.add_argument(
        "--input-colour",
        choices=sorted(INPUT_COLOUR),
        default="auto",
        help="what the source's values are: auto (EXR scene-linear, everything else display-referred), display, "
        "or linear (e.g. a linear-light 16-bit TIFF)",
    )
    colour.add_argument(
        "--highlight-ceiling",
        type=float,
        default=DEFAULT_CEILING,
        help=f"scene-linear value the model's white stands for (default {DEFAULT_CEILING:g}); brighter values "
        "inside the matte are clipped to it, outside it they are kept",
    )
    matte = parser.add_argument_group("matte")
    matte.add_argument("--matte-channel", choices=CHANNELS, default="auto", help="auto: alpha if any, else luma")
    matte.add_argument("--matte-threshold", type=float, help="binarise at this value in [0, 1]")
    matte.add_argument("--matte-invert", action="store_true")
    matte.add_argument("--matte-dilate", type=int, default=0, help="grow the matte by N pixels")
    matte.add_argument("--matte-resize", action="store_true", help="scale a matte of the same aspect ratio")
    add_setting_arguments(parser)
    add_acceleration_arguments(parser, compile_default="off")


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per EditSettings field (``--tau``, ``--no-foreground-only`` …), default: the engine's."""
    group = parser.add_argument_group("KV-Lock settings")
    for f in fields(EditSettings):
        flag = "--" + f.name.replace("_", "-")
        kind = _setting_type(str(f.type))
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=SETTING_HELP.get(f.name))
        else:
            group.add_argument(flag, type=kind, default=None, help=SETTING_HELP.get(f.name))


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user set on the command line (the rest: the model's schedule, then the engine's defaults)."""
    return {f.name: getattr(args, f.name) for f in fields(EditSettings) if getattr(args, f.name) is not None}


def _folder_codec(source: MediaInfo) -> str:
    return "exr" if source.codec == "exr" else "png"


def _codec_and_out(args: argparse.Namespace, source: MediaInfo) -> tuple[str, Path]:
    if args.out:
        out = Path(args.out).expanduser()
        implied = SUFFIX_CODEC.get(out.suffix.lower())
        if implied is None and (args.codec in ("png", "exr") or out.is_dir() or str(args.out).endswith(("/", "\\"))):
            implied = "png"  # a folder whose name has a dot (shot.v2/, plate.kvlock): said so, or already there
        if implied is None:
            raise InvalidRequest(
                f"--out {out}: use .mkv (ffv1), .mov (prores), .mp4 (h264) or a folder name (png, exr); for a "
                "folder whose name has a dot, end it with / or add --codec png (or exr)"
            )
        folder = implied == "png"
        codec = args.codec or (_folder_codec(source) if folder else implied)
        if codec != implied and not (folder and codec in ("png", "exr")):
            wanted = {v: k or "a folder name" for k, v in SUFFIX_CODEC.items()}.get(codec, "a folder name")
            raise InvalidRequest(f"--codec {codec} writes {wanted}, but --out is {out.name}")
        return codec, out
    codec = args.codec or ("exr" if source.codec == "exr" else "ffv1")
    suffix = OUTPUT_SUFFIXES[codec]
    stem = source.path.stem if source.kind != "sequence" else source.path.name.split(".")[0] or "sequence"
    return codec, source.path.parent / f"{stem}_kvlock{suffix}"


def _changed_values(a: np.ndarray, b: np.ndarray) -> int:
    """How many values differ in their stored bits (so NaN equals NaN, and -0.0 differs from 0.0)."""
    if np.issubdtype(a.dtype, np.floating):
        width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        a, b = np.ascontiguousarray(a).view(width), np.ascontiguousarray(b).view(width)
    return int(np.count_nonzero(a != b))


def _refuse_source(out: Path, *sources: MediaInfo) -> None:
    for info in sources:
        guarded = [info.path, *info.files]
        if any(out.resolve() == p.resolve() for p in guarded) or (
            info.kind == "sequence" and out.resolve() in {p.resolve().parent for p in info.files}
        ):
            raise OutputExistsError(f"refusing to write {out}: it is a source of this edit")


def _output_timecode(source: MediaInfo, start: int) -> str | None:
    if not source.timecode:
        return None
    try:
        number = parse_timecode(source.timecode, source.rate) + start
    except ValueError:
        return None
    return format_timecode(number, source.rate, drop_frame=";" in source.timecode)


class _Interrupt:
    """First Ctrl-C: stop after the current step; a second one aborts at once."""

    def __init__(self, reporter: Reporter) -> None:
        self.event = threading.Event()
        self.reporter = reporter
        self._previous: Any = None

    def __enter__(self) -> threading.Event:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self.event

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self.reporter.message("interrupted: stopping after the current step (Ctrl-C again to abort now)")


def run_edit(args: argparse.Namespace, reporter: Reporter) -> int:
    rate = Fraction(args.fps) if args.fps else None
    source = probe(args.input, rate) if rate else probe(args.input)
    matte_info = probe(args.matte, rate) if rate else probe(args.matte)
    try:
        start, end = (
            parse_range(args.frames, source.frames, source.rate, source.timecode) if args.frames else (0, source.frames)
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    codec, out = _codec_and_out(args, source)
    transfer = INPUT_COLOUR[args.input_colour] or source.transfer
    trace_json = out.with_name(out.name.removesuffix(out.suffix) + ".trace.json")
    trace_png = trace_json.with_suffix(".png")
    region_out = Path(args.region_out).expanduser() if args.region_out else None
    for target in (out, trace_json, trace_png, *([region_out] if region_out else [])):
        _refuse_source(target, source, matte_info)
        check_writable(target, args.overwrite)
    region_codec = None
    if region_out is not None:
        region_codec = SUFFIX_CODEC.get(region_out.suffix.lower(), "png")
        region_codec = _folder_codec(source) if region_codec == "png" else region_codec
        if region_codec == "h264":
            raise InvalidRequest("--region-out needs alpha: use .mkv, .mov or a folder, not .mp4")
    output_warnings = check_output(source, codec, source.has_alpha)
    settings = EditSettings(**given_settings(args))
    validate_settings(settings)  # fail on bad settings before any media is decoded or the model loads
    acceleration = acceleration_from_args(args)
    options = MatteOptions(
        args.matte_channel, args.matte_threshold, args.matte_invert, args.matte_dilate, args.matte_resize
    )
    matte, matte_warnings = load_matte(matte_info, source, start, end, options)
    frames = read_frames(source, start, end)  # alpha, when the plate has it, comes back untouched
    try:
        encoding = encoding_for(frames.dtype, transfer, args.highlight_ceiling)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    for warning in [*matte_warnings, *output_warnings]:
        reporter.message(f"warning: {warning}")

    editor = Editor.from_pretrained(resolve_model(args.model, args.model_dir), args.device, args.dtype, acceleration)
    reporter.event("started", model=editor.name, frames=[start, end], output=str(out), execution=editor.execution)
    if editor.execution["device"] != "cpu":
        x = editor.execution
        reporter.message(f"engine: {x['memory_reason']}; compile {x['compile']}; attention {x['attention']}")
    with _Interrupt(reporter) as cancel:
        result = editor.edit(
            EditRequest(frames, matte, args.prompt, settings, return_region=region_out is not None, encoding=encoding),
            progress=reporter.step,
            cancel=cancel,
        )
        for warning in result.warnings:
            reporter.message(f"warning: {warning}")
        timecode = _output_timecode(source, start)
        _, written = write_result(
            out, result.frames, source, start, codec, encoding, timecode=timecode, overwrite=args.overwrite
        )
        for warning in written:
            reporter.message(f"warning: {warning}")
        if region_out is not None and region_codec is not None:
            write_result(
                region_out,
                result.region,
                source,
                start,
                region_codec,
                encoding,
                timecode=timecode,
                overwrite=args.overwrite,
                region=True,
            )
        with atomic_path(trace_json, args.overwrite) as temp:
            data = result.trace.to_dict() | {
                "source": str(source.path),
                "frames": [start, end],
                "timecode": timecode,
                "output": str(out),
            }
            temp.write_text(json.dumps(data, indent=2))
        with atomic_path(trace_png, args.overwrite) as temp:
            result.trace.plot(temp)
    reporter.result(
        f"wrote {out} ({end - start} frames, {codec}, {result.trace.seconds:.1f} s); trace {trace_json}",
        output=str(out),
        trace=str(trace_json),
        plot=str(trace_png),
        frames=[start, end],
        seconds=result.trace.seconds,
        region=str(region_out) if region_out else None,
        warnings=result.warnings,
        edited_pixels=_changed_values(result.frames, frames),
    )
    return 0
