"""The clean-plate stage: the background behind the matte, taken from the frames that show it (motion
compensated with optical flow) or invented where none does, with a map of which is which. NumPy and OpenCV
only, no torch: it runs before the model sees anything (docs/design.md §2.8)."""

from .stage import (
    INVENTED,
    ORIGINAL,
    SEEN,
    PlateFrames,
    PlateMaker,
    PlateOptions,
    PlateStats,
    check_erasable,
    fully_covered,
)

__all__ = [
    "INVENTED",
    "ORIGINAL",
    "SEEN",
    "PlateFrames",
    "PlateMaker",
    "PlateOptions",
    "PlateStats",
    "check_erasable",
    "fully_covered",
]
