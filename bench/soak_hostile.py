"""The hostile part of ``bench/soak.py``: files built to hurt a media pipeline, and clients that give up.

Before the load starts, each hostile file (``tests/support/hostile_media.py``) is sent by path to the
soak's server, one case at a time (then the largest frame the limits allow, eight at once), and the server's
peak resident memory over what it held just before is read from the kernel (``/proc/PID/status`` VmHWM,
reset per case through ``/proc/PID/clear_refs``). The same files go through ``kvlock edit`` in a child
process whose peak the kernel reports on exit (``wait4``), against the same command refused for a missing
file. During the load, ``--givers-up`` clients each submit a 3000-frame single-GOP file by path and give up
after a second, again and again; none of them may leave a job.

The stated bound (docs/server.md): checking holds about two frames of ``--max-frame-mb`` plus at most
128 MiB (the matte's float strips, the decoder's own state, the allocator's slack), per validation,
``--max-validations`` at once — at the defaults 2 × (2 × 256 + 128) MiB = 1280 MiB over idle, whatever the
files or clients do.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from kvlock_wire import editor_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import hostile_media as hostile

MIB = 1024**2
FRAME_MB, VALIDATIONS, OVERHEAD_MB = 256, 2, 128
BOUND_MB = VALIDATIONS * (2 * FRAME_MB + OVERHEAD_MB)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]
    at_once: int = 1
    own_matte: bool = False  # the file is its own matte (decoded in full twice, then refused: alpha all 0)
    cli_frames: str = ""  # the range `kvlock edit` gets for a file it accepts (the edit runs on it)


CASES = (
    Case("PNG, IHDR claims 16000² RGBA16 (56 B)", lambda d: hostile.lying_png(d / "lying.png")),
    Case("same PNG named .mov", lambda d: hostile.lying_png(d / "lying.mov")),
    Case("zlib-bomb PNG 16000×15000 RGBA (0.9 MB)", lambda d: hostile.png_bomb(d / "bomb.png", 16000, 15000)),
    Case("GIF, logical screen 8000² (35 B)", lambda d: hostile.gif_screen(d / "screen.gif", 8000, 8000)),
    Case("GIF, logical screen 16000² (35 B)", lambda d: hostile.gif_screen(d / "screen16k.gif", 16000, 16000)),
    Case("EXR, windows claim 20000² (ZIP)", lambda d: hostile.exr_claiming(d / "claim.exr")),
    Case("EXR, display 30000², data 64×48", lambda d: hostile.exr_wide_display(d / "wide.exr")),
    Case("EXR, pixel data cut short", lambda d: hostile.exr_damaged(d / "damaged.exr")),
    Case("FFV1, flipped bytes in 6 of 9 packets", lambda d: hostile.ffv1_flipped(d / "flipped.mkv")),
    Case("FFV1 64×48 packets, header 8192²", lambda d: hostile.ffv1_claiming(d / "claims.mkv")),
    Case("AVI claiming 99,999 frames (holds 9)", lambda d: hostile.avi_claiming(d / "many.avi")),
    Case(
        "timecode tag of 9 MB",
        lambda d: hostile.ffv1_clip(d / "tag.mkv", 9, timecode="1" * 9_000_000),
        cli_frames="0:3",
    ),
    Case("H.264, 3000 frames in one GOP", lambda d: hostile.long_gop(d / "gop.mp4"), cli_frames="2997:3000"),
    Case(
        "largest allowed frame: PNG 8192×4096 RGBA16 as source and matte",
        lambda d: hostile.png_bomb(d / "max.png", 8192, 4096, 6, 16),
        own_matte=True,
    ),
    Case("the same, 8 clients at once", lambda d: d / "max.png", at_once=8, own_matte=True),
)
MATTE = "matte.png"


def build(folder: Path) -> dict[str, Path]:
    """Every case's file in ``folder`` (a media root of the soak's server), and a still matte."""
    folder.mkdir(parents=True, exist_ok=True)
    hostile.still_matte(folder / MATTE)
    return {case.name: case.build(folder) for case in CASES}


class Memory:
    """The server's resident memory as the kernel counts it: now, peak, and a reset of the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def now(self) -> int:
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")


def header(job_id: str, source: Path, matte: Path) -> pb.SubmitEditRequest:
    head = pb.EditHeader(
        job_id=job_id,
        model="tiny",
        prompt="a red ball",
        settings=pb.Settings(steps=2),
        source_file=pb.FileClip(path=str(source)),
        matte_file=pb.FileClip(path=str(matte)),
    )
    return pb.SubmitEditRequest(header=head)


