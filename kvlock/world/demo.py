"""The end-to-end demo: edit a generated clip on the embedded model, write everything an editor gets, and
judge the result against the generator's own ground truth.

    python -m kvlock.world.demo out/demo

turns the red circle of a generated clip into a blue square with the shipped model, and writes
``source.mkv``, ``matte.mkv``, ``edited.mkv`` (FFV1, lossless), ``target.mkv`` (what a perfect edit shows),
``trace.json`` and ``trace.png``; then prints what the judges see in the matte.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..editing.compositing import feather_matte
from ..editing.editor import Editor, EditRequest
from ..media.encode import write_video
from ..progress import StepProgress
from ..settings import EditSettings
from .benchmark import ATTRIBUTES, score
from .demo_clip import demo_case

RATE = Fraction(24000, 1001)


def _step_line(e: StepProgress) -> str:
    h = "—" if e.h is None else f"{e.h:.4f}"
    return f"  step {e.step + 1}/{e.total} window {e.window + 1}/{e.windows} α={e.alpha:.2f} ω={e.omega:.2f} h={h}"


def report(row: dict, wanted, pixels_exact: tuple[int, int]) -> list[str]:
    """The judged result, in words a newcomer can check."""
    marks = [f"{a} {row['judged_' + a]} ({'right' if row[a] else 'asked ' + getattr(wanted, a)})" for a in ATTRIBUTES]
    same, total = pixels_exact
    return [
        "judged inside the matte: " + ", ".join(marks),
        f"in-matte PSNR against the generator's ground truth: {row['in_matte_psnr']:.1f} dB; "
        f"leftover (matte pixels the target shows as background): {row['leftover_psnr']:.1f} dB",
        f"outside the feathered matte: {same} of {total} pixels are the source's, bit for bit",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvlock.world.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write into (created)")
    parser.add_argument("--model", default="tiny", help="'tiny' or a local diffusers folder")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--method",
        help="kvlock, no_lock, fixed_alpha=<a> …; default: the model's own schedule (the embedded model's: no lock)",
    )
    parser.add_argument(
        "--source-plate",
        choices=("original", "clean"),
        help="start the edit from the source as filmed or from its clean plate (default: the model's schedule)",
    )
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    case = demo_case()
    editor = Editor.from_pretrained(args.model)
    print(f"model: {editor.name}\nsource: {case.source_prompt}\nedit:   {case.prompt}")
    settings = EditSettings(
        steps=args.steps,
        seed=case.seed,
        source_prompt=case.source_prompt,
        method=args.method,
        source_plate=args.source_plate,
    )
    result = editor.edit(
        EditRequest(case.frames, case.matte, case.prompt, settings, return_raw=True),
        progress=lambda e: print(_step_line(e), flush=True),
    )
    print(f"method: {result.trace.settings['method']} ({result.trace.schedule_source['method']})")
    start = "the clean plate" if result.trace.settings["source_plate"] == "clean" else "the source as filmed"
    print(f"start: {start} ({result.trace.schedule_source['source_plate']})")
    matte_rgb = (case.matte[..., None].repeat(3, axis=-1) * 255).astype(np.uint8)
    target = (case.target_frames * 255).round().astype(np.uint8)
    for name, data in (("source", case.frames), ("matte", matte_rgb), ("edited", result.frames), ("target", target)):
        write_video(args.out / f"{name}.mkv", data, RATE, "ffv1", timecode="01:00:00:00", overwrite=args.overwrite)
    (args.out / "trace.json").write_text(result.trace.to_json())
    result.trace.plot(args.out / "trace.png")
    for w in result.warnings:
        print(f"warning: {w}")
    row = score(case, result.frames, result.raw, result.trace)
    outside = np.stack([feather_matte(m, settings.feather) for m in case.matte]) == 0
    same = int((result.frames[outside] == case.frames[outside]).all(axis=-1).sum())
    for line in report(row, case.wanted, (same, int(outside.sum()))):
        print(line)
    print(f"wrote {args.out / 'edited.mkv'} ({len(result.frames)} frames, {result.trace.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
