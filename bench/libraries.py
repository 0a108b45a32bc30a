"""The field's libraries against what they replace or were weighed against (a benchmark, not a test).

    python bench/libraries.py [--runs 7]

Prints: which frame rates OpenTimelineIO's ``opentime`` gives timecode for, against the hand-written
``kvlock.media.timecode`` the hosts ship; how the two agree where both serve; which malformed timecodes
``opentime`` accepts; and the import time of each library the command line now loads (median of ``--runs``
fresh interpreters, ``python -X importtime``'s cumulative figure for the module).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
from fractions import Fraction

import opentimelineio as otio

from kvlock.media.timecode import format_timecode, parse_timecode

ot = otio.opentime
NTSC = [Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120)]
MALFORMED = ("00:60:00:00", "01:00:00:00:00", "00:00:60:00")


def rates() -> None:
    whole = [r for r in range(1, 1001) if ot.RationalTime.is_smpte_timecode_rate(r)]
    ntsc = [f"{float(r):.3f}" for r in NTSC if ot.RationalTime.is_smpte_timecode_rate(float(r))]
    print(f"opentime gives timecode at {len(whole)} of the whole rates 1–1000 fps: {whole}; NTSC: {ntsc}")
    print("kvlock.media.timecode: every rate 1–1000 fps (the wire's range), drop-frame at 29.97 and 59.94")


def agreement() -> None:
    for rate in [*NTSC[:4], *map(Fraction, (24, 25, 30, 48, 50, 60))]:
        last = f"23:59:59{';' if rate.denominator == 1001 and round(rate) in (30, 60) else ':'}{round(rate) - 1}"
        frames = range(0, parse_timecode(last, rate) + 1, 7)  # every 7th frame of a timecode day
        differ = [n for n in frames if format_timecode(n, rate) != ot.to_timecode(ot.RationalTime(n, float(rate)))]
        parsed = sum(parse_timecode(format_timecode(n, rate), rate) != n for n in frames[::97])
        print(f"{float(rate):7.3f} fps: {len(frames)} frames, formatted differently at {len(differ)}"
              f"{f' (first {differ[0]})' if differ else ''}; round trips off: {parsed}")  # fmt: skip


def malformed() -> None:
    for text in MALFORMED:
        try:
            theirs = str(ot.from_timecode(text, 24).to_frames())
        except ValueError as exc:
            theirs = f"refused ({exc})"
        try:
            ours = str(parse_timecode(text, Fraction(24)))
        except ValueError:
            ours = "refused"
        print(f"{text!r} at 24 fps: opentime {theirs}; ours {ours}")


def import_ms(module: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                              text=True, check=True)  # fmt: skip
        last = done.stderr.strip().splitlines()[-1]
        times.append(int(last.split("|")[1]) / 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, OpenTimelineIO {otio.__version__}, {platform.machine()}")
    rates()
    agreement()
    malformed()
    for module in ("tqdm", "rich.progress", "tomlkit", "opentimelineio"):
        print(f"import {module}: {import_ms(module, args.runs):.1f} ms (median of {args.runs})")


if __name__ == "__main__":
    main()
