"""Files built to hurt a media pipeline, read by ``kvlock.media``: each is refused from its header before a
decoder runs, or read in one bounded pass that names the frame where it breaks. Every test here failed on
the reader before these guards (the lying PNG alone cost 1.9 GiB to probe)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import kvlock.media.decode as decode
import kvlock.media.ffmpeg as ffmpeg
from kvlock.errors import MediaTooLargeError, UnreadableMediaError
from kvlock.media import matte as matte_module
from kvlock.media.decode import iter_frames, probe, read_frames
from kvlock.media.limits import MediaLimits
from kvlock.media.matte import MatteOptions, load_matte, matte_values, pick_channel
from kvlock.media.timecode import checked_timecode

from ..support import hostile_media as hostile
from ..support.media_helpers import write_image_sequence


@pytest.fixture()
def no_decoder(monkeypatch):
    """Arm it to fail the test if FFmpeg or OpenEXR is asked to open a file (a header check must refuse first)."""
    openexr = pytest.importorskip("OpenEXR")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a decoder was asked to open {args[0] if args else kwargs}")

    def arm():
        monkeypatch.setattr(ffmpeg.av, "open", refuse)
        monkeypatch.setattr(openexr, "File", refuse)

    return arm


HUGE_HEADERS = {
    "png_16000": lambda p: hostile.lying_png(p / "lying.png"),
    "png_named_mov": lambda p: hostile.lying_png(p / "clip.mov"),  # judged by its bytes, not its name
    "png_bomb": lambda p: hostile.png_bomb(p / "bomb.png", 9000, 2000, colour=0),
    "gif_screen": lambda p: hostile.gif_screen(p / "screen.gif", 8000, 8000),
    "exr_windows": lambda p: hostile.exr_claiming(p / "claim.exr", 20000),
    "exr_display": lambda p: hostile.exr_wide_display(p / "wide.exr", 30000),
}


@pytest.mark.parametrize("build", HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
def test_a_header_that_claims_a_huge_frame_is_refused_before_any_decoder_opens_it(tmp_path, build, no_decoder):
    path = build(tmp_path)
    no_decoder()
    with pytest.raises(MediaTooLargeError) as refused:
        probe(path)
    assert str(path) in str(refused.value) and "pixels" in str(refused.value)


def test_each_file_of_a_sequence_has_its_header_checked_before_it_is_decoded(tmp_path):
    frames = np.zeros((3, 48, 64, 3), np.uint8)
    write_image_sequence(tmp_path / "seq", frames, start_number=1)
    hostile.lying_png(tmp_path / "seq" / "shot.0002.png")  # the second file lies; the first is fine
    info = probe(tmp_path / "seq")
    with pytest.raises(MediaTooLargeError, match=r"shot\.0002\.png"):
        read_frames(info, 0, 3)


def test_the_frame_limit_is_the_decoded_size_and_can_be_raised(tmp_path):
    path = hostile.png_bomb(tmp_path / "deep.png", 2048, 1024, colour=6, depth=16)  # 16 MiB decoded
    with pytest.raises(MediaTooLargeError, match="raise --max-frame-mb"):
        probe(path, limits=MediaLimits(max_frame_bytes=8 * 1024**2))
    info = probe(path, limits=MediaLimits(max_frame_bytes=16 * 1024**2))
    assert read_frames(info, 0, 1).shape == (1, 1024, 2048, 4)


def test_an_exr_counts_every_channel_it_stores_not_only_its_colour(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    layer = np.zeros((512, 512), np.float32)
    channels = {name: layer for name in "RGB"} | {f"aov{k}.Z": layer for k in range(37)}  # 40 MiB to decode
    openexr.File({"compression": openexr.ZIP_COMPRESSION}, channels).write(str(tmp_path / "aovs.exr"))
    with pytest.raises(MediaTooLargeError, match=r"the data window of .* is 40 MiB decoded"):
        probe(tmp_path / "aovs.exr", limits=MediaLimits(max_frame_bytes=32 * 1024**2))
    assert probe(tmp_path / "aovs.exr", limits=MediaLimits(max_frame_bytes=48 * 1024**2)).width == 512


def test_a_container_claiming_a_frame_size_the_decoder_would_allocate_is_refused_by_ffmpeg_itself(tmp_path):
    path = hostile.ffv1_claiming(tmp_path / "claims.mkv", 8192, 8192)  # 64×48 packets, an 8192² header
    with pytest.raises(UnreadableMediaError, match="the decoder cannot open its frames"):
        probe(path)


def test_flipped_bits_inside_packets_are_refused_naming_the_file_and_frame(tmp_path):
    path = hostile.ffv1_flipped(tmp_path / "flipped.mkv")
    info = probe(path)  # the headers are fine
    with pytest.raises(UnreadableMediaError, match=r"frame 1 is damaged; the decoder reported: slice CRC mismatch"):
        read_frames(info, 0, info.frames)
    assert read_frames(info, 0, 1).shape == (1, 48, 64, 3)  # the undamaged first frame still reads


def test_a_container_claiming_more_frames_than_it_holds_is_refused_when_they_run_out(tmp_path):
    source = probe(hostile.avi_claiming(tmp_path / "many.avi", claimed=99_999, frames=9))
    assert source.frames == 99_999
    seen = 0
    with pytest.raises(UnreadableMediaError, match="it claims 99999 frames, but 9 of the 99999"):
        for _ in iter_frames(source, 0, source.frames):
            seen += 1
    assert seen == 9  # read as they come: nothing was allocated for the frames it only claimed


def test_a_still_matte_is_one_frame_for_a_source_claiming_many(tmp_path):
    source = probe(hostile.avi_claiming(tmp_path / "many.avi", claimed=99_999))
    values, warnings = load_matte(probe(hostile.still_matte(tmp_path / "matte.png")), source, 0, 99_999)
    assert values.shape == (1, 48, 64) and "single image" in warnings[0]


def test_a_range_too_large_for_memory_is_refused_before_it_is_read(tmp_path):
    source = probe(
        hostile.avi_claiming(tmp_path / "many.avi", claimed=99_999), limits=MediaLimits(max_clip_bytes=2**28)
    )
    with pytest.raises(MediaTooLargeError, match="give a shorter range"):
        read_frames(source, 0, source.frames)  # 99 999 × 9 KiB ≈ 0.9 GiB claimed


@pytest.mark.parametrize("tag", ["zz:99:99:99", "99:99:99:99", "01:00:00:30", "x" * 9_000_000])
def test_a_timecode_tag_that_is_not_one_is_ignored_with_a_short_warning(tmp_path, tag):
    info = probe(hostile.ffv1_clip(tmp_path / "tagged.mkv", 2, timecode=tag))
    assert info.timecode is None
    (warning,) = info.warnings
    assert "is not a timecode at 24 fps" in warning and str(tmp_path) in warning and len(warning) < 300
    good = probe(hostile.ffv1_clip(tmp_path / "good.mkv", 2, timecode="01:00:00:12"))
    assert (good.timecode, good.warnings) == ("01:00:00:12", ())


def test_checked_timecode_keeps_drop_frame_and_refuses_what_the_rate_cannot_have():
    assert checked_timecode("01:00:00;02", Fraction(30000, 1001), "f") == ("01:00:00;02", [])
    assert checked_timecode("01:00:00:24", Fraction(24), "f")[0] is None


def test_a_damaged_single_part_exr_is_called_damaged_and_a_multipart_one_multipart(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    with pytest.raises(UnreadableMediaError, match="pixel data is damaged or cut short") as damaged:
        read_frames(probe(hostile.exr_damaged(tmp_path / "damaged.exr")), 0, 1)
    assert "multi-part" not in str(damaged.value)
    part = {"R": np.zeros((4, 4), np.float32), "G": np.zeros((4, 4), np.float32), "B": np.zeros((4, 4), np.float32)}
    parts = [openexr.Part({"type": openexr.scanlineimage}, part, name=n) for n in ("a", "b")]
    openexr.File(parts).write(str(tmp_path / "multi.exr"))
    with pytest.raises(UnreadableMediaError, match="is a multi-part EXR"):
        probe(tmp_path / "multi.exr")


def test_a_long_gop_movie_is_read_in_one_pass_from_one_open(tmp_path, monkeypatch):
    path = hostile.long_gop(tmp_path / "gop.mp4", frames=600)
    info = probe(path)
    opened, returned = [], []
    real_open, real_decoded = decode.open_input, decode.decoded

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    def counting_decoded(*args, **kwargs):
        for item in real_decoded(*args, **kwargs):
            returned.append(item)
            yield item

    monkeypatch.setattr(decode, "open_input", counting_open)
    monkeypatch.setattr(decode, "decoded", counting_decoded)
    assert sum(1 for _ in iter_frames(info, 0, 600)) == 600
    assert len(opened) == 1 and len(returned) == 600  # each frame decoded once, never re-sought per piece
    opened.clear(), returned.clear()
    assert sum(1 for _ in iter_frames(info, 500, 510)) == 10
    assert len(opened) == 1 and len(returned) <= 511  # one GOP: decoded from its keyframe, once


def test_matte_strips_give_the_whole_frame_s_values_scaled_or_not(monkeypatch):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65535, (2, 90, 120, 4), dtype=np.uint16)
    pixels[..., 3] = 65535
    pixels[1, 10:20, 30:40, 3] = 0  # one translucent patch decides `auto` for the whole clip
    whole = matte_values(pixels, "auto", 90, 120)
    monkeypatch.setattr(matte_module, "STRIP_BYTES", 4 * 120 * 4 * 3)  # a strip of one row at a time
    assert np.array_equal(matte_values(pixels, "auto", 90, 120), whole)
    assert np.array_equal(whole, pick_channel(pixels, "alpha"))
    small = matte_values(pixels, "luma", 45, 60)  # a proxy-size matte scaled, strip by strip
    rows = matte_module._resample_weights(90, 45)
    cols = matte_module._resample_weights(120, 60)
    expected = np.einsum("hy,nyx,wx->nhw", rows, pick_channel(pixels, "luma").astype(np.float64), cols)
    assert np.abs(small - expected).max() < 1e-5


def test_an_uploaded_gray_matte_is_its_own_value_whatever_the_channel():
    gray = np.array([[[[0], [65535]]]], np.uint16)
    for channel in ("auto", "luma", "alpha", "red"):
        assert pick_channel(gray, channel).tolist() == [[[0.0, 1.0]]]


def test_refine_after_load_is_unchanged_by_strips(tmp_path):
    rgba = np.zeros((3, 24, 32, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1, 4:12, 5:9, 3] = 0
    from kvlock.media.encode import write_video

    info = probe(write_video(tmp_path / "a.mkv", rgba, Fraction(24), "ffv1"))
    values, _ = load_matte(info, info, 0, 3, MatteOptions(invert=True))
    assert values.shape == (3, 24, 32) and values[1, 4:12, 5:9].min() == 1.0 and values[0].max() == 0.0


@pytest.mark.parametrize(
    ("codec", "suffix", "pix_fmt"),
    [
        ("png", "png", "rgba64be"),
        ("tiff", "tif", "rgb48le"),
        ("mjpeg", "jpg", "yuvj444p"),
        ("bmp", "bmp", "bgr24"),
        ("dpx", "dpx", "rgb48le"),
        ("gif", "gif", "rgb8"),
    ],
)
def test_hand_read_headers_agree_with_ffmpeg_on_every_image_format_it_writes(tmp_path, codec, suffix, pix_fmt):
    import av

    from kvlock.media.headers import image_header

    path = tmp_path / f"still.{suffix}"
    pixels = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="image2" if codec != "gif" else "gif") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 53, 37, pix_fmt
        frame = av.VideoFrame.from_ndarray(pixels, "rgb24").reformat(format=pix_fmt)
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    header = image_header(path)
    assert (header.width, header.height) == (53, 37) and header.pixel_bytes >= 3
    info = probe(path, limits=MediaLimits(max_frame_bytes=64 * 1024**2))
    assert (info.width, info.height) == (53, 37) and read_frames(info, 0, 1).shape[1:3] == (37, 53)


def test_a_jpeg_whose_frame_header_follows_large_metadata_is_read(tmp_path):
    import av

    from kvlock.media.headers import image_header

    path = tmp_path / "plain.jpg"
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("mjpeg", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj444p"
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), "rgb24").reformat(format="yuvj444p")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    data = path.read_bytes()
    icc = b"\xff\xe2" + (65535).to_bytes(2, "big") + b"ICC_PROFILE\0" + bytes(65533 - 12)
    (tmp_path / "tagged.jpg").write_bytes(data[:2] + icc + icc + data[2:])  # 128 kB of segments before the SOF
    header = image_header(tmp_path / "tagged.jpg")
    assert (header.width, header.height) == (64, 48)
    assert read_frames(probe(tmp_path / "tagged.jpg"), 0, 1).shape == (1, 48, 64, 3)
