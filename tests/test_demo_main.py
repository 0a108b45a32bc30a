"""The README's main command, run as a person would: a subprocess that writes real video files."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np

from kvlock.compositing import feather_matte
from kvlock.demo_clip import demo_clip


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, stream.average_rate, container.metadata.get("TIMECODE")


def test_demo_writes_an_edited_video_with_the_background_untouched(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "kvlock.demo", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    edited, rate, timecode = _decode(out / "edited.mkv")
    source, matte = demo_clip()
    assert edited.shape == source.shape and str(rate) == "24000/1001" and timecode == "01:00:00:00"
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0
    assert np.array_equal(edited[outside], source[outside])
    assert not np.array_equal(edited[~outside], source[~outside])
    trace = json.loads((out / "trace.json").read_text())
    assert len(trace["windows"]) == 2 and all(len(w["steps"]) == 12 for w in trace["windows"])
    assert (out / "trace.png").stat().st_size > 1000
