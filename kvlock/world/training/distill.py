"""Distil the shipped model into a 4-step, CFG-free LoRA: trajectory distillation from the guided teacher.

    python -m kvlock.world.training.distill --teacher kvlock/models/kvlock-tiny --out runs/distill --minutes 4

The student is the teacher's own transformer with a LoRA on every block's attention and feed-forward
linears (the base weights stay frozen, so the result ships as a small adapter beside the model). It is
trained to take the teacher's guided trajectory in four Euler steps over fixed noise levels: from a latent
at level σ_i, one student step must land where the teacher's guided ODE (ω = the teacher's guidance,
``--substeps`` Euler substeps) lands at σ_{i+1}; the last step lands on the teacher's clean estimate. The
target velocity is (z_teacher(σ_{i+1}) − z(σ_i)) / (σ_{i+1} − σ_i) and the loss its mean square error.

Where the student starts each step matters as much as where it goes: a third of the samples start from
training clips noised to σ_i under their own caption (the data's own marginals), a third from clips noised
under another clip's caption (what an edit is: the noised source with a new prompt), and a third from the
student's own rollout from noise (the latents it will really see at steps 2–4, so its errors do not compound
unseen). Noise levels: ``shift(linspace(1, 0, N + 1))`` with the sampler's ``flow_shift`` of 3, the last one
dropped — 1, 0.9, 0.75, 0.5 for N = 4.

Writes ``OUT/lora/tiny-4step.safetensors`` (diffusers' LoRA format, loadable with ``load_lora_weights``),
``OUT/lora/tiny-4step.kvlock.json`` (its schedule: steps, levels, guidance 1), ``OUT/merged`` (the teacher
with the LoRA fused in, a complete model folder for benchmarking without the LoRA loader), and ``log.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import recipe
from .train import encode_clips, log, lr_at, shift_sigmas, tokenize

TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
NAME = "tiny-4step"
HELD_OUT = 64  # at most this many of the pool's last clips: the evaluation's captions, never trained on


def held_out(pool_size: int) -> int:
    return min(HELD_OUT, pool_size // 4)


def student_levels(steps: int, shift: float) -> list[float]:
    """The student's noise levels: evenly spaced, shifted as the sampler shifts its steps, ending above 0."""
    base = torch.linspace(1.0, 0.0, steps + 1)[:-1]
    return [round(float(v), 6) for v in shift_sigmas(base, shift)]


class Teacher:
    """The frozen guided model: velocity v_u + ω (v_c − v_u), and Euler ODE solves between two levels."""

    def __init__(self, transformer, guidance: float, substeps: int) -> None:
        self.transformer, self.guidance, self.substeps = transformer, guidance, substeps

    def velocity(self, z: torch.Tensor, sigma: float, text: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
        t = torch.full((len(z),), sigma * 1000.0, device=z.device)
        both = self.transformer(
            torch.cat([z, z]), torch.cat([t, t]), torch.cat([text, empty.expand_as(text)]), return_dict=False
        )[0].float()
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    @torch.no_grad()
    def solve(self, z: torch.Tensor, start: float, end: float, text: torch.Tensor, empty: torch.Tensor):
        levels = torch.linspace(start, end, self.substeps + 1).tolist()
        for a, b in itertools.pairwise(levels):
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=z.device.type == "cuda"):
                v = self.velocity(z, a, text, empty)
            z = z + (b - a) * v
        return z


def student_velocity(transformer, z: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=z.device.type == "cuda"):
        return transformer(z, sigma * 1000.0, text, return_dict=False)[0].float()


@torch.no_grad()
def rollout(transformer, noise: torch.Tensor, levels: list[float], upto: torch.Tensor, text) -> torch.Tensor:
    """The student's own latents after ``upto[b]`` of its steps from noise, per sample."""
    z, ext = noise.clone(), [*levels, 0.0]
    for i in range(int(upto.max())):
        moving = (upto > i).view(-1, 1, 1, 1, 1)
        sigma = torch.full((len(z),), ext[i], device=z.device)
        v = student_velocity(transformer, z, sigma, text)
        z = torch.where(moving, z + (ext[i + 1] - ext[i]) * v, z)
    return z


def training_batch(pool, args, levels, transformer, teacher, empty):
    """Start latents at a random student level (three kinds: module docstring) and the teacher's landing point."""
    latents, text_all = (t[: -held_out(len(t))] for t in pool)
    device = latents.device
    n = args.batch
    pick = torch.randint(len(latents), (n,), device=device)
    x0, text = latents[pick].float(), text_all[pick]
    kind = torch.randint(3, (n,), device=device)
    other = text_all[torch.randint(len(latents), (n,), device=device)]
    text = torch.where((kind == 1).view(-1, 1, 1), other, text)  # an edit: the clip under a new caption
    index = torch.randint(len(levels), (n,), device=device)
    ext = [*levels, 0.0]
    sigma = torch.tensor(ext, device=device)[index]
    noise = torch.randn_like(x0)
    z = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * noise
    own = kind == 2
    if own.any():
        z[own] = rollout(transformer, noise[own], levels, index[own], text[own])
    target = torch.empty_like(z)
    for i in range(len(levels)):  # the teacher's solve, one level at a time (each a batch of its own)
        at = index == i
        if at.any():
            target[at] = teacher.solve(z[at], ext[i], ext[i + 1], text[at], empty)
    step = (torch.tensor(ext, device=device)[index + 1] - sigma).view(-1, 1, 1, 1, 1)
    return z, sigma, text, (target - z) / step


