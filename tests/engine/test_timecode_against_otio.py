"""The hand-written timecode arithmetic the hosts ship (``kvlock.media.timecode``) held to OpenTimelineIO's
``opentime`` at every rate ``opentime`` serves, drop-frame included — and the measured reasons it is not
simply ``opentime`` (module docstring there; figures in docs/benchmarks.md)."""

from __future__ import annotations

from fractions import Fraction

import opentimelineio as otio
import pytest

from kvlock.media.timecode import exact_rate, format_timecode, parse_timecode

ot = otio.opentime
SMPTE = [Fraction(n * 1000, 1001) for n in (24, 30, 48, 60)] + [Fraction(n) for n in (24, 25, 30, 48, 50, 60)]


def frames_to_check(rate: Fraction) -> list[int]:
    """Every frame of the first 11 minutes around each minute's edge (where drop-frame skips), then a stride
    through ten hours."""
    fps = round(rate)
    edges = [m * 60 * fps + d for m in range(11) for d in range(-4, 5) if m * 60 * fps + d >= 0]
    return sorted({*edges, *range(0, 10 * 3600 * fps, 997)})


@pytest.mark.parametrize("rate", SMPTE, ids=str)
def test_formatting_and_parsing_agree_with_opentime(rate):
    assert ot.RationalTime.is_smpte_timecode_rate(float(rate))
    for frame in frames_to_check(rate):
        ours = format_timecode(frame, rate)
        theirs = ot.to_timecode(ot.RationalTime(frame, float(rate)), float(rate))  # drop-frame inferred
        assert ours == theirs, (frame, ours, theirs)
        assert parse_timecode(ours, rate) == ot.from_timecode(ours, float(rate)).to_frames() == frame


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(60000, 1001)], ids=str)
def test_a_drop_frame_rate_counted_without_drop_frame_agrees_too(rate):
    for frame in frames_to_check(rate)[::7]:
        ours = format_timecode(frame, rate, drop_frame=False)
        assert ours == ot.to_timecode(ot.RationalTime(frame, float(rate)), float(rate), False)
        assert parse_timecode(ours, rate) == frame  # ':' means non-drop counting, in both


def test_exact_rate_reads_opentimes_float_rates_as_the_fractions_files_carry():
    for rate in SMPTE:
        assert exact_rate(ot.RationalTime(0, float(rate)).rate) == rate
    assert exact_rate(23.976) == Fraction(24000, 1001) and exact_rate(12.5) == Fraction(25, 2)


def test_the_measured_reasons_to_keep_our_own_for_the_hosts():
    """If opentime ever serves these, the hand-written module can go: this test says when."""
    with pytest.raises(ValueError, match="SMPTE"):
        ot.to_timecode(ot.RationalTime(30, 12), 12)  # animation at 12 fps, high speed at 120 …
    assert format_timecode(30, Fraction(12)) == "00:00:02:06" and parse_timecode("00:00:02:06", Fraction(12)) == 30
    assert ot.from_timecode("00:60:00:00", 24).to_frames() == 86400  # minute 60 is taken as an hour
    with pytest.raises(ValueError, match="out of range"):
        parse_timecode("00:60:00:00", Fraction(24))
