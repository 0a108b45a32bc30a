"""Media round trips on real PyAV encoders and decoders: ranges, rates, timecodes, colour tags, mattes."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from kvlock.errors import MatteError, MediaNotFoundError, OutputExistsError, UnreadableMediaError
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock.media.matte import MatteOptions, load_matte
from kvlock.media.timecode import format_timecode, parse_range, parse_timecode

from .media_helpers import unique_frames, write_h264_gop, write_image_sequence

NTSC_FILM = Fraction(24000, 1001)


@pytest.mark.parametrize(("channels", "dtype"), [(3, np.uint8), (4, np.uint8), (3, np.uint16), (4, np.uint16)])
def test_ffv1_round_trip_is_exact(tmp_path, channels, dtype):
    frames = unique_frames(7, 36, 50, channels, dtype)
    path = write_video(tmp_path / "clip.mkv", frames, NTSC_FILM, "ffv1")
    info = probe(path)
    assert (info.frames, info.width, info.height, info.has_alpha, info.deep) == (
        7,
        50,
        36,
        channels == 4,
        dtype == np.uint16,
    )
    assert info.rate == NTSC_FILM
    back = read_frames(info, 0, 7)
    assert back.dtype == dtype and np.array_equal(back, frames)


@pytest.mark.parametrize(("channels", "dtype"), [(3, np.uint8), (4, np.uint16)])
def test_png_sequence_output_round_trip_is_exact(tmp_path, channels, dtype):
    frames = unique_frames(5, 20, 30, channels, dtype)
    folder = write_video(tmp_path / "shot_png", frames, Fraction(25), "png")
    info = probe(folder)
    assert info.kind == "sequence" and info.frames == 5
    assert np.array_equal(read_frames(info, 0, 5), frames)


def test_prores_4444_keeps_alpha_and_is_near_lossless(tmp_path):
    frames = unique_frames(4, 32, 48, 4, np.uint8)
    frames[..., :3] = np.clip(frames[..., :3], 16, 235)  # smooth-enough values for a 10-bit 4:4:4 codec
    info = probe(write_video(tmp_path / "clip.mov", frames, NTSC_FILM, "prores", timecode="00:59:59:00"))
    assert info.has_alpha and info.codec == "prores"
    back = read_frames(info, 0, 4)
    assert info.deep and back.dtype == np.uint16  # ProRes 4444 is 10/12-bit: read without losing bits
    back8 = np.rint(back / 257.0)
    assert np.abs(back8 - frames).max() <= 2
    assert np.array_equal(back8[..., 3], frames[..., 3])


@pytest.mark.parametrize(("codec", "suffix"), [("ffv1", ".mkv"), ("prores", ".mov"), ("h264", ".mp4")])
def test_timecode_rate_and_colour_tags_survive(tmp_path, codec, suffix):
    frames = unique_frames(6, 32, 48)
    path = write_video(tmp_path / f"clip{suffix}", frames, NTSC_FILM, codec, timecode="01:00:00:12")
    info = probe(path)
    assert info.rate == NTSC_FILM and info.timecode == "01:00:00:12" and info.frames == 6
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        tags = (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range)
    assert tags == ((1, 1, 0, 2) if codec == "ffv1" else (1, 1, 1, 1))  # BT.709; RGB full / YUV limited


def test_yuv_outputs_use_the_bt709_matrix(tmp_path):
    red = np.zeros((2, 32, 32, 3), np.uint8)
    red[..., 0] = 255
    path = write_video(tmp_path / "red.mp4", red, Fraction(25), "h264")
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        luma = np.frombuffer(bytes(frame.planes[0]), np.uint8).reshape(-1, frame.planes[0].line_size)[:32, :32]
    assert abs(int(np.median(luma)) - 63) <= 1  # BT.709 limited range: 16 + 219·0.2126; BT.601 would give 82
    assert np.abs(read_frames(probe(path), 0, 2)[0].astype(int) - [255, 0, 0]).max() <= 3


def test_range_by_pts_is_exact_in_a_gop_coded_stream(tmp_path):
    frames = unique_frames(60, 32, 48, seed=3)
    path = write_h264_gop(tmp_path / "gop.mp4", frames, NTSC_FILM)
    info = probe(path)
    whole = read_frames(info, 0, 60)
    for start, end in ((37, 45), (0, 3), (12, 13), (50, 60)):
        part = read_frames(info, start, end)
        assert np.array_equal(part, whole[start:end]), (start, end)


def test_timecode_ranges_on_a_clip_with_a_nonzero_start(tmp_path):
    frames = unique_frames(30, 16, 24)
    info = probe(write_video(tmp_path / "tc.mkv", frames, NTSC_FILM, "ffv1", timecode="01:00:00:00"))
    start, end = parse_range("01:00:00:05-01:00:01:02", info.frames, info.rate, info.timecode)
    assert (start, end) == (5, 26)
    assert np.array_equal(read_frames(info, start, end), frames[5:26])
    assert parse_range("3:", 30, info.rate, None) == (3, 30)
    with pytest.raises(ValueError, match="source has frames"):
        parse_range("10:40", 30, info.rate, None)


def test_drop_frame_timecode_counts_like_smpte():
    rate = Fraction(30000, 1001)
    assert format_timecode(1800, rate) == "00:01:00;02"
    assert format_timecode(17982, rate) == "00:10:00;00"
    assert parse_timecode("01:00:00;00", rate) == 107892
    assert format_timecode(86400, NTSC_FILM) == "01:00:00:00"


@pytest.mark.parametrize("codec", ["png", "tiff"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_image_sequences_in_every_naming(tmp_path, codec, dtype):
    frames = unique_frames(4, 12, 18, 3, dtype)
    folder = write_image_sequence(tmp_path / "seq", frames, codec)
    suffix = "png" if codec == "png" else "tif"
    for spec in (
        folder,
        folder / f"shot.%04d.{suffix}",
        folder / f"shot.####.{suffix}",
        folder / f"shot.1002.{suffix}",
    ):
        info = probe(spec)
        assert info.kind == "sequence" and info.frames == 4 and info.first_number == 1001
        assert np.array_equal(read_frames(info, 1, 3), frames[1:3])


def test_exr_sequence_is_read_display_referred(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    linear = np.array([0.0, 0.0031308, 0.18, 1.0, 4.0], np.float32)
    image = np.repeat(linear[None, :, None], 3, axis=2).repeat(2, axis=0)
    for n in range(2):
        header = {"compression": openexr.ZIP_COMPRESSION, "type": openexr.scanlineimage}
        openexr.File(header, {"RGB": image}).write(str(tmp_path / f"plate.{n:04d}.exr"))
    info = probe(tmp_path / "plate.0000.exr")
    pixels = read_frames(info, 0, 2)
    assert info.kind == "sequence" and pixels.dtype == np.uint16
    expected = [0.0, 0.0404500, 0.4613561, 1.0, 1.0]  # sRGB encoding, clipped above 1
    assert np.allclose(pixels[0, 0, :, 0] / 65535.0, expected, atol=2e-5)


def test_missing_and_unreadable_media_are_told_apart(tmp_path):
    with pytest.raises(MediaNotFoundError):
        probe(tmp_path / "nope.mov")
    bogus = tmp_path / "bogus.mov"
    bogus.write_text("not a movie")
    with pytest.raises(UnreadableMediaError):
        probe(bogus)
    (tmp_path / "gap").mkdir()
    write_image_sequence(tmp_path / "gap", unique_frames(3, 8, 8))
    (tmp_path / "gap" / "shot.1002.png").unlink()
    with pytest.raises(UnreadableMediaError, match="missing frames"):
        probe(tmp_path / "gap")


def test_outputs_are_atomic_and_never_overwritten_silently(tmp_path, monkeypatch):
    frames = unique_frames(5, 16, 16)
    target = write_video(tmp_path / "out.mkv", frames, Fraction(24), "ffv1")
    before = target.read_bytes()
    with pytest.raises(OutputExistsError):
        write_video(target, frames[:2], Fraction(24), "ffv1")
    calls = {"n": 0}
    real = av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(KeyboardInterrupt):
        write_video(target, frames, Fraction(24), "ffv1", overwrite=True)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.mkv"]


# -- mattes ----------------------------------------------------------------------------------------------


def _source(tmp_path, count=10, height=24, width=32):
    frames = unique_frames(count, height, width)
    return probe(write_video(tmp_path / "src.mkv", frames, NTSC_FILM, "ffv1"))


def _matte_frames(count, height, width):
    matte = np.zeros((count, height, width), np.uint8)
    for t in range(count):
        matte[t, 4:12, t : t + 8] = 255
    return matte


def test_grayscale_matte_video_read_over_the_same_range(tmp_path):
    source = _source(tmp_path)
    matte = _matte_frames(10, 24, 32)
    info = probe(write_video(tmp_path / "m.mkv", np.repeat(matte[..., None], 3, -1), NTSC_FILM, "ffv1"))
    values, warnings = load_matte(info, source, 2, 6)
    assert warnings == [] and values.shape == (4, 24, 32)
    assert np.array_equal(values > 0.5, matte[2:6] > 0)


def test_alpha_channel_matte_and_options(tmp_path):
    source = _source(tmp_path)
    rgba = np.zeros((10, 24, 32, 4), np.uint8)
    rgba[..., 3] = _matte_frames(10, 24, 32)
    rgba[..., :3] = 200  # bright colour that luma would mistake for a full matte
    info = probe(write_video(tmp_path / "a.mkv", rgba, NTSC_FILM, "ffv1"))
    values, _ = load_matte(info, source, 0, 10)
    assert np.array_equal(values > 0.5, rgba[..., 3] > 0)
    inverted, _ = load_matte(info, source, 0, 10, MatteOptions(invert=True))
    assert np.allclose(inverted, 1.0 - values)
    grown, _ = load_matte(info, source, 0, 10, MatteOptions(dilate=2))
    assert grown.sum() > values.sum() and (grown >= values).all()
    luma, _ = load_matte(info, source, 0, 10, MatteOptions(channel="luma", threshold=0.5))
    assert luma.min() == 1.0


def test_still_and_trimmed_mattes_are_repaired_with_a_warning(tmp_path):
    source = _source(tmp_path)
    still = write_image_sequence(tmp_path / "still", _matte_frames(1, 24, 32)[..., None].repeat(3, -1))
    values, warnings = load_matte(probe(still / "shot.1001.png"), source, 3, 8)
    assert values.shape == (5, 24, 32) and "single image" in warnings[0]
    trimmed = write_image_sequence(tmp_path / "trim", _matte_frames(5, 24, 32)[..., None].repeat(3, -1))
    values, warnings = load_matte(probe(trimmed), source, 3, 8)
    assert values.shape == (5, 24, 32) and "as many as the range" in warnings[0]


def test_matte_mismatches_fail_with_both_numbers(tmp_path):
    source = _source(tmp_path)
    short = write_image_sequence(tmp_path / "short", _matte_frames(7, 24, 32)[..., None].repeat(3, -1))
    with pytest.raises(MatteError, match="matte has 7 frames"):
        load_matte(probe(short), source, 0, 10)
    half = write_image_sequence(tmp_path / "half", _matte_frames(10, 12, 16)[..., None].repeat(3, -1))
    with pytest.raises(MatteError, match="16×12 but the source is 32×24"):
        load_matte(probe(half), source, 0, 10)
    values, warnings = load_matte(probe(half), source, 0, 10, MatteOptions(resize=True))
    assert values.shape == (10, 24, 32) and "scaled" in warnings[0]
    odd = write_image_sequence(tmp_path / "odd", _matte_frames(10, 24, 24)[..., None].repeat(3, -1))
    with pytest.raises(MatteError, match="aspect ratios differ"):
        load_matte(probe(odd), source, 0, 10, MatteOptions(resize=True))
