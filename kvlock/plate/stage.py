"""The clean plate of a clip: every frame with the matte's region replaced by the background behind it.

Per frame, the hole (the matte's pixels, > 0) is filled from the other frames within ``reach`` of it: each
point is followed frame to frame along the flow, completed under the mattes (``flow``), and taken from the
nearest frame that shows it (``fill``); what no frame shows is invented by spatial inpainting
(``fill.invent``). Outside the hole the plate *is* the source, bit for bit, and a plate's alpha
channel is the source's. Every pixel is marked: ``ORIGINAL`` (outside the hole), ``SEEN`` (taken from
another frame) or ``INVENTED``.

Memory stays bounded for long clips: frames are asked for in windows (``PlateMaker.plate(start, end)``), and
what the stage keeps between them — luma at the working size, the grown mattes, the flows of frame pairs
(each pair serves both of its frames) — lives in caches of bounded size; nothing holds the whole clip but the
caller's own source array.

A frame whose matte covers every pixel shows nothing of the background and gives no motion to align other
frames by. Asked for strictly (an erase: the background is the result), such a frame is an error naming it;
otherwise (a clean plate as the edit's start) the frame's plate is its source, its hole marked ``INVENTED``,
and a warning says so.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MatteError
from ..media.colour import PixelEncoding
from .fill import Scale, Trail, hop, invent, take
from .flow import FlowEstimator, checked, complete, grow_mask, luma8, moving_apart, shrink_mask, working_size

ORIGINAL, SEEN, INVENTED = 0, 1, 2


@dataclass(frozen=True)
class PlateOptions:
    """How far and how finely the stage looks. The defaults are what ``bench/plate_speed.py`` times."""

    reach: int = 16  # frames on either side a hole may be filled from
    margin: int = 2  # pixels around another frame's matte never taken (the subject's soft edge)
    flow_side: int = 960  # the longer side of the working size flows are computed at
    # working pixels around a matte where flow is not trusted; None: one DIS patch at its finest level
    flow_margin: int | None = None
    cache_bytes: int = 256 * 2**20  # flows, luma and mattes kept between frames


@dataclass
class PlateStats:
    """What the stage did, for the trace: hole pixels seen and invented, frame pairs, seconds."""

    seen: int = 0
    invented: int = 0
    pairs: int = 0
    frames: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        hole = self.seen + self.invented
        return {
            "hole_pixels": hole,
            "seen_fraction": self.seen / hole if hole else None,
            "frame_pairs": self.pairs,
            "frames": self.frames,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class PlateFrames:
    """Frames [start, start + n) of the clean plate, in the source's dtype and channels, and their map."""

    start: int
    frames: np.ndarray  # (n, H, W, C)
    origin: np.ndarray  # (n, H, W) uint8: ORIGINAL, SEEN or INVENTED

    def alpha(self) -> np.ndarray:
        """(n, H, W) float32: 1 where the plate shows the background as filmed (original or seen), 0 invented."""
        return (self.origin != INVENTED).astype(np.float32)

    def rgba(self) -> np.ndarray:
        """(n, H, W, 4) straight RGBA in the frames' dtype: the plate's colour, :meth:`alpha` at full scale (white
        for integers, 1.0 for floats) — what ``--plate-out`` writes. A plate's own alpha is not carried."""
        dtype = self.frames.dtype
        white = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
        alpha = (self.alpha() * white).astype(dtype)[..., None]
        return np.concatenate([self.frames[..., :3], alpha], axis=-1)


