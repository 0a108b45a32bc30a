"""Media round trips on real PyAV encoders and decoders and the OpenEXR library: ranges, rates, timecodes,
colour tags, scene-linear EXR plates written back bit for bit, 10/12-bit camera codecs, mattes."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from kvlock.errors import InvalidRequest, MatteError, MediaNotFoundError, OutputExistsError, UnreadableMediaError
from kvlock.media.colour import DisplayReferred, SceneLinear
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock.media.matte import MatteOptions, load_matte
from kvlock.media.output import check_output, write_result
from kvlock.media.timecode import format_timecode, parse_range, parse_timecode

from ..support.media_helpers import unique_frames, write_h264_gop, write_image_sequence, write_turned

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


def _exr_plate(folder, count=3, height=12, width=16, start=1001, compression=None, half=True, **header):
    """EXR files with highlights, negatives and a NaN, alpha and a depth channel (what renders and scans hold)."""
    openexr = pytest.importorskip("OpenEXR")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    dtype = np.float16 if half else np.float32
    plates = []
    for n in range(count):
        rgb = (rng.random((height, width, 3)) * 6.0 - 0.5).astype(dtype)
        rgb[0, 0] = [40.0, -0.25, 1000.0]
        rgb[1, 1, 1] = np.nan
        alpha = np.linspace(0, 1, height * width, dtype=np.float32).reshape(height, width).astype(dtype)
        depth = np.full((height, width), 10.0 + n, np.float32)
        head = {"compression": compression or openexr.PIZ_COMPRESSION, "type": openexr.scanlineimage, **header}
        channels = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "A": alpha, "Z": depth}
        openexr.File(head, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(
            str(folder / f"plate.{start + n:04d}.exr")
        )
        plates.append(np.dstack([rgb, alpha]))
    return folder, np.stack(plates)


def _bits_equal(a, b):
    width = {2: np.uint16, 4: np.uint32}[a.dtype.itemsize]
    return np.ascontiguousarray(a).view(width) == np.ascontiguousarray(b).view(width)


@pytest.mark.parametrize("half", [True, False])
def test_exr_plate_is_read_as_stored_scene_linear(tmp_path, half):
    openexr = pytest.importorskip("OpenEXR")
    folder, plates = _exr_plate(tmp_path / "plate", half=half, framesPerSecond=Fraction(24000, 1001))
    info = probe(folder / "plate.1002.exr")
    assert (info.kind, info.frames, info.first_number, info.digits) == ("sequence", 3, 1001, 4)
    assert (info.transfer, info.codec, info.has_alpha, info.rate) == ("scene_linear", "exr", True, NTSC_FILM)
    pixels = read_frames(info, 0, 3)
    assert pixels.dtype == (np.float16 if half else np.float32) and pixels.shape == (3, 12, 16, 4)
    assert _bits_equal(pixels, plates).all()  # 1000.0, −0.25 and the NaN included
    assert pixels[0, 0, 0, 0] == 40.0 and pixels[0, 0, 0, 1] < 0 and np.isnan(pixels[0, 1, 1, 1])
    del openexr


def test_exr_outside_its_data_window_reads_as_zero(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    rgb = np.full((4, 6), 5.0, np.float16)
    header = {"dataWindow": ((2, 3), (7, 6)), "displayWindow": ((0, 0), (9, 7)), "compression": openexr.ZIP_COMPRESSION}
    openexr.File(header, {"R": rgb, "G": rgb.copy(), "B": rgb.copy()}).write(str(tmp_path / "crop.exr"))
    info = probe(tmp_path / "crop.exr")
    frame = read_frames(info, 0, 1)[0]
    assert (info.width, info.height, frame.shape) == (10, 8, (8, 10, 3))
    assert (frame[3:7, 2:8] == 5.0).all() and frame.sum() == 5.0 * 3 * 4 * 6


def test_exr_written_back_keeps_every_untouched_bit_channel_and_attribute(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    tc = openexr.TimeCode()
    tc.hours, tc.frame = 1, 12
    folder, _ = _exr_plate(tmp_path / "plate", owner="plates dept", timeCode=tc)
    info = probe(folder)
    assert info.timecode == "01:00:00:12"
    edit = read_frames(info, 1, 3)
    edit[:, 4:8, 5:10, :3] = np.float16(0.5)  # what the composite changes; alpha stays
    out = tmp_path / "plate_v2"
    path, warnings = write_result(out, edit, info, 1, "exr", SceneLinear())
    assert path == out and warnings == []
    assert sorted(p.name for p in out.iterdir()) == ["plate_v2.1002.exr", "plate_v2.1003.exr"]
    for number in (1002, 1003):
        src = openexr.File(str(folder / f"plate.{number}.exr"), separate_channels=True)
        dst = openexr.File(str(out / f"plate_v2.{number}.exr"), separate_channels=True)
        keep = {"channels", "dataWindow"}
        assert {k2: str(v) for k2, v in src.header().items() if k2 not in keep} == {
            k2: str(v) for k2, v in dst.header().items() if k2 not in keep
        }  # compression, timeCode, owner … all as the source's
        s, d = src.channels(), dst.channels()
        assert sorted(s) == sorted(d) == ["A", "B", "G", "R", "Z"]
        inside = np.zeros((12, 16), bool)
        inside[4:8, 5:10] = True
        for name in "RGB":
            assert d[name].pixels.dtype == np.float16
            assert _bits_equal(d[name].pixels, s[name].pixels)[~inside].all()
            assert (d[name].pixels[inside] == 0.5).all()
        for name in "AZ":  # alpha and depth: untouched everywhere
            assert _bits_equal(d[name].pixels, s[name].pixels).all() and d[name].pixels.dtype == s[name].pixels.dtype
        assert np.isnan(d["G"].pixels[1, 1]) and d["B"].pixels[0, 0] == 1000.0


def test_exr_data_window_grows_for_the_edit_and_overscan_is_kept(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    rng = np.random.default_rng(1)
    stored = (rng.random((6, 12)) * 3).astype(np.float32)  # data (−2..9, 1..6) overlaps the display (0..7, 0..7)
    header = {"dataWindow": ((-2, 1), (9, 6)), "displayWindow": ((0, 0), (7, 7))}
    header["compression"] = openexr.ZIPS_COMPRESSION
    openexr.File(header, {"R": stored, "G": stored.copy(), "B": stored.copy()}).write(str(tmp_path / "os.0001.exr"))
    info = probe(tmp_path / "os.0001.exr")
    frame = read_frames(info, 0, 1)
    frame[0, 0, 3] = 2.0  # row 0 is outside the stored data: the window must grow to hold the edit
    write_result(tmp_path / "out", frame, info, 0, "exr", SceneLinear())
    dst = openexr.File(str(tmp_path / "out" / "out.0001.exr"), separate_channels=True)
    (x0, y0), (x1, y1) = (tuple(int(v) for v in c) for c in dst.header()["dataWindow"])
    assert (x0, y0, x1, y1) == (-2, 0, 9, 6)
    r = dst.channels()["R"].pixels
    assert r[0, 5] == 2.0 and (np.delete(r[0], 5) == 0).all()  # the new row: the edit, 0 elsewhere
    assert np.array_equal(r[1:], stored)  # every stored value, overscan columns included, as it was


def test_exr_lossy_compression_is_replaced_so_untouched_pixels_stay_exact(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    folder, _ = _exr_plate(tmp_path / "dwa", count=1, height=32, width=32, compression=openexr.DWAA_COMPRESSION)
    info = probe(folder)
    original = read_frames(info, 0, 1)  # what the lossy file decodes to
    _, warnings = write_result(tmp_path / "out", original.copy(), info, 0, "exr", SceneLinear())
    assert "DWAA_COMPRESSION is lossy" in warnings[0]
    back = read_frames(probe(tmp_path / "out"), 0, 1)
    assert _bits_equal(back, original).all()


@pytest.mark.parametrize("codec", ["ffv1", "png"])
def test_exr_to_a_display_codec_is_the_view_transform_in_16_bit_with_alpha(tmp_path, codec):
    folder, _ = _exr_plate(tmp_path / "plate", count=2)
    info = probe(folder)
    frames = read_frames(info, 0, 2)
    assert "view transform" in check_output(info, codec, True)[0]
    path, _ = write_result(tmp_path / f"out_{codec}", frames, info, 0, codec, SceneLinear())
    back = read_frames(probe(path), 0, 2)
    assert back.dtype == np.uint16 and back.shape[-1] == 4
    expected = np.rint(SceneLinear().to_model(frames[..., :3]) * 65535)
    assert np.array_equal(back[..., :3], expected)
    assert np.array_equal(back[..., 3], np.rint(np.clip(frames[..., 3].astype(np.float32), 0, 1) * 65535))


def test_exr_output_needs_an_exr_source(tmp_path):
    info = probe(write_video(tmp_path / "clip.mkv", unique_frames(2, 16, 16), Fraction(24), "ffv1"))
    with pytest.raises(InvalidRequest, match="for a display-referred source use"):
        check_output(info, "exr", False)
    assert "no alpha" in check_output(info, "h264", True)[0]


def test_an_exr_matte_is_read_as_coverage(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    source = _source(tmp_path, count=2, height=12, width=16)
    coverage = np.zeros((12, 16), np.float16)
    coverage[2:6, 3:9] = 1.0
    coverage[0, 0] = 3.0  # a matte from a comp can overshoot; it is coverage, so it is clipped to 1
    for n in range(2):
        openexr.File({}, {"R": coverage, "G": coverage.copy(), "B": coverage.copy()}).write(
            str(tmp_path / f"m.{n:04d}.exr")
        )
    values, _ = load_matte(probe(tmp_path / "m.0000.exr"), source, 0, 2, MatteOptions(channel="red"))
    assert values.dtype == np.float32 and values.max() == 1.0 and (values[:, 2:6, 3:9] == 1).all()
    assert values.sum() == 2 * (4 * 6 + 1)


def _yuv_source(path, codec, pix_fmt, options, frames):
    """A 10/12-bit camera-codec file (ProRes 422 HQ / 4444, DNxHR HQX / 444), tagged BT.709 limited range."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(24), options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        cc = stream.codec_context
        cc.color_primaries = cc.color_trc = cc.colorspace = 1
        cc.color_range = 1
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb48le").reformat(
                format=pix_fmt, src_colorspace=1, dst_colorspace=1, src_color_range=2, dst_color_range=1
            )
            frame.pts, frame.time_base = i, Fraction(1, 24)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _camera_like(count, height, width):
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(5)
    base = [np.stack([np.sin(x / 9 + t), np.cos(y / 7), np.sin((x + y) / 13)], -1) for t in range(count)]
    noisy = (np.array(base) * 0.4 + 0.5) * 65535 + rng.normal(0, 300, (count, height, width, 3))
    return np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "options"),
    [
        ("prores_422hq", "prores_ks", "yuv422p10le", {"profile": "3"}),
        ("prores_4444", "prores_ks", "yuv444p10le", {"profile": "4"}),  # decodes as 12-bit
        ("dnxhr_hqx", "dnxhd", "yuv422p10le", {"profile": "dnxhr_hqx"}),
        ("dnxhr_444", "dnxhd", "yuv444p10le", {"profile": "dnxhr_444"}),
    ],
)
def test_10_and_12_bit_camera_codecs_stay_deep_exact_when_lossless_within_tolerance_in_prores(
    tmp_path, name, codec, pix_fmt, options
):
    frames = _camera_like(2, 128, 256)  # DNxHR needs at least 256×120
    info = probe(_yuv_source(tmp_path / f"{name}.mov", codec, pix_fmt, options, frames))
    assert info.deep and info.transfer == "display"
    decoded = read_frames(info, 0, 2)
    assert decoded.dtype == np.uint16 and len(np.unique(decoded[..., 0] & 0x3F)) > 1  # more than 10 bits' steps
    for out_codec, suffix in (("ffv1", ".mkv"), ("png", "")):  # lossless: the decoded source, bit for bit
        path, _ = write_result(tmp_path / f"out_{out_codec}{suffix}", decoded, info, 0, out_codec, DisplayReferred())
        assert np.array_equal(read_frames(probe(path), 0, 2), decoded)
    path, _ = write_result(tmp_path / "out.mov", decoded, info, 0, "prores", DisplayReferred())
    error = np.abs(read_frames(probe(path), 0, 2).astype(np.int64) - decoded)
    # ProRes 4444 re-encoding, measured on this noisy test content: at most 9.4 and on average 0.5–1.2 10-bit
    # code values (64 in 16 bits per code) — the README's stated tolerance is 10 and 1.5
    assert error.max() <= 10 * 64 and error.mean() <= 1.5 * 64, (error.max(), error.mean())


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
    assert values.shape == (1, 24, 32) and "single image" in warnings[0]  # one frame stands for all five
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


