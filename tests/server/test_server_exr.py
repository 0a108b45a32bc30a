"""EXR plates through the server in path mode: the plate's files are read through the descriptors the server
opened and checked, and the EXR written back takes each source file's header from those same files."""

from __future__ import annotations

import numpy as np
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.encode import write_video
from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import FileClip, Params, RequestRejectedError

from ..support.server_helpers import client, start, states, wait_for

openexr = pytest.importorskip("OpenEXR")


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint16)


@pytest.fixture()
def plate(tmp_path):
    frames, matte = demo_clip(frames=4, height=32, width=48)
    folder = tmp_path / "media"
    (folder / "plate").mkdir(parents=True)
    for n, frame in enumerate(frames):
        rgb = ((frame.astype(np.float32) / 255.0) ** 2.2 * 4.0).astype(np.float16)
        channels = {c: np.ascontiguousarray(rgb[..., i]) for i, c in enumerate("RGB")}
        channels["A"] = np.full(rgb.shape[:2], 0.5, np.float16)
        header = {"compression": openexr.PIZ_COMPRESSION, "owner": "scan"}
        openexr.File(header, channels).write(str(folder / "plate" / f"plate.{1001 + n}.exr"))
    write_video(folder / "matte", np.repeat(matte[..., None], 3, -1), 24, "png")
    write_video(folder / "shot.mkv", frames, 24, "ffv1")
    return folder, matte


def test_an_exr_plate_named_by_path_comes_back_as_exr_with_its_headers(tmp_path, plate):
    folder, matte = plate
    app = start(tmp_path / "state", media_roots=[str(folder)])
    try:
        c = client(app)
        params = Params("a red ball", model="tiny-random", settings={"steps": 2}, codec="exr")
        c.submit(FileClip("Source", str(folder / "plate")), FileClip("Matte", str(folder / "matte")), params, "exr")
        wait_for(lambda: states(app)["exr"] in ("succeeded", "failed"))
        assert states(app)["exr"] == "succeeded", app.store.get("exr").message
        out = c.fetch("exr", tmp_path / "fetched")["video"]
        outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0
        for k, number in enumerate(range(1001, 1005)):
            src = openexr.File(str(folder / "plate" / f"plate.{number}.exr"), separate_channels=True)
            dst = openexr.File(str(out / f"{out.name}.{number}.exr"), separate_channels=True)
            assert dst.header()["owner"] == "scan"  # the header came from the pinned source file
            for name in "RGB":
                assert (_bits(dst.channels()[name].pixels) == _bits(src.channels()[name].pixels))[outside[k]].all()
        with pytest.raises(RequestRejectedError) as info:  # a display-referred source cannot be written as EXR
            c.submit(FileClip("Source", str(folder / "shot.mkv")), FileClip("Matte", str(folder / "matte")), params)
        assert info.value.code == "INVALID_ARGUMENT" and "EXR" in str(info.value)
    finally:
        app.stop(grace=0)
