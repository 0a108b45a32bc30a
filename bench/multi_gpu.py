"""Several GPUs of one node: one edit spread over them, and a farm of one worker per GPU (a benchmark).

    python bench/multi_gpu.py edit --model 14b --gpus 1,2,4,8          # 81×480×832, 50-step default edit
    python bench/multi_gpu.py edit --model 14b --gpus 1,4 --height 720 --width 1280
    python bench/multi_gpu.py farm --workers 1,2,4,8                   # a queue of 1.3B edits
    python bench/multi_gpu.py farm --workers 4 --kill-one              # a worker killed mid-job loses no job
    python bench/multi_gpu.py edit --device cpu --model smoke --gpus 1,2 --steps 2   # the script on CPU (gloo)
    python bench/multi_gpu.py farm --device cpu --model tiny-random --workers 1,2 --steps 2 --frames 5 \\
        --height 32 --width 64                                         # the farm on CPU workers
    python bench/multi_gpu.py edit --dry-run ...                       # check the arguments and print the plan

``edit``: for each GPU count N, N processes (one per GPU, ``spawn``) form a process group (NCCL, gloo for
the small CPU messages) and each builds the same Wan transformer with random weights, in the layout
``from_pretrained`` gives (``bench/gpu.py``'s builder); N = 1 runs without parallelism, N ≥ 2 with
``Acceleration(parallel=…)`` — the engine's sequence parallelism over diffusers' context parallelism. One
warm-up edit of 2 steps (NCCL's first collectives, cuDNN's plans), then the timed whole edit (encode, the
steps, decode, composite) on rank 0. Target: 4 GPUs ≤ 0.3× one GPU.

``farm``: for each worker count N, a server with ``--executor ray`` on a Ray instance of this machine with
N workers of one GPU each, one warm-up job per worker, then a queue of ``--jobs-per-worker``·N edits
submitted at once; jobs per hour from the makespan. Target: N workers ≥ 0.9·N× the jobs per hour of one.
``--kill-one`` kills a busy worker's process once the queue runs and checks that every job still succeeds.
The model is a real checkpoint (``--model PATH`` or a configured name), or by default Wan2.1 1.3B with
random weights written once to ``--work`` (no download).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from gpu import NATIVE, Shape, build_pipeline, whole_edit  # noqa: E402  (bench/gpu.py)

TARGET_EDIT_4 = 0.3  # 4 GPUs' edit time as a fraction of one GPU's, at most
TARGET_FARM = 0.9  # N workers' jobs per hour as a multiple of N × one worker's, at least
RANDOM_13B = "random-1.3b"
EDIT_MODELS = ("14b", "1.3b", "smoke")  # Wan sizes bench/gpu.py builds
SMOKE_SHAPE = (5, 32, 64)  # 2 latent frames of 2×4 tokens: 16 tokens, shared equally by 2 or 4 gloo ranks


def counts(text: str) -> list[int]:
    """``1,2,4,8`` → [1, 2, 4, 8]: positive, distinct, ascending."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2,4,8, not {text!r}") from None
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct positive counts like 1,2,4,8, not {text!r}")
    return sorted(values)


def shape_of(args: argparse.Namespace) -> Shape:
    native = SMOKE_SHAPE if args.model in ("smoke", "tiny-random") else NATIVE["wan"][:3]
    return Shape(args.frames or native[0], args.height or native[1], args.width or native[2])


def check(args: argparse.Namespace) -> list[int]:
    """What this machine must have for the run; every problem is named before anything is built."""
    wanted = args.gpus if args.command == "edit" else args.workers
    problems = []
    if args.device == "cuda":
        present = torch.cuda.device_count()
        if max(wanted) > present:
            problems.append(f"{max(wanted)} GPUs asked for, {present} present (CUDA_VISIBLE_DEVICES limits them too)")
    elif args.device != "cpu":
        problems.append(f"--device is cuda or cpu, not {args.device!r}")
    shape = shape_of(args)
    if (shape.frames - 1) % shape.vae_t or shape.height % shape.cell or shape.width % shape.cell:
        problems.append(
            f"{shape.frames}×{shape.height}×{shape.width}: frames must be 4k+1 and height and width multiples of "
            f"{shape.cell} for Wan"
        )
    if args.command == "edit":
        if args.model not in EDIT_MODELS:
            problems.append(f"edit --model is one of 1.3b, 14b, smoke, not {args.model!r}")
        if args.device == "cpu" and args.parallel == "ring":
            problems.append("the ring layout needs cuDNN or flash attention (a GPU); use ulysses on CPU")
        for n in wanted:
            if n > 1 and args.device == "cpu" and shape.tokens() % n:
                problems.append(f"{shape.tokens()} tokens cannot be shared equally by {n} gloo ranks")
    if problems:
        raise SystemExit("bench/multi_gpu.py: " + "; ".join(problems))
    return wanted