def encode_text(text_encoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
        return (text_encoder(ids, mask).last_hidden_state * mask[..., None]).float()


def build_pool(vae, tokenizer, text_encoder, count: int, rng: torch.Generator, device: torch.device):
    latents, ids, mask = encode_clips(vae, tokenizer, count, rng, device)
    texts = torch.cat([encode_text(text_encoder, ids[i : i + 256], mask[i : i + 256]) for i in range(0, count, 256)])
    return latents, texts


@torch.no_grad()
def evaluate(transformer, teacher, pool, levels, empty) -> float:
    """PSNR (latent units, peak 1) of the student's 4-step result against the teacher's guided ODE from the same
    noise with 4 × substeps steps per interval: how close the distilled path lands."""
    latents, texts = pool
    count = held_out(len(latents))
    gen = torch.Generator(device=latents.device).manual_seed(12345)
    noise = torch.randn(latents[:count].shape, generator=gen, device=latents.device)
    text = texts[-count:]  # the pool's last clips, never drawn for training
    student = rollout(transformer, noise, levels, torch.full((count,), len(levels), device=noise.device), text)
    fine = Teacher(teacher.transformer, teacher.guidance, teacher.substeps * 4)
    reference = noise
    ext = [*levels, 0.0]
    for a, b in itertools.pairwise(ext):
        reference = fine.solve(reference, a, b, text, empty)
    mse = F.mse_loss(student, reference).item()
    return 10 * math.log10(float(reference.var()) / max(mse, 1e-12))


def save(out: Path, pipe, transformer, levels: list[float], args, record: dict) -> None:
    """The LoRA with its schedule, and the teacher with the LoRA fused in (a plain model folder)."""
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict

    lora_dir = out / "lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    WanPipeline.save_lora_weights(lora_dir, transformer_lora_layers=state, weight_name=f"{NAME}.safetensors")
    schedule = {
        "base": "kvlock-tiny",
        "steps": len(levels),
        "sigmas": levels,
        "guidance": 1.0,
        "schedule_source": f"kvlock.world.training.distill {time.strftime('%Y-%m-%d')}: "
        f"{record['step']} steps of trajectory distillation from the {args.teacher_steps_note}",
    }
    (lora_dir / f"{NAME}.kvlock.json").write_text(json.dumps(schedule, indent=2) + "\n")
    transformer.fuse_lora()
    transformer.unload_lora()
    merged = out / "merged"
    pipe.transformer = transformer.to(torch.bfloat16)
    pipe.save_pretrained(merged, safe_serialization=True)
    card = json.loads((Path(args.teacher) / "kvlock.json").read_text())
    keep = {k: card[k] for k in ("height", "width", "frames", "text_length", "schedule") if k in card}
    # the lock's schedule is the teacher's, as the LoRA loaded on the teacher gets it
    (merged / "kvlock.json").write_text(json.dumps({**keep, **schedule}, indent=2) + "\n")


def distill(args: argparse.Namespace) -> None:
    from diffusers import WanPipeline
    from peft import LoraConfig

    device = torch.device(args.device)
    out = Path(args.out)
    if out.exists() and args.fresh:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = torch.Generator().manual_seed(args.seed + 1)
    pipe = WanPipeline.from_pretrained(args.teacher, torch_dtype=torch.float32)
    pipe.vae.to(device).eval()
    pipe.text_encoder.to(device).eval()
    base = pipe.transformer.to(device).eval().requires_grad_(False)
    card = json.loads((Path(args.teacher) / "kvlock.json").read_text())
    guidance = float(card.get("guidance", 5.0))
    args.teacher_steps_note = f"teacher at guidance {guidance:g} ({args.substeps} Euler substeps per student step)"
    teacher = Teacher(copy.deepcopy(base), guidance, args.substeps)
    base.add_adapter(
        LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights=True, target_modules=TARGET_MODULES)
    )
    params = [p for p in base.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    levels = student_levels(args.steps, args.shift)
    tokenizer = recipe.caption_tokenizer()
    empty_ids, empty_mask = tokenize(tokenizer, [""], device)
    empty = encode_text(pipe.text_encoder, empty_ids, empty_mask)
    began_pool = time.time()
    pool = build_pool(pipe.vae, tokenizer, pipe.text_encoder, args.pool, rng, device)
    log(
        out,
        {
            "stage": "distill",
            "levels": levels,
            "pool": args.pool,
            "pool_seconds": round(time.time() - began_pool, 1),
            "lora_params": sum(p.numel() for p in params),
            "teacher_guidance": guidance,
        },
    )
    log(out, {"stage": "distill", "step": 0, "eval_psnr_db": round(evaluate(base, teacher, pool, levels, empty), 2)})
    began, step = time.time(), 0
    budget = args.minutes * 60
    while time.time() - began < budget:
        for group in opt.param_groups:
            group["lr"] = lr_at((time.time() - began) / budget, step, args.lr, warmup=50)
        z, sigma, text, target = training_batch(pool, args, levels, base, teacher, empty)
        loss = F.mse_loss(student_velocity(base, z, sigma, text), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            record = {"stage": "distill", "step": step, "seconds": round(time.time() - began, 1), "loss": loss.item()}
            if step % 200 == 0:
                record["eval_psnr_db"] = round(evaluate(base, teacher, pool, levels, empty), 2)
            log(out, record)
    final = {
        "stage": "distill",
        "step": step,
        "done": True,
        "eval_psnr_db": round(evaluate(base, teacher, pool, levels, empty), 2),
    }
    log(out, final)
    save(out, pipe, base, levels, args, final)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(Path(__file__).resolve().parents[2] / "models" / "kvlock-tiny"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=4, help="student steps")
    parser.add_argument("--shift", type=float, default=recipe.SCHEDULER_CONFIG["flow_shift"])
    parser.add_argument("--substeps", type=int, default=8, help="teacher Euler substeps per student step")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--pool", type=int, default=8192, help="training clips encoded once")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    distill(args)


if __name__ == "__main__":
    main()
