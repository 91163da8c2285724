"""Reading files that may be hostile: regular files only, of bounded size, inside the folder they belong to.

A dataset, an evaluation run or a checkpoint path can name anything: a FIFO (reading it blocks forever), a
device such as ``/dev/zero`` (it never ends), a symbolic link that loops, a multi-gigabyte file. Every read
of such a path goes through :func:`open_regular`, which opens without blocking, looks at what it opened and
refuses whatever is not a regular file of at most ``limit`` bytes, with a sentence that says which.

:func:`contained_path` joins a folder with a relative path taken from a file (a run's image paths) and
refuses any result outside the folder, whatever ``..`` or absolute path or symbolic link was used, with one
message that does not say whether the outside path exists.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


class FileRefused(ValueError):
    """A file cannot be read as asked; the message says why in one sentence."""


class ImageRefused(ValueError):
    """An image cannot be used; the message says why in one sentence. (Here, beside FileRefused, so that the
    readers of scans and of figshare's files raise it without importing the image module that dispatches to them.)"""


def printable(path: str | os.PathLike) -> str:
    """A path as text that can always be printed, logged or written to UTF-8 (undecodable bytes of a file name
    become ``\\udcxx`` escapes instead of raising UnicodeEncodeError later)."""
    return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")


def size_text(size: int) -> str:
    """Bytes as people read them: 1.5 GB, 20 MB, 300 KB."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _open_error(path, error: OSError, what: str) -> FileRefused:
    name = printable(path)
    if error.errno == errno.ENOENT:
        return FileRefused(f"{what} {name} does not exist")
    if error.errno == errno.ELOOP:
        return FileRefused(f"{what} {name} is a symbolic link that loops back on itself")
    if error.errno in (errno.EACCES, errno.EPERM):
        return FileRefused(f"{what} {name} cannot be read (permission denied)")
    if error.errno == errno.ENXIO:
        return FileRefused(f"{what} {name} is not a regular file (a socket or a device)")
    return FileRefused(f"{what} {name} cannot be opened ({error.strerror or error})")


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, limit: int, what: str = "file") -> Iterator[BinaryIO]:
    """Open ``path`` for binary reading if it is a regular file of at most ``limit`` bytes.

    Opened with O_NONBLOCK, so a FIFO without a writer is seen and refused instead of blocking; the type is then
    checked on the open descriptor itself, so a path swapped between a check and the open cannot slip past.
    Raises :class:`FileRefused` with a sentence naming ``what`` it was.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise _open_error(path, error, what) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            kind = next((text for test, text in _KINDS if test(info.st_mode)), "not a regular file")
            raise FileRefused(f"{what} {printable(path)} is {kind}, not a regular file")
        if info.st_size > limit:
            raise FileRefused(f"{what} {printable(path)} is {size_text(info.st_size)}, over the "
                              f"{size_text(limit)} limit")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield _Capped(handle, limit, what, path)


class _Capped:
    """A file that can only be read, and refuses to return more than ``limit`` bytes in all (a file that grows
    while it is read cannot make a reader take more than was allowed)."""

    def __init__(self, handle: BinaryIO, limit: int, what: str, path):
        self._handle, self._left, self._limit, self._what, self._path = handle, limit, limit, what, path

    def read(self, size: int = -1) -> bytes:
        wanted = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        data = self._handle.read(wanted)
        self._left -= len(data)
        if self._left < 0:
            raise FileRefused(f"{self._what} {printable(self._path)} grew past the {size_text(self._limit)} limit "
                              "while it was read")
        return data


def read_bytes(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes (see :func:`open_regular`)."""
    try:
        with open_regular(path, limit, what) as handle:
            return handle.read()
    except OSError as error:  # an I/O error in the middle of the read
        raise _open_error(path, error, what) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a number")
    return value


def load_json(text: str | bytes):
    """``json.loads`` that refuses NaN and Infinity, written as such or as a number too large for a float (Python
    accepts them; they would pass any range check)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _resolved(path: Path) -> Path | None:
    """``path`` with every symbolic link followed, or None when that fails (a loop, a permission problem)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a loop raises RuntimeError in Python 3.11; a NUL, ValueError
        return None


def contained_path(root: str | os.PathLike, relative: str, what: str = "file") -> Path:
    """``root / relative``, refused unless it lies inside ``root`` both as written and with every symbolic link
    followed. ``relative`` comes from a file (hostile): an absolute path, ``..`` that climbs out, or a link that
    points outside all get the same message, which does not depend on whether that outside path exists."""
    root = Path(root)
    refusal = FileRefused(f"{what} {printable(relative)} is not inside {printable(root)}; only files in that folder "
                          "are read")
    text = str(relative)
    if not text or "\x00" in text or Path(text).is_absolute() or Path(text).drive:
        raise refusal
    joined = Path(os.path.normpath(root / text))
    base = Path(os.path.normpath(root))
    if joined == base or not joined.is_relative_to(base):
        raise refusal
    real_root, real = _resolved(base), _resolved(joined)
    if real_root is None or real is None or real == real_root or not real.is_relative_to(real_root):
        raise refusal
    return joined


def is_within(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> bool:
    """Whether ``path``, with symbolic links followed, is one of ``roots`` or lies inside one."""
    real = _resolved(Path(path).expanduser())
    if real is None:
        return False
    for root in roots:
        real_root = _resolved(Path(root).expanduser())
        if real_root is not None and real.is_relative_to(real_root):
            return True
    return False
