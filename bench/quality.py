"""Edit quality of KV-Lock and its baselines on held-out synthetic edits, with the shipped model.

    python bench/quality.py [--cases 8] [--steps 20]

Each case asks the object of a clip to become a (shape, colour) pair never seen in training. Every method
runs on the same cases and seeds. Columns: edit accuracy (colour, shape, both), background PSNR and SSIM
outside the matte before compositing (after compositing, outside the feathered matte, they are perfect
by construction: the "bg PSNR comp" column checks that it is ∞),
temporal flicker of the background and the foreground, the metric h in the control window for edits
that succeeded and failed, and seconds per edit on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from kvlock import Editor
from kvlock.world.benchmark import METHODS, run_case, summarise
from kvlock.world.cases import edit_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--json", help="also write the per-case rows here")
    args = parser.parse_args()
    editor = Editor.from_pretrained("tiny")
    cases = edit_cases(args.cases)
    table, raw_rows = {}, {}
    began = time.time()
    for name in args.methods:
        rows = [run_case(editor, case, METHODS[name], args.steps) for case in cases]
        table[name], raw_rows[name] = summarise(rows), rows
        print(f"... {name}: done ({time.time() - began:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"summary": table, "rows": raw_rows}, handle, indent=2, default=str)
    print(
        f"\n# edit quality, {args.cases} held-out cases, {args.steps} steps, model tiny, "
        f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}"
    )
    head = (
        "method",
        "colour",
        "shape",
        "both",
        "bg PSNR raw",
        "bg SSIM raw",
        "bg PSNR comp",
        "flicker bg",
        "flicker fg",
        "h ok",
        "h failed",
        "s/edit",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, s in table.items():
        comp = s["bg_psnr_composited"]
        cells = [
            name,
            f"{s['colour']:.2f}",
            f"{s['shape']:.2f}",
            f"{s['both']:.2f}",
            f"{s['bg_psnr_raw']:.2f}",
            f"{s['bg_ssim_raw']:.3f}",
            comp if isinstance(comp, str) else f"{comp:.2f}",
            f"{s['flicker_bg']:.4f}",
            f"{s['flicker_fg']:.4f}",
            f"{s['h_success']:.4f}",
            f"{s['h_failure']:.4f}",
            f"{s['seconds']:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
