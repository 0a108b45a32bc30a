"""Seams of long clips: flicker where one temporal window hands over to the next, against flicker inside
windows, and whether the edited object stays the same object in every window. CPU, the shipped model.

    python bench/long_clips.py                       # 41-frame clips (three 17-frame windows), 20 steps
    python bench/long_clips.py --frames 57 --steps 10 --json out.json
    python bench/long_clips.py --only long-1 --steps 10    # one case
    python bench/long_clips.py --seeds 4                   # every case with seeds s … s + 3: identity per seed

Each case is a scene of the synthetic world rendered longer than the model's window, its first object
edited (the generator renders the right answer too, so flicker is measured against the target's own
motion: ``judges.flicker``, mean |Δt output − Δt target| inside the matte).

- **boundary** transitions: frame j − 1 → j where the set of windows whose result makes the output changes,
  or where either frame is a blend of several windows (a cross-fade); **inside**: every other transition.
  The criterion is boundary ≤ 1.2 × inside.
- **per window**: the majority colour and shape the judges see in that window's frames, against the target.
- **ring**: PSNR against the target in the feather ring (outside the matte, inside the feathered matte),
  where the target is background: a halo of the VAE's reconstruction lowers it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from kvlock import Editor, EditRequest, EditSettings  # noqa: E402
from kvlock.editing.compositing import feather_matte  # noqa: E402
from kvlock.world.cases import EditCase, case_from_scenes  # noqa: E402
from kvlock.world.judges import flicker, judge_all, object_pixels, psnr  # noqa: E402
from kvlock.world.scenes import ObjectSpec, SceneSpec  # noqa: E402

SCENES = (
    # (source scene, changes to object 0): a moving and a still subject, textured backgrounds
    (
        SceneSpec("stripes", "dark", (ObjectSpec("circle", "red", "large", "right", 0.5, 0.5),), 7),
        {"shape": "square", "colour": "blue"},
    ),
    (
        SceneSpec("checkers", "light", (ObjectSpec("square", "green", "small", "down", 0.45, 0.5),), 11),
        {"shape": "circle", "colour": "purple"},
    ),
    (
        SceneSpec("clouds", "dark", (ObjectSpec("cross", "yellow", "large", "still", 0.5, 0.45),), 23),
        {"colour": "red"},
    ),
)


def long_cases(frames: int) -> list[EditCase]:
    return [
        case_from_scenes(f"long-{i}", "long", source, source.with_object(0, **change), seed=i, frames=frames)
        for i, (source, change) in enumerate(SCENES)
    ]


def contributors(trace, total: int) -> list[frozenset[int]]:
    """Per frame, the windows whose result makes the output: a window's lead-in is a hand-over, a blend of
    the previous window's result and its own, so both count there."""
    sets: list[set[int]] = [set() for _ in range(total)]
    for index, w in enumerate(trace.windows):
        if w.skipped:
            continue
        for j in range(w.start, w.end):
            sets[j].add(index)
    return [frozenset(s) for s in sets]


def boundary_transitions(sets: list[frozenset[int]]) -> list[bool]:
    """For each transition j − 1 → j (j ≥ 1): whether it is at a window boundary."""
    return [sets[j] != sets[j - 1] or len(sets[j]) > 1 or len(sets[j - 1]) > 1 for j in range(1, len(sets))]