class _Cache:
    """Least recently used entries, dropped past ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used = budget, 0
        self.items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        value = make()
        size = sum(a.nbytes for a in value) if isinstance(value, tuple) else value.nbytes
        self.items[key] = (value, size)
        self.used += size
        while self.used > self.budget and len(self.items) > 1:
            _, (_, dropped) = self.items.popitem(last=False)
            self.used -= dropped
        return value


def fully_covered(matte: np.ndarray) -> list[int]:
    """The frames whose matte covers every pixel."""
    return [t for t in range(len(matte)) if (matte[t] > 0).all()]


def check_erasable(matte: np.ndarray) -> list[int]:
    """Nothing (an empty list) if every frame shows some background; else the :class:`MatteError` an erase
    gives, naming the frames, before any work."""
    covered = fully_covered(matte)
    if covered:
        raise MatteError(_covered_message(covered) + "; erase needs a matte that leaves part of each frame out")
    return covered


class PlateMaker:
    """The clean plate of one clip, made window by window; ``plate(start, end)`` in increasing windows."""

    def __init__(
        self,
        frames: np.ndarray,
        matte: np.ndarray,
        encoding: PixelEncoding,
        options: PlateOptions | None = None,
        strict: bool = False,
    ) -> None:
        self.source, self.matte, self.encoding = frames, matte, encoding
        self.options = options or PlateOptions()
        covered = check_erasable(matte) if strict else fully_covered(matte)
        self.covered = set(covered)
        self.stats = PlateStats()
        if covered:
            self.stats.warnings.append(_covered_message(covered) + "; the clean plate is the source in those frames")
        height, width = frames.shape[1:3]
        work = working_size(height, width, self.options.flow_side)
        self.scale = Scale(height, width, *work)
        self.flow = FlowEstimator(work)
        budget = self.options.cache_bytes
        self._luma, self._blocked, self._pairs = _Cache(budget // 8), _Cache(budget // 8), _Cache(budget * 3 // 4)
        self._made: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # what the stage keeps between frames
    def _hole(self, t: int) -> np.ndarray:
        return self.matte[t] > 0

    def _luma8(self, t: int) -> np.ndarray:
        size = (self.scale.work_height, self.scale.work_width)
        return self._luma.get(t, lambda: luma8(self.encoding.to_model(self.source[t][..., :3]), size))

    def _blocked_at(self, t: int) -> np.ndarray:
        """Where frame t shows no background: its matte grown by the margin (a whole covered frame: all)."""
        return self._blocked.get(t, lambda: grow_mask(self._hole(t), self.options.margin))

    def _pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Completed flows a → b and b → a of neighbouring frames (working size, float16), and where frame b's
        own flow back to a passed the check and does not move apart from its background (``flow``); computed
        once for both directions and every target frame whose trails pass between them."""
        low, high = min(a, b), max(a, b)
        forward, backward, checked_low, checked_high = self._pairs.get((low, high), lambda: self._flows(low, high))
        return (forward, backward, checked_high) if a == low else (backward, forward, checked_low)

    def _flows(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.stats.pairs += 1
        la, lb = self._luma8(a), self._luma8(b)
        ab, ba = self.flow(la, lb), self.flow(lb, la)
        size, grow = (self.scale.work_height, self.scale.work_width), self.options.flow_margin
        grow = self.flow.reach if grow is None else grow
        out = []
        for forward, backward, frame in ((ab, ba, a), (ba, ab, b)):
            passed = checked(forward, backward)
            kept = passed & ~shrink_mask(self._hole(frame), size, grow)
            apart = grow_mask(moving_apart(forward, kept), grow)
            out.append((complete(forward, kept & ~apart).astype(np.float16), passed & ~apart))
        (ab_done, verified_a), (ba_done, verified_b) = out
        return ab_done, ba_done, verified_a, verified_b

    # the plate
    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t of the clean plate (the source's dtype and channels) and its (H, W) uint8 map."""
        src = self.source[t]
        hole = self._hole(t)
        origin = np.zeros(hole.shape, np.uint8)
        if not hole.any():
            return src, origin
        origin[hole] = INVENTED
        if t in self.covered:
            self.stats.invented += int(hole.sum())
            return src, origin
        rows, cols = np.nonzero(hole)
        colour = np.asarray(src[..., :3], np.float32).copy()
        values, seen = self._follow(t, rows, cols)
        colour[rows[seen], cols[seen]] = values[seen]
        origin[rows[seen], cols[seen]] = SEEN
        left = origin == INVENTED
        colour = invent(colour, left)
        self.stats.seen += int(seen.sum())
        self.stats.invented += int(left.sum())
        return _like(src, colour, hole), origin

    def _follow(self, t: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The hole's points as the nearest frame within reach shows them: (values (N, 3), seen (N,))."""
        count = len(rows)
        values, seen = np.zeros((count, 3), np.float32), np.zeros(count, bool)
        x, y = self.scale.to_work(cols.astype(np.float32), rows.astype(np.float32))
        trails = {d: Trail(np.arange(count), x, y, t) for d in (-1, 1)}
        for _ in range(self.options.reach):
            for d, trail in trails.items():
                to = trail.frame + d
                if not len(trail) or not 0 <= to < len(self.source) or to in self.covered:
                    trails[d] = trail.keep(np.zeros(len(trail), bool))  # nothing beyond: the trail ends
                    continue
                onward, back, verified = self._pair(trail.frame, to)
                trail = hop(trail, onward, back, to)
                trail = trail.keep(~seen[trail.index])
                colour = self.source[to][..., :3]  # read at the trail's points only, as float32
                taken, shown = take(trail, colour, self._blocked_at(to), verified, self.scale)
                values[trail.index[shown]] = taken[shown]
                seen[trail.index[shown]] = True
                trails[d] = trail.keep(~shown)
            if not any(len(trail) for trail in trails.values()):
                break
        return values, seen

    def plate(self, start: int, end: int) -> PlateFrames:
        """Frames [start, end) of the clean plate. Frames the last window made are kept until a window starts
        past them (windows overlap by their lead-in), nothing older."""
        began = time.perf_counter()
        self._made = {t: made for t, made in self._made.items() if t >= start}
        for t in range(start, end):
            if t not in self._made:
                self._made[t] = self.frame(t)
                self.stats.frames += 1
        self.stats.seconds += time.perf_counter() - began
        made = [self._made[t] for t in range(start, end)]
        return PlateFrames(start, np.stack([f for f, _ in made]), np.stack([o for _, o in made]))


def _like(source: np.ndarray, colour: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The source frame with the hole's colour replaced (rounded to its dtype); alpha and the rest untouched."""
    out = source.copy()
    values = colour[hole]
    if np.issubdtype(source.dtype, np.integer):
        info = np.iinfo(source.dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    out[..., :3][hole] = values.astype(source.dtype)
    return out


def _covered_message(frames: list[int]) -> str:
    shown = ", ".join(str(t) for t in frames[:8]) + (" …" if len(frames) > 8 else "")
    return (
        f"the matte covers every pixel of {len(frames)} frame(s) ({shown}): no background is visible there to build "
        "a clean plate from"
    )