# -- one edit across N GPUs ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _edit_rank(rank: int, world: int, port: int, opts: dict[str, Any], out: str) -> None:
    """One rank: build the model on its device, join the group, warm up, time one whole edit."""
    import torch.distributed as dist

    from kvlock.editing.editor import Editor
    from kvlock.execution.acceleration import Acceleration
    from kvlock.families import family_for_pipeline
    from kvlock.families.base import ModelDefaults
    from kvlock.loading.load import LoadedModel

    cuda = opts["device"] == "cuda"
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))
    if world > 1:
        dist.init_process_group(
            "cpu:gloo,cuda:nccl" if cuda else "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(minutes=30),
        )
    try:
        shape = Shape(*opts["shape"])
        text_length = 16 if opts["model"] == "smoke" else NATIVE["wan"][3]
        pipe = build_pipeline(opts["model"], device, text_length)
        defaults = ModelDefaults(
            height=shape.height, width=shape.width, frames=shape.frames, steps=50, guidance=5.0, text_length=text_length
        )
        family = family_for_pipeline("WanPipeline")
        model = LoadedModel(f"{opts['model']} (random weights)", family, pipe, defaults, device, torch.bfloat16)
        parallel = opts["parallel"] if world > 1 else None
        editor = Editor(model, Acceleration(attention=opts["attention"], parallel=parallel))
        whole_edit(editor, shape, 2)  # first collectives and kernel plans, outside the timing
        if world > 1:
            dist.barrier()
        row = whole_edit(editor, shape, opts["steps"])
        if rank == 0:
            row |= {"gpus": world, "peak_gib_rank0": row.pop("peak_gib")}
            Path(out).write_text(json.dumps(row, default=str))
    finally:
        if world > 1:
            dist.destroy_process_group()


