"""Time per frame of the clean-plate stage (``kvlock.plate``) at 480p and 1080p (a benchmark, not a test).

    python bench/plate_speed.py [--sizes 480x854 1080x1920] [--frames 33] [--threads 2]

The clip is ``kvlock.world.panning``'s: a textured background under a camera pan and a disc crossing it,
scaled with the frame (the disc's radius 15 % of the height, grown by 1 % for the matte; the pan and the
disc's speed in the same proportion as the 96-pixel clip the tests use; the texture's periods scaled by a
quarter of that, so that a frame's move stays under half its finest period, as detail in real footage does
not repeat). Each size is timed twice — a disc
that moves (most of the hole is seen in a neighbouring frame) and a disc that stands still in the frame
(trails run the whole reach before the rest is invented) — and every figure is the whole stage (flows,
trails, inpainting) over the clip divided by its frames, after one untimed warm-up frame pair. The stage
runs on the CPU (OpenCV's DIS and inpainting; no GPU path), so on a GPU machine it times that machine's CPU.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import cv2  # noqa: E402

from kvlock.media.colour import DisplayReferred  # noqa: E402
from kvlock.plate import PlateMaker, PlateOptions  # noqa: E402
from kvlock.world.panning import panning_clip  # noqa: E402


def clip_at(height: int, width: int, frames: int, moving: bool):
    """The tests' 72 × 96 panning clip at another size, its motion in proportion."""
    k = width / 96
    return panning_clip(
        frames=frames,
        height=height,
        width=width,
        pan=(1.3 * k, 0.4 * k),
        subject_start=(0.35 * width, 0.5 * height),
        subject_speed=(2.2 * k if moving else 0.0, 0.0),
        radius=0.15 * height,
        grow=max(3, round(0.01 * height)),
        keep_background=False,
        texture_scale=max(1.0, k / 4),
    )


def time_plate(height: int, width: int, frames: int, moving: bool, options: PlateOptions) -> dict:
    clip = clip_at(height, width, frames, moving)
    PlateMaker(clip.frames[:2], clip.matte[:2], DisplayReferred(255.0), options).plate(0, 2)  # warm-up
    maker = PlateMaker(clip.frames, clip.matte, DisplayReferred(255.0), options)
    began = time.perf_counter()
    maker.plate(0, frames)
    seconds = time.perf_counter() - began
    stats = maker.stats.to_dict()
    return {"per_frame": seconds / frames, "seen": stats["seen_fraction"], "pairs": stats["frame_pairs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["480x854", "1080x1920"], help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--threads", type=int, default=0, help="OpenCV's threads (0: its default)")
    parser.add_argument("--reach", type=int, default=PlateOptions.reach)
    parser.add_argument("--flow-side", type=int, default=PlateOptions.flow_side)
    args = parser.parse_args()
    if args.threads:
        cv2.setNumThreads(args.threads)
    options = PlateOptions(reach=args.reach, flow_side=args.flow_side)
    print(
        f"# clean plate, {platform.node()}, {platform.machine()}, OpenCV {cv2.__version__} "
        f"({cv2.getNumThreads()} threads), {args.frames} frames, reach {options.reach}, flow side {options.flow_side}"
    )
    print("| size | subject | s/frame | seen | frame pairs |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        for moving in (True, False):
            row = time_plate(height, width, args.frames, moving, options)
            kind = "moving" if moving else "still"
            print(f"| {height}p | {kind} | {row['per_frame']:.3f} | {row['seen']:.2f} | {row['pairs']} |", flush=True)


if __name__ == "__main__":
    main()
