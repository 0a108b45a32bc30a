"""The real ``kvlock`` command against hostile files: a non-zero exit with one line naming the file, no
output, and almost no memory — measured by the kernel for each child process (``wait4``), against the same
command refused for a missing file. Each failed before these guards (the 68-byte PNG cost 1.9 GiB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import av
import pytest

from ..support import hostile_media as hostile

KVLOCK = [str(Path(sys.executable).with_name("kvlock"))]
if not Path(KVLOCK[0]).exists():
    KVLOCK = [sys.executable, "-m", "kvlock_cli.main"]
MIB = 1024**2


def measured(*args: str, timeout: float = 600) -> tuple[int, str, str, int]:
    """Exit code, stdout, stderr and the child's peak resident memory (ru_maxrss) of ``kvlock ARGS``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*KVLOCK, *args], stdout=out, stderr=err)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss * 1024


def edit_args(source: Path, matte: Path, out: Path, *extra: str) -> list[str]:
    return ["edit", "--model", "tiny", "--input", str(source), "--matte", str(matte), "--prompt", "a red ball",
            "--steps", "1", "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    hostile.still_matte(folder / "matte.png")
    return folder


@pytest.fixture(scope="module")
def baseline(media):
    """The command's own peak: refused at once for a missing input (torch and the engine imported)."""
    code, _, _, peak = measured(*edit_args(media / "missing.mkv", media / "matte.png", media / "never.mkv"))
    assert code == 3
    return peak


CASES = {
    "png_claims_16000": lambda m: hostile.lying_png(m / "lying.png"),
    "png_named_mov": lambda m: hostile.lying_png(m / "lying.mov"),
    "png_bomb": lambda m: hostile.png_bomb(m / "bomb.png", 16000, 2000, colour=6),
    "gif_screen": lambda m: hostile.gif_screen(m / "screen.gif", 16000, 16000),
    "exr_claims_20000": lambda m: hostile.exr_claiming(m / "claim.exr"),
    "exr_wide_display": lambda m: hostile.exr_wide_display(m / "wide.exr"),
    "exr_damaged": lambda m: hostile.exr_damaged(m / "damaged.exr"),
    "ffv1_flipped": lambda m: hostile.ffv1_flipped(m / "flipped.mkv"),
    "ffv1_claims_8192": lambda m: hostile.ffv1_claiming(m / "claims.mkv"),
    "avi_claims_99999": lambda m: hostile.avi_claiming(m / "many.avi"),
}


@pytest.mark.parametrize("case", CASES)
def test_kvlock_edit_refuses_a_hostile_file_with_code_4_one_line_and_no_memory(media, baseline, tmp_path, case):
    source = CASES[case](media)
    out = tmp_path / "never.mkv"
    code, _, stderr, peak = measured(*edit_args(source, media / "matte.png", out))
    lines = [line for line in stderr.splitlines() if line.startswith("kvlock: error:")]
    assert code == 4, stderr
    assert len(lines) == 1 and str(source) in lines[0] and "Traceback" not in stderr
    assert not out.exists()
    assert peak - baseline < 192 * MIB, f"{(peak - baseline) / MIB:.0f} MiB over the command's own peak"


def test_kvlock_submit_refuses_a_hostile_file_before_it_uploads_a_byte(media, baseline):
    source = hostile.lying_png(media / "submit.png")
    code, _, stderr, peak = measured("submit", "--server", "127.0.0.1:9", "--input", str(source), "--matte",
                                     str(media / "matte.png"), "--prompt", "a red ball")  # fmt: skip
    assert code == 4 and "16000×16000" in stderr and "unreachable" not in stderr
    assert peak - baseline < 192 * MIB


def test_json_output_stays_json_when_a_library_prints_to_stdout(media, tmp_path):
    source = hostile.exr_damaged(media / "json.exr")
    code, stdout, stderr, _ = measured(*edit_args(source, media / "matte.png", tmp_path / "o.mkv", "--json"))
    events = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON: OpenEXR printed elsewhere
    assert code == 4 and events[-1]["event"] == "error" and events[-1]["exit_code"] == 4
    assert "Warning: Exception raised reading pixel data" in stderr


def test_a_bad_timecode_tag_is_ignored_with_a_warning_and_the_edit_succeeds(media, tmp_path):
    source = hostile.ffv1_clip(media / "tagged.mkv", 3, timecode="zz:99:99:99")
    out = tmp_path / "tagged_edit.mkv"
    code, stdout, stderr, _ = measured(*edit_args(source, media / "matte.png", out, "--json"))
    assert code == 0, stderr
    messages = [json.loads(line).get("text", "") for line in stdout.splitlines()]
    assert any("timecode tag 'zz:99:99:99' is not a timecode" in m for m in messages)
    with av.open(str(out)) as container:
        assert "timecode" not in container.streams.video[0].metadata
    assert json.loads(out.with_name("tagged_edit.trace.json").read_text())["timecode"] is None
