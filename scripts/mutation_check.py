"""Mutation check of KV-Lock's maths: every named mutant of a formula must turn a test red.

    python scripts/mutation_check.py            # all mutants; exit 1 if any survives
    python scripts/mutation_check.py --list     # what each mutant breaks
    python scripts/mutation_check.py -k lock    # the mutants whose name contains "lock"

Each mutant replaces one exact snippet of one engine module (the snippet must occur exactly once, so a
refactor that moves it fails the check loudly instead of silently testing nothing). The engine and the
tests are copied into a temporary folder, the mutant is applied to the copy, and the tests that guard that
formula run there with ``-x``; the working tree is never modified. An unmutated copy runs first and must
pass, so a red mutant means the mutation and nothing else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATHS = [
    "tests/engine/test_schedules_metric_guidance.py",
    "tests/engine/test_sampler_effects.py",
    "tests/engine/test_token_mask_geometry.py",
    "tests/engine/test_engine_exactness.py",
]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    why: str
    tests: tuple[str, ...] = tuple(MATHS)


MUTANTS = [
    Mutant(
        "cfg-free-runs-unconditional",
        "kvlock/sampling/loop.py",
        "uncond=w0 > 1.0,",
        "uncond=True,",
        "a CFG-free model (guidance 1) given an unconditional pass it was not distilled for",
        ("tests/engine/test_few_step.py",),
    ),
    Mutant(
        "cfg-free-omega-raised",
        "kvlock/lock/schedules.py",
        'if guidance_form == "static" or not measured or omega0 <= 1.0:',
        'if guidance_form == "static" or not measured:',
        "the guidance control raising ω above 1 on a CFG-free model",
        ("tests/engine/test_few_step.py",),
    ),
    Mutant(
        "euler-step-from-the-wrong-level",
        "kvlock/families/steppers.py",
        "return z + (self.levels[i + 1] - self.levels[i]) * prediction.to(z.dtype)",
        "return z + (self.levels[i + 1] - self.levels[i - 1]) * prediction.to(z.dtype)",
        "a distilled model's Euler step measured from the previous level",
        ("tests/engine/test_few_step.py",),
    ),
    Mutant(
        "control-windows-not-scaled",
        "kvlock/settings.py",
        "kappa = min(steps, max(3, round(0.4 * steps)))",
        "kappa = min(steps, 20)",
        "κ no longer in proportion to the step count",
        ("tests/engine/test_few_step.py",),
    ),
    Mutant(
        "calibration-never-leaves-the-firm-lock",
        "kvlock/calibration.py",
        "samples = collect_h(editor, clips, regime_settings(base, history[-1]), cancel, progress)",
        "samples = collect_h(editor, clips, calibration_settings(base), cancel, progress)",
        "τ fitted under the firm lock only, not in the regime the control runs in",
        ("tests/engine/test_calibration.py",),
    ),
    Mutant(
        "cfg-zero-star-difference",
        "kvlock/lock/guidance.py",
        "return scaled + omega * (v_cond - scaled)",
        "return scaled + omega * (v_cond - v_uncond)",
        "CFG-Zero*'s guidance term measured from the unscaled unconditional velocity",
    ),
    Mutant(
        "latent-lock-only-last-step",
        "kvlock/sampling/loop.py",
        "    walk.z = lock(walk, z, i + 1)",
        "    walk.z = lock(walk, z, i + 1) if stepper.levels[i + 1] == 0 else z",
        "the background reset to the noised source only after the last step",
    ),
    Mutant(
        "fusion-alpha-swapped",
        "kvlock/lock/kv_bank.py",
        "mixed = alpha * source_background.to(edit.dtype) + (1.0 - alpha) * edit[:, background_index]",
        "mixed = (1.0 - alpha) * source_background.to(edit.dtype) + alpha * edit[:, background_index]",
        "α and 1 − α swapped in the K/V fusion",
    ),
    Mutant(
        "metric-on-latents",
        "kvlock/sampling/loop.py",
        "meter.update(stepper.clean_estimate(z, v_cond, i), sigma)",
        "meter.update(z, sigma)",
        "the metric fed the latents instead of the clean estimate",
    ),
    Mutant(
        "metric-on-guided-estimate",
        "kvlock/sampling/loop.py",
        "meter.update(stepper.clean_estimate(z, v_cond, i), sigma)",
        "meter.update(stepper.clean_estimate(z, v, i), sigma)",
        "the metric fed the guided (ω-extrapolated) clean estimate",
    ),
    Mutant(
        "s-star-wrong-norm",
        "kvlock/lock/guidance.py",
        "torch.dot(vc, vu) / (torch.dot(vu, vu) + delta)",
        "torch.dot(vc, vu) / (torch.dot(vc, vc) + delta)",
        "s* normalised by the conditional velocity",
    ),
    Mutant(
        "classic-cfg-base",
        "kvlock/lock/guidance.py",
        "return v_uncond + omega * (v_cond - v_uncond)",
        "return v_cond + omega * (v_cond - v_uncond)",
        "classic CFG extrapolating from the conditional velocity",
    ),
    Mutant(
        "alpha-floor-ignored",
        "kvlock/lock/schedules.py",
        "_clamp(h / tau, alpha_min, 1.0)",
        "_clamp(h / tau, 0.0, 1.0)",
        "α_min no longer bounds the fusion ratio",
    ),
    Mutant(
        "omega-ceiling-b",
        "kvlock/lock/schedules.py",
        "(b - 1.0) * _clamp(h / tau, 0.0, 1.0)",
        "b * _clamp(h / tau, 0.0, 1.0)",
        "guidance rising to (1 + b)·ω0 instead of b·ω0",
    ),
    Mutant(
        "control-before-window-full",
        "kvlock/lock/schedules.py",
        "measured = active and ready and h is not None",
        "measured = active and h is not None",
        "α derived from a metric window that is not yet full",
    ),
    Mutant(
        "variance-unbiased",
        "kvlock/lock/metric.py",
        "unbiased=False).mean()",
        "unbiased=True).mean()",
        "the window variance with Bessel's correction",
    ),
    Mutant(
        "metric-unscaled",
        "kvlock/lock/metric.py",
        "variance / (self.scale * max(spread, MIN_LEVEL_VARIANCE))",
        "variance / max(spread, MIN_LEVEL_VARIANCE)",
        "h no longer relative to the source latents' variance",
    ),
    Mutant(
        "metric-not-per-noise-level",
        "kvlock/lock/metric.py",
        "variance / (self.scale * max(spread, MIN_LEVEL_VARIANCE))",
        "variance / self.scale",
        "h a distance per window again, not a rate per unit of noise: τ no longer carries across step counts",
    ),
    Mutant(
        "metric-window-from-first-step",
        "kvlock/sampling/loop.py",
        "control_start = max(0, run_steps - settings.kappa)",
        "control_start = 0",
        "the metric's window starting before the control window",
    ),
    Mutant(
        "latent-lock-mask-inverted",
        "kvlock/sampling/loop.py",
        "return soft * z + (1.0 - soft) * walk.stepper.noised(x0_source, walk.noise, i)",
        "return (1.0 - soft) * z + soft * walk.stepper.noised(x0_source, walk.noise, i)",
        "the latent lock resetting the foreground instead of the background",
    ),
    Mutant(
        "clean-estimate-sign",
        "kvlock/families/steppers.py",
        "return z - self.levels[i] * prediction",
        "return z + self.levels[i] * prediction",
        "flow matching's x̂0 = z + σ·v",
    ),
    Mutant(
        "foreground-pass-without-background",
        "kvlock/lock/kv_bank.py",
        "return torch.cat([background, foreground], dim=1)",
        "return foreground",
        "foreground-only passes attending to their own tokens only",
        ("tests/engine/test_families.py", "-k", "foreground_only_pass and wan"),
    ),
    Mutant(
        "causal-first-frame-merged",
        "kvlock/lock/token_mask.py",
        "head, rest = matte[:1], matte[1:]",
        "head, rest = matte[:1], matte[:-1]",
        "temporal pooling windows shifted by one frame",
    ),
    Mutant(
        "source-reuse-without-refresh",
        "kvlock/sampling/plan.py",
        "reuse = since_source is not None and since_source < source_refresh",
        "reuse = since_source is not None",
        "one source pass's K/V reused for every later step, whatever source_refresh says",
        ("tests/engine/test_source_pass_approximations.py",),
    ),
    Mutant(
        "background-source-pass-sees-everything",
        "kvlock/sampling/passes.py",
        "if background and self.bg_index is not None and self.bg_index.numel():",
        "if False:",
        "source_pass='background' silently running the full source pass",
        ("tests/engine/test_source_pass_approximations.py",),
    ),
    Mutant(
        "long-clip-hand-over-dropped",
        "kvlock/editing/compositing.py",
        "    return (k + 1) / (context + 1)",
        "    return 1.0",
        "a window's lead-in shows its own decode at once: the VAE's round trip in one frame step",
        ("tests/engine/test_engine_exactness.py", "tests/engine/test_token_mask_geometry.py", "-k", "hand"),
    ),
    Mutant(
        "expert-boundary-inverted",
        "kvlock/families/wan.py",
        "return 0 if boundary is None or float(t) >= boundary else 1",
        "return 0 if boundary is None or float(t) < boundary else 1",
        "Wan2.2 A14B's high-noise expert running the low-noise steps and the other way round",
        ("tests/engine/test_experts_and_checkpoints.py", "-k", "take_turns"),
    ),
    Mutant(
        "expert-guidance-shared",
        "kvlock/sampling/loop.py",
        "return expert, self.omegas[min(expert, len(self.omegas) - 1)]",
        "return expert, self.omegas[0]",
        "the low-noise expert guided with the high-noise expert's scale",
        ("tests/engine/test_experts_and_checkpoints.py", "-k", "own_scale"),
    ),
    Mutant(
        "hunyuan-text-padding-attended",
        "kvlock/families/hunyuan15_attention.py",
        "keys = torch.cat([ones(b, video_keys), text_valid], dim=1)",
        "keys = ones(b, video_keys + text_valid.shape[1])",
        "HunyuanVideo 1.5's padded prompt tokens attended to in KV-Lock's passes",
        ("tests/engine/test_families.py", "-k", "source_pass_through and hunyuan15"),
    ),
    Mutant(
        "hunyuan-text-kind-dropped",
        "kvlock/families/hunyuan15.py",
        "llm = llm + kinds(torch.zeros_like(llm[:, :, 0], dtype=torch.long))",
        "llm = llm",
        "HunyuanVideo 1.5's opened forward losing the LLM tokens' kind embedding its own forward adds",
        ("tests/engine/test_families.py", "-k", "lockstep and hunyuan15"),
    ),
    Mutant(
        "lockstep-bank-kept-whole",
        "kvlock/sampling/passes.py",
        "                self.bank.forget(layer)",
        "                pass",
        "the lockstep passes keeping every layer's K/V: the memory they exist to save",
        ("tests/engine/test_lockstep_passes.py",),
    ),
    # the clean plate (kvlock/plate) and what an edit does with it
    Mutant(
        "plate-fb-check-difference",
        "kvlock/plate/flow.py",
        "miss = (fx + bx) ** 2 + (fy + by) ** 2",
        "miss = (fx - bx) ** 2 + (fy - by) ** 2",
        "the forward–backward check asks the two flows to be equal instead of opposite",
        ("tests/engine/test_clean_plate.py",),
    ),
    Mutant(
        "plate-fb-check-off",
        "kvlock/plate/flow.py",
        "return miss < FB_RELATIVE * size + FB_ABSOLUTE",
        "return miss >= 0",
        "every flow vector trusted: occlusions not found",
        ("tests/engine/test_clean_plate.py",),
    ),
    Mutant(
        "plate-takes-the-subject",
        "kvlock/plate/fill.py",
        "shown = ~blocked[near_r, near_c] & verified[vy, vx] & np.isfinite(values).all(axis=-1)",
        "shown = verified[vy, vx] & np.isfinite(values).all(axis=-1)",
        "pixels taken from another frame where its matte (the subject) is",
        ("tests/engine/test_clean_plate.py",),
    ),
    Mutant(
        "plate-ignores-what-moves-apart",
        "kvlock/plate/stage.py",
        "out.append((complete(forward, kept & ~apart).astype(np.float16), passed & ~apart))",
        "out.append((complete(forward, kept).astype(np.float16), passed))",
        "another subject's own motion continued into the hole and its pixels taken for background",
        ("tests/engine/test_clean_plate.py",),
    ),
    Mutant(
        "plate-hops-along-the-backward-flow",
        "kvlock/plate/fill.py",
        "w = sample(onward, trail.x, trail.y)",
        "w = sample(back, trail.x, trail.y)",
        "trails moved by the flow from the next frame back instead of towards it",
        ("tests/engine/test_clean_plate.py",),
    ),
    Mutant(
        "plate-no-flow-under-the-matte",
        "kvlock/plate/flow.py",
        "return (blend * value + (1.0 - blend) * filled).astype(np.float32)",
        "return value",
        "the flow not continued under the matte (zero there): the background's motion lost where it is hidden",
        ("tests/engine/test_clean_plate.py",),
    ),
    Mutant(
        "erase-repaints-what-was-seen",
        "kvlock/editing/composer.py",
        "plate_layer = keep * plate.float() + (1.0 - keep) * plate_layer",
        "plate_layer = plate_layer",
        "an erase lets the model repaint the background other frames showed",
        ("tests/engine/test_erase_and_clean_plate.py",),
    ),
    Mutant(
        "erase-keep-ramp-cut-at-the-region",
        "kvlock/editing/composer.py",
        "        reach = self.feather + 1",
        "        reach = 0",
        "an erase's kept-as-filmed ramp filtered over the composite's region without the filter's reach around it",
        ("tests/engine/test_erase_and_clean_plate.py", "-k", "region"),
    ),
    Mutant(
        "clean-plate-not-the-start",
        "kvlock/editing/editor.py",
        "frames = plate.frames if clean and plate is not None else request.frames[plan.start : plan.end]",
        "frames = request.frames[plan.start : plan.end]",
        "source_plate clean computed but the model still starts from the source as filmed",
        ("tests/engine/test_erase_and_clean_plate.py",),
    ),
    Mutant(
        "plate-made-again-per-take",
        "kvlock/editing/editor.py",
        "self.kept: dict[int, PlateFrames] | None = {} if keep else None",
        "self.kept: dict[int, PlateFrames] | None = None",
        "takes run one after another making the clean plate anew for each take (its cost times the takes)",
        ("tests/engine/test_erase_and_clean_plate.py", "-k", "takes"),
    ),
    Mutant(
        "lora-weight-ignored",
        "kvlock/execution/loras.py",
        "self.pipe.set_adapters([n for n, _ in active], [w for _, w in active])",
        "self.pipe.set_adapters([n for n, _ in active], [1.0 for _ in active])",
        "every LoRA applied at weight 1 whatever the request's weight",
        ("tests/engine/test_loras.py", "-k", "exactly_as_diffusers"),
    ),
    Mutant(
        "lora-left-active-without-loras",
        "kvlock/execution/loras.py",
        "                self.pipe.disable_lora()",
        "                pass",
        "an edit without LoRAs still running the last edit's LoRAs",
        ("tests/engine/test_loras.py", "-k", "keeps_the_base_model"),
    ),
    Mutant(
        "lora-hotswap-weight-ignored",
        "kvlock/execution/loras.py",
        "                tensor.fill_(base * factor)",
        "                tensor.fill_(base if factor else 0.0)",
        "a hotswapped LoRA applied at weight 1 whatever the request's weight",
        ("tests/engine/test_loras.py", "-k", "never_recompile"),
    ),
    Mutant(
        "lora-rank-mismatch-unchecked",
        "kvlock/loading/lora_fit.py",
        "        elif down[0] != up[1]:",
        "        elif False:",
        "a LoRA whose A and B disagree on the rank accepted, to fail inside diffusers mid-load",
        ("tests/engine/test_loras.py", "-k", "badrank"),
    ),
    Mutant(
        "lora-size-unchecked",
        "kvlock/loading/lora_fit.py",
        "elif len(weight) != 2 or weight != (target.features_out, target.features_in):",
        "elif len(weight) != 2:",
        "a LoRA made for a model of another width accepted",
        ("tests/engine/test_loras.py", "-k", "wide"),
    ),
    Mutant(
        "take-noise-own-everywhere",
        "kvlock/lock/noise.py",
        "    return torch.where(inside, own, shared)",
        "    return own",
        "a take's own noise outside the matte too: the takes' backgrounds no longer locked to one noised source",
        ("tests/engine/test_takes.py", "-k", "agree_outside"),
    ),
    Mutant(
        "source-pass-on-the-last-take-s-noise",
        "kvlock/sampling/loop.py",
        "shared = source_noise if source_noise is not None else walks[0].noise",
        "shared = walks[-1].noise",
        "the shared source pass run on another take's noise: take 1 is no longer the one-take edit",
        ("tests/engine/test_takes.py", "-k", "take_one"),
    ),
    Mutant(
        "source-pass-once-per-take",
        "kvlock/sampling/passes.py",
        "            fused = (\n"
        "                self._lockstep(runs, t, noised(), prompts)\n"
        "                if lead.lockstep\n"
        "                else self._with_bank(lead, runs, t, noised, prompts)\n"
        "            )",
        "            fused = [\n"
        "                p\n"
        "                for run in runs\n"
        "                for p in (\n"
        "                    self._lockstep([run], t, noised(), prompts)\n"
        "                    if lead.lockstep\n"
        "                    else self._with_bank(lead, [run], t, noised, prompts)\n"
        "                )\n"
        "            ]",
        "every take running its own source pass: the same takes, none of the sharing they exist for",
        ("tests/engine/test_takes.py", "-k", "one_source_pass"),
    ),
    Mutant(
        "decode-box-without-the-decoder-s-reach",
        "kvlock/editing/decode_box.py",
        "    return slice(max(0, first // scale - margin), min(cells, -(-last // scale) + margin))",
        "    return slice(max(0, first // scale), min(cells, -(-last // scale)))",
        "the decoded box not grown by the convolutions' reach: its edge shows in the composite",
        ("tests/engine/test_decode_box.py",),
    ),
    Mutant(
        "decode-box-cropped-before-the-attention",
        "kvlock/editing/decode_box.py",
        'if kind == "stage" and i > last), None)',
        'if kind == "stage"), None)',
        "the decoder cropped after its first block: its attention sees only the box",
        ("tests/engine/test_decode_box.py",),
    ),
    Mutant(
        "resize-reach-without-the-filter",
        "kvlock/editing/decode_box.py",
        "    return int(used[0]), int(used[-1]) + 1",
        "    return start * source // target, -(-stop * source // target)",
        "the model pixels a region reads taken proportionally, without the resize filter's width",
        ("tests/engine/test_decode_box.py", "-k", "reach"),
    ),
]


def _copy_tree(into: Path) -> None:
    """The engine and its tests, without caches or the shipped weights (the guarding tests use test models)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.safetensors")
    for name in ("kvlock", "tests"):
        shutil.copytree(ROOT / name, into / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")


def _run(folder: Path, tests: tuple[str, ...]) -> tuple[bool, str]:
    env = dict(os.environ, PYTHONPATH=str(folder))  # the mutated copy shadows the installed engine
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return done.returncode == 0, tail[0]


def _apply(folder: Path, mutant: Mutant) -> None:
    path = folder / mutant.path
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name}: expected its snippet once in {mutant.path}, found {count}")
    path.write_text(text.replace(mutant.original, mutant.mutated))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:38s} {m.path:24s} {m.why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="kvlock-mutants-") as temp:
        pristine = Path(temp) / "pristine"
        _copy_tree(pristine)
        for m in chosen:  # every snippet is checked before any run
            if (pristine / m.path).read_text().count(m.original) != 1:
                raise SystemExit(f"mutant {m.name}: its snippet is not in {m.path} exactly once")
        for tests in dict.fromkeys(m.tests for m in chosen):
            ok, tail = _run(pristine, tests)
            if not ok:
                print(f"the unmutated engine fails {' '.join(tests)} ({tail}); fix that first")
                return 1
        killed, survived = [], []
        for m in chosen:
            began = time.time()
            folder = Path(temp) / m.name
            _copy_tree(folder)
            _apply(folder, m)
            passed, tail = _run(folder, m.tests)
            (survived if passed else killed).append(m.name)
            verdict = "SURVIVED" if passed else "killed"
            print(f"{verdict:8s} {m.name:38s} {time.time() - began:5.0f} s  {tail}", flush=True)
            shutil.rmtree(folder)
    print(f"\nmutation score: {len(killed)}/{len(chosen)} killed")
    if survived:
        print("survivors (a formula no test guards): " + ", ".join(survived))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
