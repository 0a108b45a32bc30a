"""SMPTE timecode ↔ frame numbers, including drop-frame for 29.97 and 59.94 fps.

Drop-frame skips frame numbers 0 and 1 (2 and 3 at 59.94) at the start of every minute except each
tenth, so the displayed clock tracks wall time; the separator before the frames is ``;`` by convention.
"""

from __future__ import annotations

import re
from fractions import Fraction

_TC = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.])(\d{2,3})$")
MAX_TIMECODE_CHARS = 16  # "HH:MM:SS;FFF" with room for spaces: anything longer is not a timecode


def nominal_fps(rate: Fraction) -> int:
    return round(rate)


def is_drop_frame_rate(rate: Fraction) -> bool:
    return rate.denominator == 1001 and nominal_fps(rate) in (30, 60)


def parse_timecode(text: str, rate: Fraction) -> int:
    """Frame number of ``text`` (``HH:MM:SS:FF``, or ``HH:MM:SS;FF`` drop-frame) at ``rate``."""
    match = _TC.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a timecode; write HH:MM:SS:FF (or HH:MM:SS;FF for drop-frame)")
    hours, minutes, seconds, sep, frames = match.groups()
    h, m, s, f = int(hours), int(minutes), int(seconds), int(frames)
    fps = nominal_fps(rate)
    if m > 59 or s > 59 or f >= fps:
        raise ValueError(f"{text!r} is out of range for {fps} fps")
    total_minutes = 60 * h + m
    number = ((total_minutes * 60) + s) * fps + f
    if sep in ";." and is_drop_frame_rate(rate):
        drop = 2 * fps // 30
        number -= drop * (total_minutes - total_minutes // 10)
    return number


def format_timecode(number: int, rate: Fraction, drop_frame: bool | None = None) -> str:
    """``HH:MM:SS:FF`` for frame ``number`` (``;`` and drop-frame counting where the rate uses it)."""
    fps = nominal_fps(rate)
    drop = is_drop_frame_rate(rate) if drop_frame is None else drop_frame and is_drop_frame_rate(rate)
    if drop:
        skip = 2 * fps // 30
        per_ten = fps * 600 - skip * 9
        per_minute = fps * 60 - skip
        tens, rest = divmod(number, per_ten)
        if rest > skip:
            number += skip * 9 * tens + skip * ((rest - skip) // per_minute)
        else:
            number += skip * 9 * tens
    f = number % fps
    s = number // fps % 60
    m = number // (fps * 60) % 60
    h = number // (fps * 3600) % 24
    return f"{h:02d}:{m:02d}:{s:02d}{';' if drop else ':'}{f:02d}"


def checked_timecode(text: str | None, rate: Fraction, where: object) -> tuple[str | None, list[str]]:
    """A file's timecode tag as it is read: kept when it is a timecode at ``rate``, else ignored with a
    warning naming ``where`` (the file). A tag is the file's claim, so a damaged one never stops an edit and
    never travels further (into a job, a message, an output) than this warning, which quotes at most 20
    characters of it."""
    if not text:
        return None, []
    if len(text) <= MAX_TIMECODE_CHARS:
        try:
            parse_timecode(text, rate)
            return text.strip(), []
        except ValueError:
            pass
    shown = repr(text[:20]) + (f"… ({len(text)} characters)" if len(text) > 20 else "")
    return None, [f"{where}: its timecode tag {shown} is not a timecode at {float(rate):g} fps; it is ignored"]


def timecode_at(start: str | None, rate: Fraction, offset: int) -> str | None:
    """The timecode ``offset`` frames after ``start`` (a file's first-frame timecode), counted as ``start``
    is (drop-frame where written with ';'); None where there is no timecode or it is not one at ``rate``."""
    if not start:
        return None
    try:
        number = parse_timecode(start, rate) + offset
    except ValueError:
        return None
    return format_timecode(number, rate, drop_frame=";" in start)


def parse_range(text: str, total: int, rate: Fraction, start_timecode: str | None) -> tuple[int, int]:
    """``START:END`` frame indices (end exclusive, either side may be empty) or ``TC-TC`` timecodes.

    Timecodes are the source's own (absolute), so they are offset by its start timecode.
    """
    text = text.strip()
    if text.count(":") == 1 and "-" not in text.lstrip("-"):
        a, b = text.split(":")
        try:
            start = int(a) if a else 0
            end = int(b) if b else total
        except ValueError:
            raise ValueError(f"--frames {text!r}: write START:END with whole numbers (end exclusive)") from None
    else:
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError(f"--frames {text!r}: write START:END (frames) or HH:MM:SS:FF-HH:MM:SS:FF (timecodes)")
        origin = parse_timecode(start_timecode, rate) if start_timecode else 0
        start = parse_timecode(parts[0], rate) - origin
        end = parse_timecode(parts[1], rate) - origin
    if not 0 <= start < end <= total:
        raise ValueError(f"--frames {text!r} gives [{start}, {end}) but the source has frames [0, {total})")
    return start, end
