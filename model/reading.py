"""Defines reading one local file the way every command does: regular files only, size capped before reading, never a
blocking open.

A path the user or a folder names can be a FIFO (opening it for reading waits for a writer, for ever), a device
(`/dev/zero` never ends), a socket or a folder, or a link to any of them. The file is opened without blocking and its
type and size are taken from the open descriptor, so a file swapped for another after it was listed is judged as it
is when read; the size is checked again while reading, in case the file grows.
"""

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


def read_regular_file(path, limit: int = DEFAULT_MAX_FILE_BYTES, limit_flag: str = "") -> bytes:
    """The whole of a regular file of at most `limit` bytes. Raises FileRefused for anything else (`limit_flag` names
    the flag that sets the limit, for the message) and OSError when the file cannot be opened."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, possibly for ever.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise FileRefused("not a regular file", f"only regular files are read (this is {_kind(status.st_mode)})")
        if status.st_size > limit:
            raise FileRefused("too large", too_large(status.st_size, limit, limit_flag=limit_flag))
        chunks, total = [], 0
        while True:
            chunk = os.read(descriptor, max(status.st_size + 1 - total, 1 << 16))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefused("too large", too_large(total, limit, growing=True, limit_flag=limit_flag))
    finally:
        os.close(descriptor)


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
