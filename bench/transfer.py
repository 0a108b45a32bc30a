"""Loopback transfer throughput and per-job server overhead (a benchmark, not a test).

    python bench/transfer.py [--frames 48] [--height 1080] [--width 1920]

Starts a server in this process on 127.0.0.1 with the tiny model, then measures:
upload (SubmitEdit of raw RGB8 frames, including the server's validation pass), download (FetchResult
of the encoded FFV1 result), and the overhead of a small job: wall time from submit to fetched result
minus the engine's own time in the trace.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import ArrayClip, Client, Params, render
from kvlock_server.app import ServerConfig, create_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--small-jobs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kvlock-bench-"))
    app = create_server(ServerConfig(port=0, state_dir=work / "state", preload=["tiny"]))
    client = Client(app.address, app.token)
    rows = []
    try:
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
        matte = np.zeros(frames.shape[:3], np.uint8)
        matte[:, args.height // 3 : args.height // 2, args.width // 3 : args.width // 2] = 255
        mb = (frames.nbytes + matte.nbytes) / 1e6
        began = time.perf_counter()
        client.submit(
            ArrayClip("Source", frames), ArrayClip("Matte", matte), Params("x", settings={"steps": 1}), job_id="big"
        )
        upload = time.perf_counter() - began
        rows.append(
            ("upload (SubmitEdit, raw RGB8 + gray matte)", f"{mb:.0f} MB", f"{upload:.2f} s", f"{mb / upload:.0f} MB/s")
        )
        for _ in client.watch("big"):
            pass
        began = time.perf_counter()
        files = client.fetch("big", work / "fetched")
        fetch = time.perf_counter() - began
        size = sum(p.stat().st_size for p in files.values()) / 1e6
        rows.append(
            ("download (FetchResult, FFV1 + trace)", f"{size:.0f} MB", f"{fetch:.2f} s", f"{size / fetch:.0f} MB/s")
        )

        small, small_matte = demo_clip(frames=9, height=48, width=64)
        overheads = []
        for i in range(args.small_jobs):
            began = time.perf_counter()
            done = render(
                client,
                ArrayClip("S", small),
                ArrayClip("M", small_matte),
                Params("x", settings={"steps": 2}),
                work / f"small{i}.mkv",
                job_id=f"small{i}",
            )
            wall = time.perf_counter() - began
            overheads.append(wall - done.trace_data()["seconds"])
        rows.append(
            (
                "per-job overhead (9×48×64, wall − engine time)",
                f"{args.small_jobs} jobs",
                f"median {np.median(overheads) * 1000:.0f} ms",
                f"min {min(overheads) * 1000:.0f} ms",
            )
        )
    finally:
        app.stop(grace=0)
    print(
        f"# loopback transfer, {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{args.frames}×{args.height}×{args.width}"
    )
    print(f"| {'measure':<48} | {'amount':>10} | {'time':>14} | {'rate':>12} |")
    print(f"|{'-' * 50}|{'-' * 12}:|{'-' * 16}:|{'-' * 14}:|")
    for name, amount, seconds, rate in rows:
        print(f"| {name:<48} | {amount:>10} | {seconds:>14} | {rate:>12} |")


if __name__ == "__main__":
    main()
