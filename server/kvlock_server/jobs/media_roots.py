"""The folders a server may read media from on a client's behalf, checked by descriptor, not by name.

A path is only a name: checking it and then reopening it later lets anyone who can write in a media root
swap the file for a symlink (or a FIFO) in between. So every file is *opened once* — non-blocking, so a
FIFO cannot hang the open — and then judged by what was opened: ``fstat`` of the descriptor (a regular
file only) and the descriptor's own real path (``/proc/self/fd`` on Linux, ``F_GETPATH`` on macOS),
which must lie under a root. The decoder then reads those very descriptors through a private *view*: a
folder of links named like the originals that point at ``/proc/self/fd/N`` (``/dev/fd/N`` on macOS), so
sequence numbering, suffixes and every reader of ``kvlock.media`` work unchanged while no name is looked
up again. Each accepted file's identity (inode, size, modification time) goes into the job's
fingerprint; when the job runs, the files are opened and judged again and must still be the same files.

Where the system offers no descriptor paths (Windows), the view falls back to the checked real paths,
and only the identity comparison guards the short gap between check and read.

The view lives in the server's private state folder, so an error raised while a file is read through it
is told with the path the client named instead (:meth:`MediaRoots.pinned`): a refusal never shows a client
where the server keeps its state (and its token). The roots also carry the limits every file read for a
client is held to (:class:`kvlock.media.limits.MediaLimits`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kvlock.errors import InvalidRequest, KVLockError, MediaNotFoundError
from kvlock.media.decode import IMAGE_SUFFIXES, sequence_files
from kvlock.media.limits import DEFAULT_LIMITS, MediaLimits

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_F_GETPATH = 50  # macOS fcntl: the path of an open descriptor


class MediaChangedError(InvalidRequest):
    """A file the job was accepted with is no longer the same file."""


class TooManyFilesError(OSError):
    """Holding every file of a sequence open would pass this process's descriptor limit."""


@dataclass(frozen=True)
class OpenedFile:
    fd: int
    name: Path  # the path the client named (or the sequence member found from it)
    real: Path  # where the descriptor really points
    inode: int
    size: int
    mtime_ns: int

    def identity(self) -> str:
        # no device number: a farm worker sees the same file on another mount
        return f"{self.name.name}:{self.inode}:{self.size}:{self.mtime_ns}"


def fingerprint(files: Iterable[OpenedFile]) -> str:
    """One digest of the identities of a clip's files, stored with the job."""
    return hashlib.sha256("\n".join(f.identity() for f in files).encode()).hexdigest()


def _descriptor_path(fd: int) -> str | None:
    """A name that, opened, reaches this descriptor's file and no other (None where the system has none)."""
    if os.path.isdir("/proc/self/fd"):
        return f"/proc/self/fd/{fd}"
    if sys.platform == "darwin":
        return f"/dev/fd/{fd}"
    return None


def _real_path(fd: int, named: Path) -> Path:
    """Where the open descriptor ``fd`` really is, asked of the descriptor itself."""
    if os.path.isdir("/proc/self/fd"):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.endswith(" (deleted)"):
            raise MediaNotFoundError(f"{named} was deleted while it was being opened")
        return Path(target)
    if sys.platform == "darwin":
        import fcntl

        raw = fcntl.fcntl(fd, _F_GETPATH, bytes(1024))
        return Path(raw.split(b"\0", 1)[0].decode())
    real = Path(os.path.realpath(named))  # no descriptor path: compare what the name reaches now
    opened, now = os.fstat(fd), os.stat(real)
    if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
        raise MediaChangedError(f"{named} changed while it was being opened; try again")
    return real


