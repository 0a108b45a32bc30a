"""What decoding only the composite's box changes, on a trained VAE: the embedded model on held-out cases.

    python bench/box_decode.py --cases 6 --steps 10            # CPU, about a minute
    python bench/box_decode.py --cases 24 --device cuda

Each case of the test split is edited twice with the same seed and settings: decoding whole frames and
compositing on the CPU (``--decode frame --composite cpu``), then decoding the latent box the composite reads
and compositing on the model's device (the defaults). Printed per case and over all: whether both results are
the source bit for bit outside the feathered matte, and by how many 8-bit code values the two differ inside
it (largest, mean, share of values that differ), with the decode and composite seconds of each (after a
warm-up edit of both kinds). The GPU
figures at real sizes (``bench/gpu.py --only overheads``) add the VAE's own tiled-decode precision beside
these; the embedded model's frames are too small to tile.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from kvlock import Editor, EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte
from kvlock.world.cases import make_case

RUNS = (("whole frame, CPU composite", "frame", "cpu"), ("box, device composite", "box", "device"))


def compare(editor: Editor, index: int, steps: int) -> dict[str, Any]:
    case = make_case("test", index)
    settings = EditSettings(steps=steps, seed=index)
    outside = np.stack([feather_matte(m, settings.feather) for m in case.matte]) == 0
    results, stages = [], []
    for _, decode, composite in RUNS:
        editor.runtime.set_output(decode, composite)
        result = editor.edit(EditRequest(case.frames, case.matte, case.prompt, settings))
        results.append(result.frames)
        stages.append({k: result.trace.stage_seconds.get(k, 0.0) for k in ("decode", "composite")})
    whole, box = (r.astype(np.int32) for r in results)
    inside = np.broadcast_to(~outside[..., None], whole.shape)
    d = np.abs(box - whole)[inside]
    exact = all(np.array_equal(r[outside], case.frames[outside]) for r in results)
    return {
        "case": case.name,
        "outside_bit_exact": exact,
        "inside_values": int(d.size),
        "max": int(d.max(initial=0)),
        "mean": float(d.mean()),
        "share": float((d > 0).mean()),
        "stages": dict(zip([name for name, _, _ in RUNS], stages, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    editor = Editor.from_pretrained(args.model, args.device)
    compare(editor, args.cases, 2)  # a warm-up of both modes (another case), so neither pays first-call costs
    rows = [compare(editor, i, args.steps) for i in range(args.cases)]
    print("| case | outside bit-exact | inside: max / mean code values | share differing | decode s whole → box |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        whole, box = (r["stages"][name]["decode"] for name, _, _ in RUNS)
        print(f"| {r['case']} | {r['outside_bit_exact']} | {r['max']} / {r['mean']:.4f} | "
              f"{100 * r['share']:.3f} % | {whole:.2f} → {box:.2f} |")  # fmt: skip
    values = sum(r["inside_values"] for r in rows)
    mean = sum(r["mean"] * r["inside_values"] for r in rows) / values
    share = sum(r["share"] * r["inside_values"] for r in rows) / values
    exact = all(r["outside_bit_exact"] for r in rows)
    largest = max(r["max"] for r in rows)
    print(f"all {len(rows)} cases: outside bit-exact {exact}; inside max {largest}, mean {mean:.4f} code values, "
          f"{100 * share:.3f} % of values differ")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "steps": args.steps, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
