"""Defines reading one local file the way every command does: regular files only, size capped before reading, never a
blocking open.

A path the user or a folder names can be a FIFO (opening it for reading waits for a writer, for ever), a device
(`/dev/zero` never ends), a socket or a folder, or a link to any of them. The file is opened without blocking and its
type and size are taken from the open descriptor, so a file swapped for another after it was listed is judged as it
is when read; the size is checked again while reading, in case the file grows.
"""

import contextlib
import os
import stat

# Files larger than this are refused unread unless told otherwise: more than any photo needs (a 40-megapixel JPEG,
# the largest the default --max_pixels decodes, is ~10-25 MB) and little enough that a few at once cannot exhaust a
# worker's memory.
DEFAULT_MAX_FILE_BYTES = 128 << 20


class FileRefused(Exception):
    """A file that is not read: .reason is a short stable name for why ("not a regular file", "too large")."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason

    def __reduce__(self):  # pickled across Beam's worker processes with both arguments
        return type(self), (self.reason, str(self))


def read_regular_file(path, limit: int = DEFAULT_MAX_FILE_BYTES, limit_flag: str = "", inside: tuple = None) -> bytes:
    """The whole of a regular file of at most `limit` bytes. Raises FileRefused for anything else (`limit_flag` names
    the flag that sets the limit, for the message), or when `inside` (real folder or file paths) is given and the
    file opened lies in none of them; OSError when the file cannot be opened."""
    return read_regular_file_and_status(path, limit, limit_flag, inside)[0]


def read_regular_file_and_status(path, limit: int = DEFAULT_MAX_FILE_BYTES, limit_flag: str = "",
                                 inside: tuple = None) -> tuple:
    """(read_regular_file's bytes, the open file's os.stat_result): its size and modification time as read."""
    with opened_regular_file(path, inside) as (descriptor, status):
        if status.st_size > limit:
            raise FileRefused("too large", too_large(status.st_size, limit, limit_flag=limit_flag))
        chunks, total = [], 0
        while True:
            chunk = os.read(descriptor, max(status.st_size + 1 - total, 1 << 16))
            if not chunk:
                return b"".join(chunks), status
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefused("too large", too_large(total, limit, growing=True, limit_flag=limit_flag))


@contextlib.contextmanager
def opened_regular_file(path, inside: tuple = None):
    """(descriptor, its status) of a regular file opened for reading, never blocking; closed afterwards. Raises
    FileRefused for anything else, or for a file outside `inside` when that is given."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, possibly for ever.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if inside is not None and not lies_inside(_opened_path(descriptor, path), inside):
            raise FileRefused("link outside the inputs", "it leads outside every input (--refuse_outside_links)")
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise FileRefused("not a regular file", f"only regular files are read (this is {_kind(status.st_mode)})")
        yield descriptor, status
    finally:
        os.close(descriptor)


def lies_inside(target: str, roots: tuple) -> bool:
    """Is the real path `target` one of `roots` or below one?"""
    return any(target == root or target.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _opened_path(descriptor: int, path) -> str:
    """Where the open file really is. The descriptor's own link in /proc names the file that was opened, so a link
    re-pointed after the listing looked at it is judged by what it points to now; elsewhere, the resolved path."""
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        return os.path.realpath(os.fsdecode(path))


def too_large(size: int, limit: int, growing: bool = False, limit_flag: str = "") -> str:
    """The message for a file over the limit, naming the flag that sets it when there is one."""
    what = f"more than {size:,} bytes (it grew while it was read)" if growing else f"{size:,} bytes"
    return f"the file is {what}, over the limit of {limit:,}" + (f" ({limit_flag})" if limit_flag else " bytes")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"
