"""What a Ray farm gives, measured with CPU workers on one machine (a benchmark, not a test).

    python bench/farm.py [--jobs 4] [--steps 30] [--out docs/benchmarks/farm-cpu.json]

Each worker is a Ray node of one CPU core, standing in for one GPU box. Measures, with the tiny model at
its default size (17×96×96): one job's latency in-process vs through Ray (the dispatch overhead), the
makespan of ``--jobs`` jobs submitted at once to 1 and to 2 workers (the scaling), and Ray's object
store moving a full-size clip (81×480×832 RGB + matte) from the server to a worker (what a job pays
when the workers do not mount the job store).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import ArrayClip, Client, Params
from kvlock_server.app import ServerConfig, create_server
from kvlock_server.executors.ray_options import RayOptions
from tests.support.ray_cluster import LocalCluster


def run_jobs(app, clip, ids: list[str], steps: int, model: str = "tiny", **settings) -> dict[str, float]:
    """Submit all of ``ids`` at once; return each job's latency from submission to success."""
    client = Client(app.address, app.token)
    frames, matte = clip
    began = {}
    for job_id in ids:
        began[job_id] = time.perf_counter()
        client.submit(
            ArrayClip("Source", frames),
            ArrayClip("Matte", matte),
            Params("a red ball", model=model, settings={"steps": steps, **settings}),
            job_id,
        )
    ended = {}
    while len(ended) < len(ids):
        for job_id in ids:
            if job_id not in ended:
                state = app.store.get(job_id).state.value
                if state == "succeeded":
                    ended[job_id] = time.perf_counter()
                elif state in ("failed", "cancelled"):
                    raise RuntimeError(f"{job_id} {state}: {app.store.get(job_id).message}")
        time.sleep(0.02)
    return {job_id: ended[job_id] - began[job_id] for job_id in ids}


def engine_seconds(app, job_id: str) -> float:
    return json.loads((app.store.folder(job_id) / "trace.json").read_text())["seconds"]


def in_process(work: Path, clip, steps: int) -> dict:
    torch.set_num_threads(1)  # the same one core a Ray worker gets
    app = create_server(ServerConfig(port=0, state_dir=work / "inproc", preload=["tiny"]))
    try:
        run_jobs(app, clip, ["warm"], steps)
        latency = run_jobs(app, clip, ["one"], steps)["one"]
        return {"latency_s": latency, "engine_s": engine_seconds(app, "one")}
    finally:
        app.stop(grace=0)


def on_ray(work: Path, clip, workers: int, jobs: int, steps: int) -> dict:
    cluster = LocalCluster(work / f"ray-{workers}", workers=workers, cpus=1, object_store_mb=1024)
    try:
        app = create_server(
            ServerConfig(
                port=0,
                state_dir=work / f"state-{workers}",
                executor="ray",
                ray=RayOptions(address=cluster.address, workers=workers),
                preload=["tiny"],
            )
        )
        try:
            run_jobs(app, clip, [f"warm-{i}" for i in range(workers)], steps)  # every worker's first run
            single = run_jobs(app, clip, ["one"], steps)["one"]
            began = time.perf_counter()
            latencies = run_jobs(app, clip, [f"job-{i}" for i in range(jobs)], steps)
            makespan = time.perf_counter() - began
            return {
                "workers": workers,
                "single_latency_s": single,
                "single_engine_s": engine_seconds(app, "one"),
                "jobs": jobs,
                "makespan_s": makespan,
                "mean_latency_s": float(np.mean(list(latencies.values()))),
                "jobs_per_hour": jobs / makespan * 3600,
            }
        finally:
            app.stop(grace=0)
    finally:
        cluster.stop()


def object_store_transfer(work: Path) -> dict:
    """Server → worker through the object store, for a clip the size of a default Wan edit."""
    import ray

    cluster = LocalCluster(work / "ray-transfer", workers=1, cpus=1, object_store_mb=2048)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        frames = np.random.default_rng(0).integers(0, 256, (81, 480, 832, 3), dtype=np.uint8)
        matte = np.zeros((81, 480, 832), np.float32)

        @ray.remote(num_cpus=1)
        def touch(media: tuple) -> int:
            return int(media[0][::40, ::40, ::40].sum()) + int(media[1].shape[0])

        ray.get(touch.remote((frames[:1], matte[:1])))  # the worker process exists before timing
        began = time.perf_counter()
        ref = ray.put((frames, matte))
        put = time.perf_counter() - began
        ray.get(touch.remote(ref))
        total = time.perf_counter() - began
        size_mb = (frames.nbytes + matte.nbytes) / 1024**2
        return {"clip": "81x480x832 rgb8 + float32 matte", "mb": size_mb, "put_s": put, "put_and_read_s": total}
    finally:
        ray.shutdown()
        cluster.stop()


def print_report(report: dict) -> None:
    base = report["in_process"]
    print(
        f"one job in-process: {base['latency_s']:.2f} s, of which outside the engine "
        f"{(base['latency_s'] - base['engine_s']) * 1000:.0f} ms"
    )
    print("| workers | one job | outside the engine | jobs at once | makespan | jobs/hour | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    first = report["ray"][0]["makespan_s"]
    for row in report["ray"]:
        outside = row["single_latency_s"] - row["single_engine_s"]
        print(
            f"| {row['workers']} | {row['single_latency_s']:.2f} s | {outside * 1000:.0f} ms | {row['jobs']} | "
            f"{row['makespan_s']:.1f} s | {row['jobs_per_hour']:.0f} | {first / row['makespan_s']:.2f}× |"
        )
    moved = report["object_store"]
    print(
        f"object store: {moved['mb']:.0f} MB put in {moved['put_s']:.2f} s, put + read on a worker "
        f"{moved['put_and_read_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/farm-cpu.json"))
    parser.add_argument("--report", type=Path, help="only print the tables of an earlier run's JSON")
    args = parser.parse_args()
    if args.report:
        print_report(json.loads(args.report.read_text()))
        return
    work = Path(tempfile.mkdtemp(prefix="kvlock-farm-"))
    clip = demo_clip(frames=17, height=96, width=96)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available",
        "steps": args.steps,
        "in_process": in_process(work, clip, args.steps),
        "ray": [on_ray(work, clip, workers, args.jobs, args.steps) for workers in (1, 2)],
        "object_store": object_store_transfer(work),
    }
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
