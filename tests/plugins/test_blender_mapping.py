"""The Blender add-on's pure maths, without Blender: which media frame a strip shows at a timeline frame,
and where a strip's pixels land on the canvas. (That Blender itself agrees is checked in real bpy by
``test_blender_addon.py::test_blender_shows_the_frames_and_places_the_pixels_the_addon_computes``.)

The modules import nothing of bpy, so they are loaded here straight from ``plugins/blender``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ADDON = Path(__file__).resolve().parents[2] / "plugins" / "blender"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"kvlock_blender_{name}", ADDON / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


timing = _load("timing")
geometry = _load("geometry")
exr_header = _load("exr_header")


def test_media_frames_follow_content_start_hold_offset_and_held_frames():
    t = timing.StripTiming(content_start=1003, content_duration=20, trim_start=3, trim_end=1)
    assert timing.media_indices(t, 20, 1005, 1010) == [5, 6, 7, 8, 9]
    # before the content the first frame holds, after it the last (handles dragged past the media)
    assert timing.media_indices(t, 20, 1001, 1004) == [3, 3, 3]
    assert timing.media_indices(t, 20, 1021, 1025) == [21, 22, 22, 22]
    still = timing.StripTiming(content_start=1, content_duration=1, single_image=True)
    assert timing.media_indices(still, 1, 5, 8) == [0, 0, 0]
    with pytest.raises(ValueError, match="no media frames"):
        timing.media_indices(t, 0, 1005, 1006)


def test_contiguous_ranges_are_found_and_anything_else_is_not():
    assert timing.contiguous([5, 6, 7]) == (5, 8)
    assert timing.contiguous([3, 3, 4]) is None  # a held frame: not one range of the file
    assert timing.contiguous([7, 6]) is None and timing.contiguous([]) is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"reverse": True}, "plays its media reversed"),
        ({"strobe": 3.0}, "Strobe 3"),
        ({"retiming_keys": 2}, "retimed (2 retiming keys)"),
        ({"content_start": 10.5}, "fractional frame 10.5"),
    ],
)
def test_retimed_strips_are_named_with_what_to_change(change, words):
    base = {"content_start": 10, "content_duration": 20}
    assert timing.retime_problem("shot", timing.StripTiming(**base)) is None
    assert words in timing.retime_problem("shot", timing.StripTiming(**(base | change)))


def test_a_movie_at_another_rate_is_refused_only_when_blender_retimes_it():
    scene, movie = Fraction(24000, 1001), Fraction(30000, 1001)
    one_to_one = timing.StripTiming(content_start=1, content_duration=18, trim_start=2)
    assert timing.rate_problem("shot", one_to_one, 20, movie, scene) is None  # plays a media frame per frame
    retimed = timing.StripTiming(content_start=1, content_duration=14, trim_start=2)  # 18 · 24/30
    message = timing.rate_problem("shot", retimed, 20, movie, scene)
    assert "runs at 30000/1001 fps and the scene at 24000/1001" in message and "Frame Rate" in message
    assert timing.rate_problem("shot", retimed, 20, scene, scene) is None


def test_a_default_strip_is_centred_on_the_canvas():
    plate = geometry.StripGeometry(160, 88)
    m = geometry.image_to_canvas(plate, (96, 96))
    assert np.allclose(m @ [80, 44, 1], [48, 48, 1])  # image centre → canvas centre
    odd = geometry.image_to_canvas(geometry.StripGeometry(41, 30), (64, 48))
    assert np.allclose(odd @ [0, 0, 1], [math.trunc(23 / 2), 9, 1])  # whole-pixel centring, truncated as C does


def test_a_half_resolution_matte_scaled_twice_as_much_maps_two_plate_pixels_to_one():
    """The composition the bpy tests build: plate 160×88 fitted (0.6) and offset, matte 80×44 at 1.2."""
    plate = geometry.StripGeometry(160, 88, offset=(6.0, -4.0), scale=(0.6, 0.6))
    matte = geometry.StripGeometry(80, 44, offset=(6.0, -4.0), scale=(1.2, 1.2))
    m = geometry.plate_to_matte(plate, matte, (96, 96))
    assert np.allclose(m, np.diag([0.5, 0.5, 1.0]))
    values = np.zeros((44, 80), np.float32)
    values[10:25, 8:25] = 1.0
    mapped = geometry.matte_into_plate(values, matte, plate, (96, 96))
    assert mapped.shape == (88, 160)
    assert (mapped[22:48, 18:48] == 1.0).all() and (mapped[:18] == 0).all() and (mapped[:, 52:] == 0).all()


def test_identity_and_whole_pixel_maps_copy_pixels_exactly():
    rng = np.random.default_rng(0)
    values = rng.random((30, 40)).astype(np.float32)
    same = geometry.StripGeometry(40, 30, offset=(3.0, 2.0))
    assert np.array_equal(geometry.matte_into_plate(values, same, same, (64, 48)), values)
    shifted = geometry.StripGeometry(40, 30, offset=(5.0, 2.0))  # the matte sits 2 pixels further right
    out = geometry.matte_into_plate(values, shifted, same, (64, 48))
    assert geometry.whole_pixel_shift(geometry.plate_to_matte(same, shifted, (64, 48))) == (-2, 0)
    assert np.array_equal(out[:, 2:], values[:, :-2]) and (out[:, :2] == 0).all()


def test_crop_and_flip_decide_which_pixels_exist():
    image = np.arange(12, dtype=np.float32).reshape(3, 4) + 1.0
    cropped = geometry.StripGeometry(4, 3, crop=(1, 0, 0, 1))  # one pixel off the left and the top
    inverse = np.linalg.inv(geometry.image_to_canvas(cropped, (4, 3)))
    shown = geometry.sample(image, inverse, (4, 3), cropped.crop, nearest=True)
    assert (shown[0] == 0).all() and (shown[:, 0] == 0).all() and np.array_equal(shown[1:, 1:], image[1:, 1:])
    flipped = geometry.StripGeometry(4, 3, flip=(True, False))
    inverse = np.linalg.inv(geometry.image_to_canvas(flipped, (4, 3)))
    assert np.array_equal(geometry.sample(image, inverse, (4, 3), nearest=True), image[:, ::-1])


def test_bilinear_sampling_keeps_flat_areas_flat_and_is_zero_outside():
    image = np.full((10, 10), 0.75, np.float32)
    half = geometry.StripGeometry(10, 10, scale=(0.5, 0.5))
    inverse = np.linalg.inv(geometry.image_to_canvas(half, (10, 10)))
    out = geometry.sample(image, inverse, (10, 10))
    assert np.allclose(out[4:6, 4:6], 0.75) and (out[:2] == 0).all() and (out[:, -2:] == 0).all()


def test_an_exr_plates_size_is_its_display_window_read_from_the_header(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    pixels = np.ones((20, 30), np.float32) * 2.5
    header = {"displayWindow": ((0, 0), (56, 32)), "dataWindow": ((4, 6), (33, 25)), "owner": "scan"}
    openexr.File(header, {c: pixels.copy() for c in "RGB"}).write(str(tmp_path / "p.1001.exr"))
    assert exr_header.display_size(tmp_path / "p.1001.exr") == (57, 33)  # not the data window's 30×20
    (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(exr_header.ExrHeaderError, match="not an OpenEXR file"):
        exr_header.display_size(tmp_path / "p.png")


def test_the_addons_own_movie_reader_turns_phone_footage_as_the_project_reads_it(tmp_path):
    """Frames the add-on decodes itself (a strip's held or reordered frames, uploaded) turn by the display
    rotation exactly as the project's reader and Blender do (Blender's side: test_blender_addon.py)."""
    import importlib
    import types

    from kvlock.media.decode import probe, read_frames

    from ..support.media_helpers import unique_frames, write_turned

    package = types.ModuleType("kvlock_blender_addon")
    package.__path__ = [str(ADDON)]  # its modules without its __init__ (which needs bpy)
    sys.modules.setdefault("kvlock_blender_addon", package)
    media = importlib.import_module("kvlock_blender_addon.media")
    info = probe(write_turned(tmp_path / "phone.mkv", unique_frames(8, 20, 36), Fraction(30), 90))
    reader = media.MovieReader(info)
    try:
        shown = read_frames(info, 0, 8)
        assert shown.shape[1:3] == (36, 20)
        for index in (5, 6, 1):  # forward, then back (a seek)
            assert np.array_equal(reader.read(index), shown[index])
    finally:
        reader.close()