@pytest.mark.parametrize(("degrees", "turn"), [(90, 90), (-90, 270), (180, 180)])
def test_a_movie_tagged_with_a_display_rotation_is_read_as_it_is_shown(tmp_path, degrees, turn):
    """Phone footage: frames stored as the sensor reads them, turned by the display matrix when shown (by
    FFmpeg's tools, players, Blender's movie strips); read turned, with the turned size, from any frame."""
    stored = unique_frames(9, 24, 40)
    stored[:, :6, :10] = (255, 0, 0)  # a corner that shows which way it went
    path = write_turned(tmp_path / "phone.mkv", stored, NTSC_FILM, degrees)
    info = probe(path)
    shown = np.rot90(stored, turn // 90, axes=(1, 2))
    assert info.rotation == turn and (info.height, info.width) == shown.shape[1:3]
    assert np.array_equal(read_frames(info, 0, 9), shown)
    assert np.array_equal(read_frames(info, 5, 8), shown[5:8])  # after a seek too


def test_a_rotation_that_is_not_a_quarter_turn_is_refused_with_what_to_do(tmp_path):
    path = write_turned(tmp_path / "tilted.mp4", unique_frames(3, 24, 40), Fraction(25), 30, codec="libx264")
    with pytest.raises(UnreadableMediaError, match=r"turns the picture by (29|30)°; only quarter turns are read"):
        probe(path)


def test_an_upright_phone_movie_in_mp4_is_read_as_stored(tmp_path):
    stored = unique_frames(4, 32, 48)
    info = probe(write_turned(tmp_path / "upright.mp4", stored, Fraction(30), 0, codec="libx264"))
    assert (info.rotation, info.width, info.height) == (0, 48, 32)