class MediaRoots:
    """Folders the server may read from. Paths must be absolute, free of '..', within the length limits of
    a file system, and every file must be a regular file whose opened descriptor lies inside a root."""

    def __init__(self, roots: Iterable[str | Path], limits: MediaLimits = DEFAULT_LIMITS) -> None:
        self.roots = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]
        self.limits = limits

    def names(self) -> tuple[str, ...]:
        """The roots as text, for a worker elsewhere that judges named files as this server does."""
        return tuple(str(r) for r in self.roots)

    def _inside(self, real: Path) -> bool:
        return any(real == root or root in real.parents for root in self.roots)

    def check(self, path: str) -> Path:
        """The named path, checked by name only: absolute, no '..', sane length, inside a root."""
        if not self.roots:
            raise PermissionError("this server reads no files (it has no --media-root); upload the frames instead")
        encoded = os.fsencode(path)
        if len(encoded) > MAX_PATH_BYTES or "\0" in path:
            raise InvalidRequest(f"file path is {len(encoded)} bytes; at most {MAX_PATH_BYTES}, with no NUL byte")
        candidate = Path(path)
        if any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in candidate.parts):
            raise InvalidRequest(f"a name in {path[:120]!r} is longer than {MAX_NAME_BYTES} bytes")
        if not candidate.is_absolute():
            raise PermissionError(f"{path!r}: file paths must be absolute")
        if ".." in candidate.parts:
            raise PermissionError(f"{path!r}: '..' is not allowed in file paths")
        if not self._inside(Path(os.path.realpath(candidate))):
            raise PermissionError(f"{path} is outside the server's media roots")
        return candidate

    def check_all(self, files: Iterable[Path]) -> None:
        for f in files:
            self.check(str(f))

    def files_named(self, path: str) -> tuple[Path, list[Path], bool]:
        """The checked path, the files it names (a movie or still itself, every file of a sequence) and
        whether it names a folder.

        Mirrors how ``kvlock.media.decode.probe`` reads a path, but only lists names: nothing is opened.
        """
        candidate = self.check(path)
        folder = candidate.is_dir()
        sequence_like = folder or "#" in candidate.name or re.search(r"%0?\d*d", candidate.name) is not None
        if not sequence_like and not candidate.exists():
            raise MediaNotFoundError(f"{candidate} does not exist")
        if sequence_like or candidate.suffix.lower() in IMAGE_SUFFIXES:
            found = sequence_files(candidate)
            if found is None and sequence_like:
                raise MediaNotFoundError(f"no image sequence at {candidate}")
            if found is not None and (sequence_like or len(found[0]) > 1):
                return candidate, list(found[0]), folder
        return candidate, [candidate], False

    def open(self, path: Path) -> OpenedFile:
        """Open one file and judge it by its descriptor: a regular file inside a root, or refused."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            raise MediaNotFoundError(f"{path} does not exist") from None
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE):
                raise TooManyFilesError(error.errno, "the server holds too many files open") from None
            if error.errno == errno.ENAMETOOLONG:
                raise InvalidRequest(f"{str(path)[:120]}…: the name is too long for the file system") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
                raise PermissionError(f"{path} is {kind}; the server reads only regular media files")
            real = _real_path(fd, path)
            if not self._inside(real):
                raise PermissionError(f"{path} is outside the server's media roots")
            return OpenedFile(fd, path, real, info.st_ino, info.st_size, info.st_mtime_ns)
        except BaseException:
            os.close(fd)
            raise

    @contextmanager
    def pinned(self, path: str, expected: str = "", where: Path | None = None) -> Iterator[PinnedClip]:
        """Open every file ``path`` names, check each by descriptor and, if ``expected`` is a fingerprint,
        that they are the files a job was accepted with; yield a view that reads exactly those files."""
        named, files, folder = self.files_named(path)
        opened: list[OpenedFile] = []
        view = Path(tempfile.mkdtemp(prefix=".media-view-", dir=where))
        try:
            for f in files:
                opened.append(self.open(f))
            digest = fingerprint(opened)
            if expected and digest != expected:
                raise MediaChangedError(
                    f"{named} is not the file (or sequence) this job was accepted with: it was replaced, "
                    "rewritten or renamed since; submit the job again"
                )
            for f in opened:
                target = _descriptor_path(f.fd) or str(f.real)
                (view / f.name.name).symlink_to(target)
            try:
                yield PinnedClip(view if folder else view / named.name, digest, len(opened))
            except (KVLockError, ValueError) as error:
                _tell_as_named(error, view, named if folder else named.parent)
                raise
        finally:
            for f in opened:
                os.close(f.fd)
            shutil.rmtree(view, ignore_errors=True)


def _tell_as_named(error: BaseException, view: Path, named: Path) -> None:
    """Rewrite ``error``'s message in place so it names the client's folder, not the private view."""
    if error.args and isinstance(error.args[0], str) and str(view) in error.args[0]:
        error.args = (error.args[0].replace(str(view), str(named)), *error.args[1:])


@dataclass(frozen=True)
class PinnedClip:
    """Files held open for reading. ``path`` is what the decoder gets in place of the client's path: the
    view itself for a folder, else the view's entry of that name (a movie, a still, a numbered file or a
    pattern)."""

    path: Path
    fingerprint: str
    files: int
