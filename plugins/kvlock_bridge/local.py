"""Reading a file clip's frames on this machine, for servers that cannot read the disk it is on: the frames a
``FileClip`` names, as the ``ArrayClip`` an upload sends, by the server's own rules (a matte with no range of
its own follows the source's frames, ``kvlock.media.matte_frames``). Imported only when an upload is needed,
so hosts that always send paths never load PyAV for it."""

from __future__ import annotations

from .clips import ArrayClip, FileClip


def decode_source(clip: FileClip) -> ArrayClip:
    """The source's [start, end) as RGB frames."""
    from kvlock.media.decode import probe, read_frames

    info = probe(clip.path)
    return ArrayClip(clip.name, read_frames(info, clip.start or 0, clip.end or info.frames)[..., :3])


def decode_matte(clip: FileClip, source: FileClip) -> ArrayClip:
    """The matte frames that go with the source's range, as one grey channel (the brightest of R, G, B)."""
    from kvlock.media.decode import probe, read_frames
    from kvlock.media.matte_frames import matte_frames

    info, source_info = probe(clip.path), probe(source.path)
    start, end = source.start or 0, source.end or source_info.frames
    own = (clip.start or 0, clip.end or info.frames) if clip.ranged else None
    first, last, _ = matte_frames(info.frames, info.kind == "still", source_info.frames, start, end, own)
    return ArrayClip(clip.name, read_frames(info, first, last)[..., :3].max(axis=-1))


def decode_clips(source: FileClip, matte: FileClip) -> tuple[ArrayClip, ArrayClip]:
    return decode_source(source), decode_matte(matte, source)
