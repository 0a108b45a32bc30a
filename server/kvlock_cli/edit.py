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
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kvlock import Editor, EditRequest, EditResult, InvalidRequest, OutputExistsError
from kvlock.loading.catalog import find_model
from kvlock.loading.lora_catalog import LoraCatalog
from kvlock.loading.lora_check import check_loras_for_model
from kvlock.media.atomic import atomic_path, check_writable
from kvlock.media.colour import DEFAULT_CEILING, encoding_for
from kvlock.media.decode import MediaInfo, probe, read_frames
from kvlock.media.matte import CHANNELS, MatteOptions, load_matte
from kvlock.media.output import OUTPUT_SUFFIXES, check_output, write_result
from kvlock.media.timecode import parse_range, timecode_at
from kvlock.plate import check_erasable

from .acceleration import acceleration_from_args, add_acceleration_arguments
from .media_flags import add_media_limit_arguments, media_limits_from_args
from .progress import Reporter
from .settings_flags import add_setting_arguments, prompt_for, settings_from_args

SUFFIX_CODEC = {".mkv": "ffv1", ".mov": "prores", ".mp4": "h264", "": "png"}
INPUT_COLOUR = {"auto": None, "display": "display", "linear": "scene_linear"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("media")
    io.add_argument("--model", default="tiny", help="'tiny', a diffusers folder, or a configured model's name")
    io.add_argument("--model-dir", action="append", default=[], help="extra folder of models (repeatable)")
    io.add_argument("--lora-dir", action="append", default=[], help="extra folder of LoRAs (repeatable)")
    io.add_argument("--input", required=True, help="movie, image sequence (folder, pattern or one file) or still")
    io.add_argument("--matte", required=True, help="matte movie, RGBA movie, image sequence or one still")
    io.add_argument(
        "--prompt", help="what the masked subject should become (with --erase, optional: what is left behind it)"
    )
    io.add_argument("--frames", help="START:END (end exclusive) or HH:MM:SS:FF-HH:MM:SS:FF; default: all")
    io.add_argument("--out", help="output file (.mkv ffv1, .mov prores, .mp4 h264) or folder (png; exr for EXR)")
    io.add_argument(
        "--codec", choices=sorted(OUTPUT_SUFFIXES), help="default: from --out's suffix, else exr for EXR, else ffv1"
    )
    io.add_argument("--region-out", help="also write the edited region as straight RGBA (.mkv, .mov or folder)")
    io.add_argument(
        "--plate-out",
        help="also write the clean plate (the subject taken out) as RGBA, alpha 1 where another frame showed the "
        "background and 0 where it was invented (.mkv, .mov or folder)",
    )
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
    add_media_limit_arguments(parser)
    add_setting_arguments(parser)
    add_acceleration_arguments(parser, compile_default="off")


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


class _Interrupt:
    """First Ctrl-C: stop after the current step; a second one aborts at once.

    The handler itself only sets flags: it runs between two bytecodes of the main thread, which may be in
    the middle of writing a progress line to the same stream, and a buffered stream refuses to be entered
    again from a signal handler (``RuntimeError: reentrant call``). The notice is written by a thread of
    its own, which takes the stream's lock like any other writer.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.event = threading.Event()
        self.reporter = reporter
        self._wake = threading.Event()
        self._closed = False
        self._previous: Any = None
        self._notice = threading.Thread(target=self._announce, name="kvlock-interrupt", daemon=True)

    def __enter__(self) -> threading.Event:
        self._notice.start()
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self.event

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)
        self._closed = not self.event.is_set()
        self._wake.set()
        self._notice.join(timeout=5)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self._wake.set()

    def _announce(self) -> None:
        self._wake.wait()
        if not self._closed:
            self.reporter.message("interrupted: stopping after the current step (Ctrl-C again to abort now)")


@dataclass(frozen=True)
class Outputs:
    """Every file an edit writes, named and checked before any media is decoded or the model loads."""

    codec: str
    video: Path
    trace_json: Path
    trace_png: Path
    region: Path | None
    region_codec: str | None
    plate: Path | None = None
    plate_codec: str | None = None


def _alpha_codec(path: Path, flag: str, source: MediaInfo) -> str:
    """The codec of a companion with alpha (--region-out, --plate-out) from its name: .mkv, .mov or a folder."""
    codec = SUFFIX_CODEC.get(path.suffix.lower(), "png")
    codec = _folder_codec(source) if codec == "png" else codec
    if codec == "h264":
        raise InvalidRequest(f"{flag} needs alpha: use .mkv, .mov or a folder, not .mp4")
    return codec


def take_path(path: Path, take: int, takes: int) -> Path:
    """Take ``take`` of ``takes``'s file for ``path``: ``shot.take2.mkv`` (a folder: ``shot.take2``)."""
    if takes <= 1:
        return path
    suffix = path.suffix if path.suffix.lower() in SUFFIX_CODEC else ""
    stem = path.name[: -len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}.take{take}{suffix}")


def plan_outputs(args: argparse.Namespace, source: MediaInfo, matte: MediaInfo, takes: int = 1) -> list[Outputs]:
    """Every take's files (``NAME.take1.mkv`` … beside each other, each with its trace), checked. The clean
    plate (``--plate-out``) is the source's, the same for every take: written once, with the first."""
    codec, first = _codec_and_out(args, source)
    region_base = Path(args.region_out).expanduser() if args.region_out else None
    plate = Path(args.plate_out).expanduser() if args.plate_out else None
    region_codec = _alpha_codec(region_base, "--region-out", source) if region_base else None
    plate_codec = _alpha_codec(plate, "--plate-out", source) if plate else None
    plans = []
    for take in range(1, takes + 1):
        out = take_path(first, take, takes)
        trace_json = out.with_name(out.name.removesuffix(out.suffix) + ".trace.json")
        region = take_path(region_base, take, takes) if region_base else None
        own_plate, own_codec = (plate, plate_codec) if take == 1 else (None, None)
        plans.append(
            Outputs(codec, out, trace_json, trace_json.with_suffix(".png"), region, region_codec, own_plate, own_codec)
        )
    named = [p for o in plans for p in (o.video, o.trace_json, o.trace_png, o.region, o.plate) if p is not None]
    if len({p.resolve() for p in named}) < len(named):
        raise InvalidRequest("two outputs of this edit have the same name: give --out, --region-out, --plate-out apart")
    for target in named:
        _refuse_source(target, source, matte)
        check_writable(target, args.overwrite)
    return plans


def write_outputs(
    outputs: Outputs, result: EditResult, source: MediaInfo, span: tuple[int, int], encoding: Any, overwrite: bool
) -> list[str]:
    """The result, its region, its trace and plot, each under a temporary name first; the warnings writing gave."""
    start, end = span
    timecode = timecode_at(source.timecode, source.rate, start)
    _, warnings = write_result(
        outputs.video, result.frames, source, start, outputs.codec, encoding, timecode=timecode, overwrite=overwrite
    )
    if outputs.region is not None and outputs.region_codec is not None:
        write_result(
            outputs.region,
            result.region,
            source,
            start,
            outputs.region_codec,
            encoding,
            timecode=timecode,
            overwrite=overwrite,
            region=True,
        )
    if outputs.plate is not None and outputs.plate_codec is not None and result.plate is not None:
        write_result(
            outputs.plate,
            result.plate.rgba(),
            source,
            start,
            outputs.plate_codec,
            encoding,
            timecode=timecode,
            overwrite=overwrite,
            region=True,
        )
    with atomic_path(outputs.trace_json, overwrite) as temp:
        about = {"source": str(source.path), "frames": [start, end], "timecode": timecode, "output": str(outputs.video)}
        temp.write_text(json.dumps(result.trace.to_dict() | about, indent=2))
    with atomic_path(outputs.trace_png, overwrite) as temp:
        result.trace.plot(temp)
    return warnings


def run_edit(args: argparse.Namespace, reporter: Reporter) -> int:
    rate = Fraction(args.fps) if args.fps else None
    limits = media_limits_from_args(args)
    source = probe(args.input, rate, limits)  # headers only: a file larger than the limits is refused here
    matte_info = probe(args.matte, rate, limits)
    try:
        start, end = (
            parse_range(args.frames, source.frames, source.rate, source.timecode) if args.frames else (0, source.frames)
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    settings = settings_from_args(args)  # a bad setting fails before any media is decoded or the model loads
    prompt = prompt_for(args.prompt, settings)
    plans = plan_outputs(args, source, matte_info, settings.takes)
    transfer = INPUT_COLOUR[args.input_colour] or source.transfer
    output_warnings = check_output(source, plans[0].codec, source.has_alpha)
    acceleration = acceleration_from_args(args)
    options = MatteOptions(
        args.matte_channel, args.matte_threshold, args.matte_invert, args.matte_dilate, args.matte_resize
    )
    matte, matte_warnings = load_matte(matte_info, source, start, end, options)
    if settings.erase:
        check_erasable(matte)  # a frame with no background in sight: said before the model loads
    frames = read_frames(source, start, end)  # alpha, when the plate has it, comes back untouched
    try:
        encoding = encoding_for(frames.dtype, transfer, args.highlight_ceiling)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    for warning in [*source.warnings, *matte_info.warnings, *matte_warnings, *output_warnings]:
        reporter.message(f"warning: {warning}")

    model = find_model(args.model, args.model_dir, allow_paths=True)
    catalog = LoraCatalog(tuple(args.lora_dir), tuple(args.model_dir), model if Path(model).is_dir() else None)
    check_loras_for_model(model, settings.loras, catalog)  # a LoRA that cannot apply is refused before loading
    editor = Editor.from_pretrained(model, args.device, args.dtype, acceleration, catalog)
    out = plans[0].video
    reporter.event("started", model=editor.name, frames=[start, end], output=str(out), execution=editor.execution)
    if editor.execution["device"] != "cpu":
        x = editor.execution
        reporter.message(f"engine: {x['memory_reason']}; compile {x['compile']}; attention {x['attention']}")
    written: list[dict[str, Any]] = []

    def finished(result: EditResult) -> None:
        """Each take is written as soon as it is done, so an interrupt keeps the takes finished before it."""
        outputs = plans[result.take - 1]
        for warning in result.warnings if result.take == 1 else []:
            reporter.message(f"warning: {warning}")
        for warning in write_outputs(outputs, result, source, (start, end), encoding, args.overwrite):
            reporter.message(f"warning: {warning}")
        written.append(
            {
                "take": result.take,
                "output": str(outputs.video),
                "trace": str(outputs.trace_json),
                "plot": str(outputs.trace_png),
                "region": str(outputs.region) if outputs.region else None,
                "seconds": result.trace.seconds,
                "edited_pixels": _changed_values(result.frames, frames),
            }
        )
        if len(plans) > 1:
            reporter.message(f"take {result.take} of {len(plans)}: wrote {outputs.video}")

    with _Interrupt(reporter) as cancel:
        request = EditRequest(
            frames,
            matte,
            prompt,
            settings,
            return_region=plans[0].region is not None,
            encoding=encoding,
            return_plate=plans[0].plate is not None,
        )
        results = editor.edit_takes(request, progress=reporter.step, cancel=cancel, finished=finished)
    first, seconds = written[0], results[-1].trace.seconds
    names = ", ".join(w["output"] for w in written)
    reporter.result(
        f"wrote {names} ({end - start} frames, {plans[0].codec}, {seconds:.1f} s); trace {first['trace']}",
        output=first["output"],
        trace=first["trace"],
        plot=first["plot"],
        frames=[start, end],
        seconds=seconds,
        region=first["region"],
        plate=str(plans[0].plate) if plans[0].plate else None,
        seen_fraction=results[0].trace.plate.get("seen_fraction"),
        warnings=results[0].warnings,
        edited_pixels=first["edited_pixels"],
        takes=written,
    )
    return 0
