"""How far an edit pass's background keys and values are from the source pass's: the room the K/V fusion has.

    python bench/kv_divergence.py                      # 12 calibration cases (two of each kind), 50 steps
    python bench/kv_divergence.py --cases 6 --steps 20 --json out.json
    python bench/kv_divergence.py --device cuda --cases 24 --json out.json

KV-Lock replaces the background tokens' K/V of an edit pass by α·K_src + (1 − α)·K_edit. The latent lock
already resets the background latents to the noised source every step, so at the first layer the two
are the same tensor, and deeper layers differ only through what the background attends to (the edited
subject) and the prompt. If that difference is small, the fusion cannot change much, whatever α says.
This measures it on the shipped model, with the lock at fixed α = 0.5 (so every step runs a source pass
and a fused edit pass), per layer and over the steps:

- **bg K / bg V**: ‖X_edit − X_src‖ / ‖X_src‖ over background tokens (the edit pass's own K/V, recovered
  from the fused tensor: X_edit = (X_fused − α·X_src) / (1 − α));
- **fg K**: the same over foreground tokens, where the edit is meant to differ: the scale to read bg by.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from kvlock import Editor, EditRequest, EditSettings  # noqa: E402
from kvlock.world.cases import edit_cases  # noqa: E402

ALPHA = 0.5


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ with a's batch broadcast against b's (the source pass has a batch of one)."""
    b = b.expand_as(a)
    return float((a - b).float().norm() / b.float().norm().clamp_min(1e-12))


class Recorder:
    """Bank observer: the source pass's full K/V per layer, then each fused pass measured against them."""

    def __init__(self, bank) -> None:
        self.bank = bank
        self.source: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rows: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    def __call__(self, layer: int, mode: str, key: torch.Tensor, value: torch.Tensor) -> None:
        if mode == "capture":
            self.source[layer] = (key.detach().clone(), value.detach().clone())
        elif mode == "fuse" and layer in self.source:
            bg, alpha = self.bank.background_index, self.bank.alpha
            src_k, src_v = self.source[layer]
            own_k = (key[:, bg] - alpha * src_k[:, bg]) / (1 - alpha)
            own_v = (value[:, bg] - alpha * src_v[:, bg]) / (1 - alpha)
            fg = torch.ones(key.shape[1], dtype=torch.bool, device=key.device)
            fg[bg] = False
            self.rows["bg K"][layer].append(relative(own_k, src_k[:, bg]))
            self.rows["bg V"][layer].append(relative(own_v, src_v[:, bg]))
            self.rows["fg K"][layer].append(relative(key[:, fg], src_k[:, fg]))


def measure(editor: Editor, case, steps: int, strength: float) -> dict:
    recorder = Recorder(editor.runtime.bank)
    settings = EditSettings(
        steps=steps, seed=case.seed, source_prompt=case.source_prompt, method=f"fixed_alpha={ALPHA}", strength=strength
    )
    editor.runtime.bank.observer = recorder
    try:
        editor.edit(EditRequest(case.frames, case.matte, case.prompt, settings))
    finally:
        editor.runtime.bank.observer = None
    return {name: {layer: float(np.mean(v)) for layer, v in sorted(per.items())} for name, per in recorder.rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--strength", type=float, nargs="+", default=[0.8, 1.0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    editor = Editor.from_pretrained(args.model, device=args.device)
    rows = []
    for strength in args.strength:
        for case in edit_cases(args.cases, "calibration"):
            measured = measure(editor, case, args.steps, strength)
            rows.append({"case": case.name, "kind": case.kind, "strength": strength, **measured})
            print(f"{case.name} strength {strength}: done", file=sys.stderr, flush=True)
    where = f"{args.model}, {platform.machine()} {args.device}"
    print(f"# K/V divergence, {where}, {args.cases} calibration cases, {args.steps} steps, α = {ALPHA}")
    print("| strength | kinds | layer | bg K | bg V | fg K |")
    print("|---|---|---|---|---|---|")
    for strength in args.strength:
        for kinds in ("all", *sorted({r["kind"] for r in rows})):
            chosen = [r for r in rows if r["strength"] == strength and kinds in ("all", r["kind"])]
            layers = sorted(chosen[0]["bg K"])
            for layer in layers if kinds == "all" else ["mean"]:
                cells = []
                for name in ("bg K", "bg V", "fg K"):
                    if layer == "mean":
                        cells.append(np.mean([np.mean(list(r[name].values())) for r in chosen]))
                    else:
                        cells.append(np.mean([r[name][layer] for r in chosen]))
                print(f"| {strength} | {kinds} | {layer} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