def edit_on(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch.multiprocessing as mp

    shape = shape_of(args)
    out = work / f"edit-{n}.json"
    opts = {
        "device": args.device,
        "model": args.model,
        "shape": [shape.frames, shape.height, shape.width],
        "steps": args.steps,
        "parallel": args.parallel,
        "attention": args.attention,
    }
    mp.start_processes(_edit_rank, args=(n, _free_port(), opts, str(out)), nprocs=n, start_method="spawn")
    return json.loads(out.read_text())


def edit_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    one = next((r["seconds"] for r in rows if r["gpus"] == 1), None)
    print("\n| GPUs | whole edit | denoise | × one GPU | peak GiB (rank 0) | modes |\n|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ratio = r["seconds"] / one if one else float("nan")
        r["fraction_of_one"] = ratio
        print(
            f"| {r['gpus']} | {r['seconds']:.1f} s | {r['denoise_seconds']:.1f} s | {ratio:.2f} | "
            f"{r['peak_gib_rank0']:.1f} | {r['modes']} |"
        )
    four = next((r["fraction_of_one"] for r in rows if r["gpus"] == 4), None)
    verdict = None if four is None or one is None else four <= TARGET_EDIT_4
    if verdict is not None:
        print(f"target 4 GPUs ≤ {TARGET_EDIT_4}× one GPU: {four:.2f}× — {'met' if verdict else 'NOT met'}")
    return {"rows": rows, "target_met": verdict}


# -- a farm of N workers --------------------------------------------------------------------------------


def farm_model(args: argparse.Namespace, work: Path) -> str:
    """The model every worker loads: as given, or Wan2.1 1.3B with random weights written to ``work`` once."""
    if args.model != RANDOM_13B:
        return args.model
    folder = work / "wan2.1-1.3b-random"
    if not (folder / "model_index.json").is_file():
        device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
        build_pipeline("1.3b", device, NATIVE["wan"][3]).save_pretrained(folder)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return str(folder)


def farm_on(n: int, args: argparse.Namespace, work: Path, model: str, clip: tuple) -> dict[str, Any]:
    import ray
    from farm import run_jobs  # bench/farm.py

    from kvlock.execution.acceleration import Acceleration
    from kvlock_server.app import ServerConfig, create_server
    from kvlock_server.executors.ray_options import RayOptions

    cuda = args.device == "cuda"
    config = ServerConfig(
        port=0,
        state_dir=work / f"farm-{n}",
        device=args.device,
        dtype="bfloat16" if cuda else "float32",
        executor="ray",
        ray=RayOptions(workers=n, cpus_per_worker=args.cpus_per_worker),
        preload=[model],
        acceleration=Acceleration(attention=args.attention),
        max_attempts=3,
    )
    # a Ray instance of this run's own ("local": never one that `ray start` left on the machine); the
    # executor finds it initialised and uses it
    ray.init(address="local", namespace="kvlock", include_dashboard=False, log_to_driver=False)
    try:
        app = create_server(config)
        try:
            settings = {"height": clip[0].shape[1], "width": clip[0].shape[2]}
            run_jobs(app, clip, [f"warm-{i}" for i in range(n)], args.steps, model, **settings)  # first jobs
            ids = [f"job-{i}" for i in range(args.jobs_per_worker * n)]
            killed: list[int] = []
            if args.kill_one:
                threading.Thread(target=_kill_a_busy_worker, args=(app, killed), daemon=True).start()
            began = time.perf_counter()
            latencies = run_jobs(app, clip, ids, args.steps, model, **settings)
            makespan = time.perf_counter() - began
            attempts = {job_id: app.store.get(job_id).attempts for job_id in ids}
        finally:
            app.stop(grace=0)
    finally:
        ray.shutdown()
    return {
        "workers": n,
        "jobs": len(ids),
        "makespan_s": makespan,
        "jobs_per_hour": len(ids) / makespan * 3600,
        "mean_latency_s": sum(latencies.values()) / len(latencies),
        "killed_pid": killed[0] if killed else None,
        "jobs_run_twice": sorted(j for j, a in attempts.items() if a > 1),
    }


def _kill_a_busy_worker(app: Any, killed: list[int]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        busy = [w for w in app.executor.pool.workers() if w.state == "busy" and w.pid]
        running = [r for r in app.store.list(limit=1000) if r.job_id.startswith("job-") and r.state.value == "running"]
        if busy and running and app.runner.status(running[0].job_id).step >= 1:
            os.kill(busy[0].pid, signal.SIGKILL)
            killed.append(busy[0].pid)
            return
        time.sleep(0.05)


def farm_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    one = next((r["jobs_per_hour"] for r in rows if r["workers"] == 1), None)
    print("\n| workers | jobs | makespan | jobs/hour | ÷ (N × one) | killed worker | jobs run again |")
    print("|---:|---:|---:|---:|---:|---|---|")
    verdicts = []
    for r in rows:
        r["efficiency"] = r["jobs_per_hour"] / (r["workers"] * one) if one else float("nan")
        if one and r["workers"] > 1:
            verdicts.append(r["efficiency"] >= TARGET_FARM)
        print(
            f"| {r['workers']} | {r['jobs']} | {r['makespan_s']:.0f} s | {r['jobs_per_hour']:.1f} | "
            f"{r['efficiency']:.2f} | {r['killed_pid'] or '—'} | {', '.join(r['jobs_run_twice']) or '—'} |"
        )
    verdict = all(verdicts) if verdicts else None
    if verdict is not None:
        print(f"target ≥ {TARGET_FARM}·N× one worker's jobs/hour: {'met' if verdict else 'NOT met'}")
    return {"rows": rows, "target_met": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("edit", "farm"))
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to check the script (gloo, CPU workers)")
    parser.add_argument("--gpus", type=counts, default=[1, 2, 4, 8], help="edit: GPU counts to run, e.g. 1,2,4,8")
    parser.add_argument("--workers", type=counts, default=[1, 2, 4, 8], help="farm: worker counts to run")
    parser.add_argument(
        "--model",
        help=f"edit: 14b (default), 1.3b or smoke; farm: {RANDOM_13B} (default), a model folder or a configured name",
    )
    parser.add_argument("--frames", type=int, help="default: 81 (5 for smoke and tiny-random)")
    parser.add_argument("--height", type=int, help="default: 480 (32 for smoke and tiny-random)")
    parser.add_argument("--width", type=int, help="default: 832 (64 for smoke and tiny-random)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--parallel", choices=("ulysses", "ring"), default="ulysses")
    parser.add_argument("--attention", default="auto", help="the engine's attention choice (ring: cudnn or flash)")
    parser.add_argument("--jobs-per-worker", type=int, default=4, help="farm: queue length per worker")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="farm: CPU cores each worker reserves")
    parser.add_argument("--kill-one", action="store_true", help="farm: kill one busy worker mid-job")
    parser.add_argument("--work", type=Path, help="scratch folder (job stores, the random 1.3B); default: a temp one")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and this machine, print the plan")
    args = parser.parse_args()
    args.model = args.model or ("14b" if args.command == "edit" else RANDOM_13B)
    if args.steps < 1 or args.jobs_per_worker < 1:
        parser.error("--steps and --jobs-per-worker must be at least 1")
    wanted = check(args)
    shape = shape_of(args)
    plan = {
        "command": args.command,
        "device": args.device,
        "model": args.model,
        "shape": [shape.frames, shape.height, shape.width],
        "tokens": shape.tokens(),
        "steps": args.steps,
        "counts": wanted,
    }
    if args.command == "edit":
        plan["parallel"] = args.parallel
    else:
        plan |= {"jobs_per_worker": args.jobs_per_worker, "kill_one": args.kill_one}
    print(json.dumps(plan), flush=True)
    if args.dry_run:
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="kvlock-multi-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    import diffusers

    out: dict[str, Any] = plan | {
        "date": time.strftime("%Y-%m-%d"),
        "machine": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    if args.command == "edit":
        rows = []
        for n in wanted:
            rows.append(edit_on(n, args, work))
            print(json.dumps(rows[-1], default=str), flush=True)
        out |= edit_report(rows)
    else:
        from kvlock.world.demo_clip import demo_clip

        model = farm_model(args, work)
        clip = demo_clip(frames=shape.frames, height=shape.height, width=shape.width, seed=2)
        rows = []
        for n in wanted:
            rows.append(farm_on(n, args, work, model, clip))
            print(json.dumps(rows[-1]), flush=True)
        out |= farm_report(rows)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