def measure(editor: Editor, case: EditCase, steps: int, overrides: dict | None = None) -> dict:
    settings = EditSettings(steps=steps, seed=case.seed, source_prompt=case.source_prompt, **(overrides or {}))
    began = time.perf_counter()
    result = editor.edit(EditRequest(case.frames, case.matte, case.prompt, settings))
    seconds = time.perf_counter() - began
    out = result.frames.astype(np.float32) / 255.0
    target, region = case.target_frames, case.matte > 0
    per_transition = [
        flicker(out[j - 1 : j + 1], target[j - 1 : j + 1], region[j - 1 : j + 1]) for j in range(1, len(out))
    ]
    at_boundary = boundary_transitions(contributors(result.trace, len(out)))
    boundary = [f for f, b in zip(per_transition, at_boundary, strict=True) if b]
    inside = [f for f, b in zip(per_transition, at_boundary, strict=True) if not b]
    wanted = case.wanted
    windows = []
    for w in result.trace.windows:
        span = range(w.start, w.end)
        judged = judge_all(out[w.start : w.end], [object_pixels(out[t], case.reference[t], region[t]) for t in span])
        windows.append(
            {
                "frames": [w.start, w.end],
                "context": getattr(w, "context", 0),
                "colour": judged["colour"],
                "shape": judged["shape"],
                "right": judged["colour"] == wanted.colour and judged["shape"] == wanted.shape,
            }
        )
    feathered = np.stack([feather_matte(m, settings.feather) for m in case.matte])
    ring = (feathered > 0) & ~region
    beyond = feathered == 0
    return {
        "case": case.name,
        "edit": f"{case.source.objects[0].colour} {case.source.objects[0].shape} → {wanted.colour} {wanted.shape}",
        "boundary_flicker": float(np.mean(boundary)) if boundary else float("nan"),
        "inside_flicker": float(np.mean(inside)),
        "boundary_transitions": int(sum(at_boundary)),
        "ring_psnr": psnr(out, target, ring),
        "matte_psnr": psnr(out, target, region),
        "outside_exact": bool(np.array_equal(result.frames[beyond], case.frames[beyond])),
        "windows": windows,
        "seconds": seconds,
    }


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| case | edit | windows (frames, locked lead-in) | boundary flicker | inside flicker | ratio "
        "| judged per window | ring PSNR dB | matte PSNR dB | outside exact | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spans = " ".join(f"[{w['frames'][0]},{w['frames'][1]})+{w['context']}" for w in r["windows"])
        judged = "; ".join(f"{w['colour']} {w['shape']}{' ✓' if w['right'] else ' ✗'}" for w in r["windows"])
        ratio = r["boundary_flicker"] / r["inside_flicker"]
        lines.append(
            f"| {r['case']} | {r['edit']} | {spans} | {r['boundary_flicker']:.4f} ({r['boundary_transitions']}) "
            f"| {r['inside_flicker']:.4f} | {ratio:.2f} | {judged} | {r['ring_psnr']:.1f} | {r['matte_psnr']:.1f} "
            f"| {r['outside_exact']} | {r['seconds']:.0f} |"
        )
    boundary = np.mean([r["boundary_flicker"] for r in rows])
    inside = np.mean([r["inside_flicker"] for r in rows])
    right = sum(w["right"] for r in rows for w in r["windows"])
    count = sum(len(r["windows"]) for r in rows)
    lines.append(
        f"| **mean** | | | {boundary:.4f} | {inside:.4f} | {boundary / inside:.2f} | {right}/{count} windows right "
        f"| {np.mean([r['ring_psnr'] for r in rows]):.1f} | {np.mean([r['matte_psnr'] for r in rows]):.1f} | | |"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=41)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cases", type=int, default=len(SCENES), help=f"how many of the {len(SCENES)} scenes")
    parser.add_argument("--only", help="comma-separated case names (long-0 …) instead of the first --cases")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--overlap", type=int, help="window_overlap in frames (default: the engine's)")
    parser.add_argument("--seeds", type=int, default=1, help="run each case with this many seeds (case's seed + k)")
    parser.add_argument("--settings", default="{}", help="further EditSettings as JSON, e.g. '{\"alpha_early\": 1}'")
    args = parser.parse_args(argv)
    overrides = json.loads(args.settings)
    if args.overlap is not None:
        overrides["window_overlap"] = args.overlap
    editor = Editor.from_pretrained(args.model)
    rows = []
    cases = long_cases(args.frames)
    chosen = [c for c in cases if c.name in args.only.split(",")] if args.only else cases[: args.cases]
    for case in chosen:
        for k in range(args.seeds):
            seeded = case if k == 0 else replace(case, name=f"{case.name} seed {case.seed + k}", seed=case.seed + k)
            rows.append(measure(editor, seeded, args.steps, overrides))
            print(f"{seeded.name}: {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    machine = f"{platform.machine()} {platform.processor()}".strip()
    print(f"{time.strftime('%Y-%m-%d')} · {machine} · model {editor.name} · {args.frames} frames, {args.steps} steps")
    print("\n".join(table(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
