"""What an edit costs around its denoising loop, and what takes save: two sections of bench/gpu.py.

``overheads``: the default edit decoding whole frames and compositing on the CPU (before) against decoding
the box its composite reads and compositing on the device (after), stage by stage, beside compiled plain
generation; and what the box decode changes: outside the feathered matte both must be the source bit for
bit, inside the row says by how much they differ, beside the VAE's own precision — its tiled decode against
its whole-frame decode of the same latents, over the same pixels (what diffusers itself does to large frames).

``takes``: for each preset, one edit, N separate edits (their mean time × N) and one job of N takes, with
the peak memory of each against plain generation's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

FEATHER = 4  # EditSettings' default, the feather of every edit here


def _gpu() -> Any:
    import gpu

    return gpu


def _outside(matte: np.ndarray) -> np.ndarray:
    from kvlock.editing.compositing import feather_matte

    return np.stack([feather_matte(m, FEATHER) for m in matte]) == 0


def _difference(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> dict[str, float]:
    """Code values by which ``a`` and ``b`` differ over ``where``: the most, the mean, the share that differ."""
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))[where]
    return {"max": float(d.max(initial=0)), "mean": float(d.mean()), "share": float((d > 0).mean())}


def vae_precision(editor: Any, latents: torch.Tensor, where: np.ndarray) -> dict[str, float]:
    """The VAE's tiled decode against its whole-frame decode of ``latents``, in 8-bit code values over
    ``where`` (frames, rows, columns): the precision diffusers accepts for large frames."""
    m = editor.model
    vae = m.pipe.vae
    decoded = []
    with torch.no_grad():
        for tiled in (False, True):
            vae.enable_tiling() if tiled else vae.disable_tiling()
            pixels = m.family.decode_latents(m.pipe, latents.to(m.device))[0].permute(1, 2, 3, 0)
            decoded.append(((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy())
    vae.disable_tiling()
    frames = min(len(decoded[0]), len(where))
    return _difference(decoded[0][:frames], decoded[1][:frames], where[:frames, ..., None].repeat(3, -1))


def overheads(editor: Any, label: str, args: Any, shape: Any, out: dict[str, Any]) -> None:
    """The default edit before (whole-frame decode, CPU composite) and after the overhead cuts."""
    gpu, rt = _gpu(), editor.runtime
    runs = {}
    for name, decode, composite in (("before", "frame", "cpu"), ("after", "box", "device")):
        rt.set_output(decode, composite)
        runs[name] = gpu.whole_edit(editor, shape, args.edit_steps, "default", keep=True)
        runs[name]["decode"] = rt.execution.get("decode")
        shown = {k: v for k, v in runs[name].items() if k not in ("results", "source", "matte", "latents")}
        print({name: shown}, flush=True)
    source, matte = runs["after"]["source"], runs["after"]["matte"]
    before, after = runs["before"]["results"][0], runs["after"]["results"][0]
    outside = np.broadcast_to(_outside(matte)[..., None], source.shape)
    inside = ~outside
    row = {
        "before": {k: runs["before"][k] for k in ("seconds", "stage_seconds", "peak_gib", "decode")},
        "after": {k: runs["after"][k] for k in ("seconds", "stage_seconds", "peak_gib", "decode")},
        "outside_bit_exact": bool(np.array_equal(before[outside], source[outside]))
        and bool(np.array_equal(after[outside], source[outside])),
        "inside_difference": _difference(after, before, inside),
    }
    row["vae_tiled_vs_whole"] = vae_precision(editor, runs["after"]["latents"], inside[..., 0])
    out.setdefault("overheads", {})[label] = row
    plain = out.get("plain_generation_compiled", {}).get("seconds")
    print(f"\n| default edit [{label}] | before | after |\n|---|---:|---:|")
    stages = sorted(set(row["before"]["stage_seconds"]) | set(row["after"]["stage_seconds"]))
    for stage in stages:
        b, a = (row[k]["stage_seconds"].get(stage, 0.0) for k in ("before", "after"))
        print(f"| {stage} s | {b:.2f} | {a:.2f} |")
    for key, fmt in (("seconds", "{:.1f}"), ("peak_gib", "{:.2f}")):
        print(f"| whole edit {key} | {fmt.format(row['before'][key])} | {fmt.format(row['after'][key])} |")
    if plain:
        print(f"| × compiled plain ({plain:.1f} s) | {row['before']['seconds'] / plain:.2f} | "
              f"{row['after']['seconds'] / plain:.2f} |")  # fmt: skip
    d, v = row["inside_difference"], row["vae_tiled_vs_whole"]
    print(f"outside the feathered matte bit-exact: {row['outside_bit_exact']}; inside, box vs whole-frame decode: "
          f"max {d['max']:.0f}, mean {d['mean']:.4f} code values, {100 * d['share']:.3f} % differ; the VAE's tiled vs "
          f"whole decode there: max {v['max']:.0f}, mean {v['mean']:.4f}, {100 * v['share']:.3f} % differ")  # fmt: skip


def takes(editor: Any, label: str, args: Any, shape: Any, out: dict[str, Any]) -> None:
    """One edit, N separate edits and one job of N takes, per preset, with peak memory."""
    gpu, n = _gpu(), args.takes
    separate_runs = args.separate_runs or n
    rows = []
    for preset in args.takes_presets.split(","):
        one = gpu.whole_edit(editor, shape, args.edit_steps, preset, seed=0)
        separate = [one] + [
            gpu.whole_edit(editor, shape, args.edit_steps, preset, seed=k) for k in range(1, separate_runs)
        ]
        t = time.perf_counter()
        job = gpu.whole_edit(editor, shape, args.edit_steps, preset, takes=n)
        row = {
            "preset": preset,
            "one_edit": one["seconds"],
            "separate": n * float(np.mean([s["seconds"] for s in separate])),
            "separate_measured": len(separate),
            "takes_job": job["seconds"],
            "takes_run": job["execution"].get("takes"),
            "stage_seconds": job["stage_seconds"],
            "peak_one_gib": max(s["peak_gib"] for s in separate),
            "peak_takes_gib": job["peak_gib"],
            "modes": job["modes"],
            "wall": time.perf_counter() - t,
        }
        rows.append(row)
        print(row, flush=True)
    out.setdefault("takes", {})[label] = rows
    plain_peak = out.get("plain_peak_gib", float("nan"))
    print(
        f"\n| {n} takes [{label}] | one edit s | {n} separate s | one job s | job × one | job × separate | "
        f"peak one / job GiB | job × plain peak ({plain_peak:.2f}) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['preset']} | {r['one_edit']:.1f} | {r['separate']:.1f} | {r['takes_job']:.1f} | "
            f"{r['takes_job'] / r['one_edit']:.2f} | {r['takes_job'] / r['separate']:.2f} | "
            f"{r['peak_one_gib']:.2f} / {r['peak_takes_gib']:.2f} | {r['peak_takes_gib'] / plain_peak:.3f} |"
        )
