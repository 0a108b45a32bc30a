"""Train the project's small model: ``vae`` first, then ``dit`` (transformer + text encoder) on its latents.

    python -m kvlock.world.training.train vae --minutes 8 --out runs/vae
    python -m kvlock.world.training.train dit --vae runs/vae/vae --minutes 8 --out runs/model

Every run is reproducible from ``--seed`` (clips, initial weights, noise), logs its loss to stdout and
``log.jsonl``, saves a checkpoint (``checkpoint.pt``) every few minutes and at the end, and resumes
from one with ``--resume``. The ``dit`` stage writes a complete diffusers ``WanPipeline`` folder.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..scenes import model_batch as render_model_batch
from ..scenes import sample_scene
from . import recipe


def log(out: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with (out / "log.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def lr_at(progress: float, step: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine from ``peak`` to 10 % of it over the time budget."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = F.mse_loss((x.clamp(-1, 1) + 1) / 2, (y.clamp(-1, 1) + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-10))


# -- VAE ---------------------------------------------------------------------------------------------


def train_vae(args: argparse.Namespace) -> None:
    from diffusers import AutoencoderKLWan

    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    scenes_rng = torch.Generator().manual_seed(args.seed)
    vae = AutoencoderKLWan(**recipe.VAE_CONFIG).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step, spent = 0, 0.0
    if args.resume:
        state = torch.load(args.resume, map_location=device, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, spent = state["step"], state["seconds"]
        scenes_rng.set_state(state["scenes_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
    budget = args.minutes * 60 + spent
    began, last_save = time.time() - spent, time.time()
    while time.time() - began < budget:
        x, matte = render_model_batch(
            [sample_scene(scenes_rng) for _ in range(args.batch)], recipe.FRAMES, recipe.SIZE, device
        )
        for group in opt.param_groups:
            group["lr"] = lr_at((time.time() - began) / budget, step, args.lr)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn_like(posterior.mean)
            y = vae.decode(z).sample.float()
        error = (y - x).abs()
        edges = (y.diff(dim=-1) - x.diff(dim=-1)).abs().mean() + (y.diff(dim=-2) - x.diff(dim=-2)).abs().mean()
        object_l1 = (error * matte).sum() / (3 * matte.sum() + 1.0)
        kl = 0.5 * (posterior.mean.float() ** 2 + posterior.var.float() - 1 - posterior.logvar.float()).mean()
        loss = error.mean() + 2.0 * object_l1 + 0.5 * edges + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(
                out,
                {
                    "stage": "vae",
                    "step": step,
                    "seconds": round(time.time() - began, 1),
                    "loss": loss.item(),
                    "psnr": round(psnr(y.detach(), x), 2),
                    "object_l1": object_l1.item(),
                    "kl": kl.item(),
                },
            )
        if time.time() - last_save > 120:
            save_vae_checkpoint(out, vae, opt, step, time.time() - began, scenes_rng)
            last_save = time.time()
    save_vae_checkpoint(out, vae, opt, step, time.time() - began, scenes_rng)
    set_latent_statistics(vae, scenes_rng, device)
    vae.to(torch.float16).save_pretrained(out / "vae")  # half precision keeps the file small enough to ship
    log(out, {"stage": "vae", "done": True, "step": step, "latents_std": vae.config.latents_std})


def save_vae_checkpoint(out: Path, vae, opt, step: int, seconds: float, rng: torch.Generator) -> None:
    torch.save(
        {
            "model": vae.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "seconds": seconds,
            "scenes_rng": rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        },
        out / "checkpoint.pt",
    )


@torch.no_grad()
def set_latent_statistics(vae, rng: torch.Generator, device: torch.device, clips: int = 512) -> None:
    """Per-channel mean and std of the latents, so the transformer sees roughly unit-variance inputs."""
    vae.eval()
    latents = []
    for _ in range(clips // 64):
        x, _ = render_model_batch([sample_scene(rng) for _ in range(64)], recipe.FRAMES, recipe.SIZE, device)
        latents.append(vae.encode(x).latent_dist.mode().float())
    z = torch.cat(latents)
    mean = z.mean(dim=(0, 2, 3, 4)).tolist()
    std = z.std(dim=(0, 2, 3, 4)).tolist()
    vae.register_to_config(latents_mean=mean, latents_std=std)


# -- transformer and text encoder ------------------------------------------------------------------------


@torch.no_grad()
def encode_pool(vae, tokenizer, count: int, rng: torch.Generator, device: torch.device, batch: int = 128):
    """Render ``count`` training clips, encode them once, and tokenise their captions."""
    mean = torch.tensor(vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
    latents, captions = [], []
    for _ in range(count // batch):
        scenes = [sample_scene(rng) for _ in range(batch)]
        x, _ = render_model_batch(scenes, recipe.FRAMES, recipe.SIZE, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            z = vae.encode(x).latent_dist.mode().float()
        latents.append(((z - mean) / std).to(torch.bfloat16))
        captions += [s.caption() for s in scenes]
    tokens = tokenizer(
        [*captions, ""], padding="max_length", max_length=recipe.TEXT_LENGTH, truncation=True, return_tensors="pt"
    )
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    return torch.cat(latents), ids[:-1], mask[:-1], ids[-1], mask[-1]


def train_dit(args: argparse.Namespace) -> None:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = torch.Generator().manual_seed(args.seed + 1)
    tokenizer = recipe.caption_tokenizer()
    vae = AutoencoderKLWan.from_pretrained(args.vae, dtype=torch.float32).to(device).eval()
    transformer = WanTransformer3DModel(**recipe.TRANSFORMER_CONFIG).to(device)
    text_encoder = UMT5EncoderModel(recipe.text_encoder_config(len(tokenizer))).to(device)
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    step, spent = 0, 0.0
    if args.resume:
        state = torch.load(args.resume, map_location=device, weights_only=False)
        transformer.load_state_dict(state["transformer"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["optimizer"])
        ema = [t.to(device) for t in state["ema"]]
        step, spent = state["step"], state["seconds"]
        rng.set_state(state["scenes_rng"].cpu())
    began_pool = time.time()
    latents, ids, mask, empty_ids, empty_mask = encode_pool(vae, tokenizer, args.pool, rng, device)
    log(out, {"stage": "dit", "pool": len(latents), "pool_seconds": round(time.time() - began_pool, 1)})
    budget = args.minutes * 60 + spent
    horizon = max(budget, (args.schedule_minutes or 0) * 60)
    began, last_save = time.time() - spent, time.time()
    while time.time() - began < budget:
        pick = torch.randint(len(latents), (args.batch,), device=device)
        x0 = latents[pick].float()
        tok, tok_mask = ids[pick].clone(), mask[pick].clone()
        drop = torch.rand(args.batch, device=device) < 0.1
        tok[drop], tok_mask[drop] = empty_ids, empty_mask
        sigma = torch.sigmoid(torch.randn(args.batch, device=device)).view(-1, 1, 1, 1, 1)
        noise = torch.randn_like(x0)
        z = (1 - sigma) * x0 + sigma * noise
        for group in opt.param_groups:
            group["lr"] = lr_at((time.time() - began) / horizon, step, args.lr)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            text = text_encoder(tok, tok_mask).last_hidden_state * tok_mask[..., None]
            v = transformer(z, sigma.flatten() * 1000, text, return_dict=False)[0].float()
        loss = F.mse_loss(v, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        step += 1
        if step % 100 == 0:
            log(
                out,
                {
                    "stage": "dit",
                    "step": step,
                    "seconds": round(time.time() - began, 1),
                    "loss": loss.item(),
                    "lr": opt.param_groups[0]["lr"],
                },
            )
        if time.time() - last_save > 180:
            save_dit_checkpoint(out, transformer, text_encoder, opt, ema, step, time.time() - began, rng)
            last_save = time.time()
    save_dit_checkpoint(out, transformer, text_encoder, opt, ema, step, time.time() - began, rng)
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    save_pipeline(out / "pipeline", tokenizer, text_encoder, vae, transformer)
    log(out, {"stage": "dit", "done": True, "step": step})


def save_dit_checkpoint(out, transformer, text_encoder, opt, ema, step, seconds, rng) -> None:
    torch.save(
        {
            "transformer": transformer.state_dict(),
            "text_encoder": text_encoder.state_dict(),
            "optimizer": opt.state_dict(),
            "ema": ema,
            "step": step,
            "seconds": seconds,
            "scenes_rng": rng.get_state(),
        },
        out / "checkpoint.pt",
    )


def save_pipeline(folder: Path, tokenizer, text_encoder, vae, transformer) -> None:
    """A diffusers WanPipeline folder: transformer and text encoder in bfloat16, the VAE in float16."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.to(torch.bfloat16),
        vae=vae.to(torch.float16),
        transformer=transformer.to(torch.bfloat16),
        scheduler=UniPCMultistepScheduler(**recipe.SCHEDULER_CONFIG),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / "kvlock.json").write_text(json.dumps(recipe.DEFAULTS, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    for name in ("vae", "dit"):
        p = stages.add_parser(name)
        p.add_argument("--out", required=True)
        p.add_argument("--minutes", type=float, default=8.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--resume")
    stages.choices["vae"].add_argument("--batch", type=int, default=16)
    stages.choices["vae"].add_argument("--lr", type=float, default=1e-3)
    stages.choices["vae"].add_argument("--kl", type=float, default=1e-6)
    stages.choices["dit"].add_argument("--vae", required=True)
    stages.choices["dit"].add_argument("--batch", type=int, default=256)
    stages.choices["dit"].add_argument("--lr", type=float, default=5e-4)
    stages.choices["dit"].add_argument("--ema", type=float, default=0.999)
    stages.choices["dit"].add_argument("--pool", type=int, default=16384)
    stages.choices["dit"].add_argument("--schedule-minutes", type=float, help="learning-rate horizon across resumes")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    (train_vae if args.stage == "vae" else train_dit)(args)


if __name__ == "__main__":
    main()