async def server_cases(stub, metadata, memory: Memory, files: dict[str, Path], folder: Path) -> list[dict]:
    """Each case by path, alone (or ``at_once`` together): the answer, and the peak over the RSS before it."""
    rows = []
    for n, case in enumerate(CASES):
        path = files[case.name]
        reset = memory.reset_peak()
        before = memory.now()
        began = time.time()
        matte = path if case.own_matte else folder / MATTE
        calls = [
            stub.SubmitEdit(iter([header(f"hostile-{n}-{k}", path, matte)]), metadata=metadata, timeout=300)
            for k in range(case.at_once)
        ]
        codes = []
        for k, result in enumerate(await asyncio.gather(*calls, return_exceptions=True)):
            if isinstance(result, grpc.aio.AioRpcError):
                codes.append(result.code().name)
                continue
            codes.append("OK (accepted)")  # a file whose only fault is ignored (the timecode tag): not run here
            await stub.CancelJob(pb.CancelJobRequest(job_id=f"hostile-{n}-{k}"), metadata=metadata, timeout=30)
        rows.append(
            {
                "case": case.name,
                "bytes": path.stat().st_size,
                "answer": sorted(set(codes)),
                "seconds": round(time.time() - began, 2),
                "peak_over_idle_mb": round((memory.peak() - before) / MIB) if reset else None,
            }
        )
    return rows


def _measured(command: list[str]) -> tuple[int, int]:
    """Exit code and peak resident memory (kernel's ru_maxrss) of a child process."""
    with tempfile.TemporaryFile() as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=sink)
        watchdog = threading.Timer(600, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024


def cli_cases(files: dict[str, Path], folder: Path) -> list[dict]:
    """Each case through ``kvlock edit`` (tiny model, one step): exit code and peak over the refused baseline."""

    (folder / "cli-out").mkdir(exist_ok=True)

    def edit(source: Path, matte: Path, frames: str = "") -> tuple[int, int]:
        out = folder / "cli-out" / f"{source.stem}.mkv"
        return _measured(
            [sys.executable, "-m", "kvlock_cli.main", "edit", "--model", "tiny", "--input", str(source),
             "--matte", str(matte), "--prompt", "a red ball", "--steps", "1", "--out", str(out), "--overwrite",
             *(["--frames", frames] if frames else [])]
        )  # fmt: skip

    code, baseline = edit(folder / "missing.mkv", folder / MATTE)
    rows = [{"case": "missing file (the baseline)", "exit": code, "peak_mb": round(baseline / MIB)}]
    for case in CASES:
        if case.at_once > 1:
            continue
        path = files[case.name]
        code, peak = edit(path, path if case.own_matte else folder / MATTE, case.cli_frames)
        rows.append({"case": case.name, "exit": code, "peak_over_baseline_mb": round((peak - baseline) / MIB)})
    return rows


def giver_up_file(folder: Path) -> tuple[Path, Path]:
    """A 3000-frame single-GOP 640×360 H.264 file (a few seconds to check on two cores) and its still matte."""
    hostile.still_matte(folder / "matte640.png", 640, 360)
    return hostile.long_gop(folder / "gop640.mp4", 3000, 640, 360), folder / "matte640.png"


async def giver_up(stub, metadata, files: tuple[Path, Path], k: int, stop: asyncio.Event, counts: dict) -> None:
    """Submit a long file by path and give up after a second, until the soak stops."""
    n = 0
    while not stop.is_set():
        call = stub.SubmitEdit(iter([header(f"gave-up-{k}-{n}", *files)]), metadata=metadata, timeout=60)
        n += 1
        await asyncio.sleep(1.0)
        if not call.done():
            call.cancel()
            counts["gave_up"] += 1
            counts["ids"].add(f"gave-up-{k}-{n - 1}")
        else:
            code = (await call.code()).name
            counts["answered_first"][code] = counts["answered_first"].get(code, 0) + 1
        await asyncio.sleep(0.2)


def print_hostile(result: dict) -> None:
    bound = result.get("bound_mb", BOUND_MB)
    print(f"\n# hostile files by path (server), peak RSS over the RSS just before each case; stated bound {bound} MB")
    print("| case | file | answer | peak over idle |")
    print("|---|--:|---|--:|")
    for r in result.get("server", []):
        peak = "-" if r["peak_over_idle_mb"] is None else f"{r['peak_over_idle_mb']} MB"
        print(f"| {r['case']} | {r['bytes']:,} B | {', '.join(r['answer'])} | {peak} |")
    print("\n# the same files through `kvlock edit` (peak RSS of each child over the refused baseline; an exit of 0 is")
    print("# a file whose only fault is ignored, and its row is the cost of the whole edit)")
    print("| case | exit | peak over baseline |")
    print("|---|--:|--:|")
    for r in result.get("cli", []):
        peak = f"{r['peak_mb']} MB (baseline)" if "peak_mb" in r else f"{r['peak_over_baseline_mb']} MB"
        print(f"| {r['case']} | {r['exit']} | {peak} |")
    worst = max((r["peak_over_idle_mb"] or 0 for r in result.get("server", [])), default=0)
    print(f"worst server case: {worst} MB over idle (bound {bound} MB: {'held' if worst <= bound else 'EXCEEDED'})")
    gave = result.get("givers_up", {})
    if gave:
        print(
            f"clients that gave up after 1 s: {gave['gave_up']} times (answered within the second: "
            f"{gave['answered_first']}); jobs they left: {gave['jobs_left']}"
        )
