"""How long the Blender add-on keeps Blender's main thread busy during a 1080p job (a benchmark, not a test).

    python bench/blender_stall.py [--frames 21] [--steps 1] [--blender 5.2]

Builds a 1920×1080 scene with a 1080p plate (FFV1) and a matte clip on a muted channel above, starts a
server in this process with the tiny model, and runs the add-on inside real Blender-as-a-module through
``tests/support/blender_driver.py``, which stands in for Blender's event loop and times every call the add-on's
timer gets and the Render button's operator: the longest of those is the longest the interface would
freeze. The last tick places the result (Blender's ``new_movie`` opens the new file and decodes a frame of
it, as dropping the file into the sequencer would); it is shown on its own. Four cases: the plate uploaded
(the server reads no files), the plate by path (the server's media root holds it), a meta strip (no
media: rendered by the sequencer, one frame per timer tick), and the plate with a mask data-block as the
matte (rasterised by Blender at the plate's size, one frame per tick). ``--cases`` picks some of them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from kvlock.media.encode import write_video
from kvlock_server.app import ServerConfig, create_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.blender_launch import run_driver  # the add-on's test driver stands in for Blender's loop

W, H = 1920, 1080


def plate_frames(count: int) -> np.ndarray:
    """A textured plate (gradients and grain) that FFV1 encodes at a realistic size."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x * 255 // W, y * 255 // H, (x + y) % 256], -1).astype(np.int16)
    frames = [np.clip(base + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8) for _ in range(count)]
    return np.stack(frames)


CASES = {"upload": ("movie", False), "by path": ("movie", True), "meta": ("meta", False), "mask": ("mask", False)}
LABELS = {"upload": "upload", "by path": "by path", "meta": "meta (sequencer)", "mask": "mask data-block"}


def scene(folder: Path, frames: int, source: str) -> dict:
    matte = {
        "name": "matte",
        "kind": "movie",
        "path": str(folder / "matte.mkv"),
        "channel": 4,
        "start": 1,
        "fit": "ORIGINAL",
    }
    plate = {"name": "shot", "kind": "movie", "path": str(folder / "plate.mkv"), "channel": 2, "start": 1}
    if source == "meta":
        plate = {"name": "shot", "kind": "meta", "channel": 2, "start": 1, "inner": [plate | {"name": "inner"}]}
    cfg = {
        "scene": {"width": W, "height": H, "fps": [24, 1.0], "frame_start": 1, "frame_end": frames},
        "strips": [plate, matte],
        "channels": {"4": {"mute": True}},
        "active": "shot",
        "props": {"matte_strip": "matte"},
    }
    if source == "mask":
        cfg["masks"] = {"square": [[0.33, 0.4], [0.5, 0.4], [0.5, 0.55], [0.33, 0.55]]}
        cfg["props"] = {"matte_kind": "MASK", "mask": "square"}
    return cfg


def drive(version: str, cfg: dict, work: Path, address: str, token: str) -> dict:
    out = Path(tempfile.mkdtemp(dir=work, prefix="out-"))
    began = time.perf_counter()
    report = run_driver(version, "render", cfg | {"out": str(out), "address": address, "token": token}, work, 3000)
    report["wall"] = time.perf_counter() - began
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--blender", default="5.2", choices=["5.0", "5.2"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kvlock-stall-"))
    media = work / "media"
    media.mkdir()
    frames = plate_frames(args.frames)
    matte = np.zeros_like(frames)
    matte[:, H // 3 : H // 2, W // 3 : W // 2] = 255
    write_video(media / "plate.mkv", frames, Fraction(24))
    write_video(media / "matte.mkv", matte, Fraction(24))
    rows = []
    for case in args.cases:
        label, (source, by_path) = LABELS[case], CASES[case]
        roots = [str(media)] if by_path else []
        config = ServerConfig(port=0, state_dir=work / f"state-{len(rows)}", preload=["tiny"], media_roots=roots)
        app = create_server(config)
        try:
            cfg = scene(media, args.frames, source) | {"steps": args.steps}
            report = drive(args.blender, cfg, work, app.address, app.token)
        finally:
            app.stop(grace=0)
        if not report["status"].startswith("Done"):
            raise SystemExit(f"{label}: {report['status']}")
        button, ticks, place = report["main_thread_ms"][0], report["main_thread_ms"][1:-1], report["main_thread_ms"][-1]
        rows.append((label, button, max(ticks), float(np.median(ticks)), place, len(ticks) + 1, report["wall"]))
    print(
        f"# main-thread time, Blender {args.blender} (bpy), {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {args.frames}×{H}×{W}, {args.steps} step(s)"
    )
    print("| case              | Render button | longest tick | median tick | placing tick | ticks | job wall |")
    print("|-------------------|--------------:|-------------:|------------:|-------------:|------:|---------:|")
    for label, button, longest, median, place, ticks, wall in rows:
        cells = f"{button:>10.1f} ms | {longest:>9.1f} ms | {median:>8.1f} ms | {place:>9.1f} ms"
        cells += f" | {ticks:>5} | {wall:>6.1f} s"
        print(f"| {label:<17} | {cells} |")


if __name__ == "__main__":
    main()
