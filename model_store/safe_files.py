"""Reading below the store's root without following a symbolic link anywhere below it.

Each path is walked one component at a time with `openat(..., O_NOFOLLOW)` from a descriptor of the
root, so a link planted anywhere below the root (a model folder, a version folder, a report.png
pointing at /etc/passwd) is refused rather than followed, and nothing can swap a component for a
link between a check and the open. The root itself may be a link (e.g. a mounted volume).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SYMLINK = "a symbolic link; the store follows none"
NOT_A_FOLDER = "not a folder"
NOT_A_FILE = "not a regular file"
# O_NONBLOCK keeps a FIFO planted where a file belongs from blocking the open (it is then refused by fstat).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeEntryError(Exception):
    """A component of a path below the root is a symbolic link, or not the kind of entry expected.

    `depth` is the index of that component in the parts given, `problem` says what it is.
    """

    def __init__(self, parts: Sequence[str], depth: int, problem: str) -> None:
        self.parts, self.depth, self.problem = tuple(parts), depth, problem
        super().__init__(f"{'/'.join(parts[: depth + 1])}: {problem}")


def _open_walk(root: Path, parts: Sequence[str], last_is_file: bool) -> int:
    """A descriptor of root/parts..., opened component by component without following links."""
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\0" in part:
            raise ValueError(f"{part!r} is not a plain file or folder name")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts):
            is_file = last_is_file and depth == len(parts) - 1
            try:
                child = os.open(part, _FILE_FLAGS if is_file else _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafeEntryError(parts, depth, SYMLINK) from None
                if exc.errno == errno.ENOTDIR:
                    raise UnsafeEntryError(parts, depth, NOT_A_FOLDER) from None
                raise
            os.close(fd)
            fd = child
        if last_is_file and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeEntryError(parts, len(parts) - 1, NOT_A_FILE)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_below(root: Path, parts: Sequence[str], limit: int | None = None) -> bytes:
    """The bytes of the regular file root/parts...; with `limit`, at most limit + 1 of them (the caller checks)."""
    fd = _open_walk(root, parts, last_is_file=True)
    with os.fdopen(fd, "rb") as handle:
        return handle.read() if limit is None else handle.read(limit + 1)


def check_file_below(root: Path, parts: Sequence[str]) -> None:
    """Raise unless root/parts... is a regular file reached without a link (e.g. before handing out its path)."""
    os.close(_open_walk(root, parts, last_is_file=True))


@contextmanager
def scan_below(root: Path, parts: Sequence[str]) -> Iterator[tuple[int, list[os.DirEntry[str]]]]:
    """A descriptor of the folder root/parts... and its entries (their is_dir()/is_symlink() follow no link)."""
    fd = _open_walk(root, parts, last_is_file=False)
    try:
        with os.scandir(fd) as entries:
            yield fd, list(entries)
    finally:
        os.close(fd)


def exists_in(folder_fd: int, relative: str) -> bool:
    """Whether `relative` exists below the folder `folder_fd`, as anything (the entry itself is not followed)."""
    try:
        os.stat(relative, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    return True


def entry_kind(entry: os.DirEntry[str]) -> str | None:
    """None for a real folder, else what the entry is instead (a link, a file)."""
    if entry.is_symlink():
        return SYMLINK
    if not entry.is_dir(follow_symlinks=False):
        return NOT_A_FOLDER
    return None
