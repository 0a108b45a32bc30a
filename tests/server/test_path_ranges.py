"""Path mode keeps each file's own range: a matte file offset from its source (a slipped matte clip) is read
at its own frames, through the bridge and through ``kvlock submit``, against a real server on loopback.

The matte's box moves three pixels per frame, so matte frames read at the source's range instead of their
own would put the lock's edge somewhere else and the bit-exact background check would fail.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock_bridge import FileClip, Params, RequestRejectedError, render
from kvlock_cli.main import main as kvlock_main

from ..support.media_helpers import unique_frames
from ..support.server_helpers import client, start

SIZE = 64
SOURCE_RANGE, MATTE_RANGE = (4, 12), (15, 23)  # eight frames each, eleven frames apart


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranged-media")
    frames = unique_frames(20, SIZE, SIZE, seed=3)
    matte = np.zeros((30, SIZE, SIZE), np.uint8)
    for index in range(30):
        matte[index, 20:44, 3 * index % 40 : 3 * index % 40 + 20] = 255
    write_video(folder / "shot.mkv", frames, Fraction(24))
    write_video(folder / "matte.mkv", np.repeat(matte[..., None], 3, -1), Fraction(24))
    return {"folder": folder, "frames": frames, "matte": matte}


@pytest.fixture(scope="module")
def server(tmp_path_factory, media):
    app = start(tmp_path_factory.mktemp("ranged-state"), preload=["tiny"], media_roots=[str(media["folder"])])
    yield app
    app.stop(grace=0)


def assert_locked_to(result, media, source_range, matte_range) -> None:
    """Outside the feathered matte frames ``matte_range`` the result is the source, bit for bit; inside it is not."""
    count = source_range[1] - source_range[0]
    edited = read_frames(probe(result), 0, count)[..., :3]
    source = media["frames"][source_range[0] : source_range[1]]
    mattes = media["matte"][matte_range[0] : matte_range[1]]
    outside = np.stack([feather_matte(m / 255.0, 4) for m in mattes]) == 0
    assert np.array_equal(edited[outside], source[outside])
    assert not np.array_equal(edited[~outside], source[~outside])


def params() -> Params:
    return Params("a red cube", settings={"steps": 2, "seed": 1})


def test_a_matte_file_with_its_own_range_is_read_at_its_own_frames(server, media, tmp_path):
    shot, matte = str(media["folder"] / "shot.mkv"), str(media["folder"] / "matte.mkv")
    done = render(
        client(server), FileClip("Source", shot, *SOURCE_RANGE), FileClip("Matte", matte, *MATTE_RANGE), params(),
        tmp_path / "ranged.mkv",
    )  # fmt: skip
    assert_locked_to(done.output, media, SOURCE_RANGE, MATTE_RANGE)
    with pytest.raises(AssertionError):  # the check tells the two apart: the source's range is the wrong one
        assert_locked_to(done.output, media, SOURCE_RANGE, SOURCE_RANGE)


def test_a_matte_file_without_a_range_still_follows_the_source(server, media, tmp_path):
    shot, matte = str(media["folder"] / "shot.mkv"), str(media["folder"] / "matte.mkv")
    done = render(client(server), FileClip("Source", shot, *SOURCE_RANGE), FileClip("Matte", matte), params(),
                  tmp_path / "follows.mkv")  # fmt: skip
    assert_locked_to(done.output, media, SOURCE_RANGE, SOURCE_RANGE)


@pytest.mark.parametrize(
    ("matte_range", "words"),
    [((15, 20), "has 5 frames but the source's has 8"), ((25, 33), "outside the file's [0, 30)")],
)
def test_a_matte_range_that_cannot_go_with_the_source_is_refused_before_work(server, media, matte_range, words):
    shot, matte = str(media["folder"] / "shot.mkv"), str(media["folder"] / "matte.mkv")
    with pytest.raises(RequestRejectedError) as info:
        client(server).submit(FileClip("Source", shot, *SOURCE_RANGE), FileClip("Matte", matte, *matte_range), params())
    assert info.value.code == "INVALID_ARGUMENT" and words in str(info.value)


@pytest.mark.parametrize("mode", ["--path", "--upload"])
def test_kvlock_submit_takes_the_mattes_own_frames(server, media, tmp_path, mode):
    out = tmp_path / "cli.mkv"
    code = kvlock_main(
        [
            "submit", "--server", server.address, "--token", server.token,
            "--input", str(media["folder"] / "shot.mkv"), "--matte", str(media["folder"] / "matte.mkv"),
            "--prompt", "a red cube", "--steps", "2", "--seed", "1",
            "--frames", "{}:{}".format(*SOURCE_RANGE), "--matte-frames", "{}:{}".format(*MATTE_RANGE),
            *(["--path"] if mode == "--path" else []), "--wait", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    assert_locked_to(out, media, SOURCE_RANGE, MATTE_RANGE)
