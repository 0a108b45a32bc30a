"""The end-to-end demo: edit a generated clip on the embedded model and write everything an editor gets.

    python -m kvlock.world.demo out/demo

turns the red circle of a generated clip into a blue square with the shipped model, and writes
``source.mkv``, ``matte.mkv``, ``edited.mkv`` (FFV1, lossless), ``trace.json`` and ``trace.png``.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

from ..editor import Editor, EditRequest
from ..media.encode import write_video
from ..settings import EditSettings
from .demo_clip import demo_scene

RATE = Fraction(24000, 1001)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvlock.world.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write into (created)")
    parser.add_argument("--model", default="tiny", help="'tiny' or a local diffusers folder")
    parser.add_argument("--prompt", help="default: the demo's edit (circle → blue square)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    frames, matte, source_prompt, edit_prompt = demo_scene()
    editor = Editor.from_pretrained(args.model)
    prompt = args.prompt or edit_prompt
    print(f"model: {editor.name}\nsource: {source_prompt}\nedit:   {prompt}")
    result = editor.edit(
        EditRequest(
            frames, matte, prompt, EditSettings(steps=args.steps, source_prompt=source_prompt, dilate_tokens=1)
        ),
        progress=lambda e: print(
            f"  step {e['step'] + 1}/{e['total']} window {e['window'] + 1}/{e['windows']} "
            f"α={e['alpha']:.2f} ω={e['omega']:.2f} h={e['h']:.4f}",
            flush=True,
        ),
    )
    rgb_matte = matte[..., None].repeat(3, axis=-1)
    for name, data in (("source", frames), ("matte", rgb_matte), ("edited", result.frames)):
        write_video(args.out / f"{name}.mkv", data, RATE, "ffv1", timecode="01:00:00:00", overwrite=args.overwrite)
    (args.out / "trace.json").write_text(result.trace.to_json())
    result.trace.plot(args.out / "trace.png")
    for w in result.warnings:
        print(f"warning: {w}")
    print(f"wrote {args.out / 'edited.mkv'} ({len(result.frames)} frames, {result.trace.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
