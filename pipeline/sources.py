"""Defines reading image files: a unit of listed entries -> (key, bytes) per file, or an error row per file that
cannot or must not be read.

Only regular files are read, and only up to --max_file_bytes: the size is checked before a byte is read (from the
open file, so a file swapped for a FIFO or a device after listing is refused too, and never hangs the run), and
again while reading, in case the file grew. Reading runs where the unit is decoded (pipeline/blocks.py), so each file
is read by the thread that decodes it.
"""

import errno
import os
import stat

from apache_beam.io.filesystems import FileSystems

from pipeline.errors import error_row
from pipeline.listing import key_for

# Files larger than this are refused unread unless --max_file_bytes says otherwise: more than any photo needs (a
# 40-megapixel JPEG, the largest --max_pixels decodes by default, is ~10-25 MB) and little enough that a few at once
# cannot exhaust a worker's memory.
DEFAULT_MAX_FILE_BYTES = 128 << 20


class FileRefused(Exception):
    """A file that is not read: .reason is the error type written in its row."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class ReadImageFiles:
    """A unit -> (key, bytes) per file and the unit's error rows as they are.

    Local files are read one after the other: from the page cache that is ~100,000 files/s, and from this machine's
    disk threads did not help. Files on other filesystems (gs://, s3://, hdfs://) are read on `pool`'s threads: each
    read there waits tens of milliseconds for the network, one at a time a few dozen files a second per worker.
    """

    def __init__(self, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
        self.max_file_bytes = max_file_bytes

    def __call__(self, unit, pool=None):
        files = [entry for entry in unit if not isinstance(entry, dict)]
        remote = pool is not None and any(FileSystems.get_scheme(_text(path)) for path, _, _ in files)
        results = iter(pool.map(self._read, files) if remote else map(self._read, files))
        for entry in unit:
            yield entry if isinstance(entry, dict) else next(results)

    def _read(self, entry):
        path, size, _ = entry
        key = key_for(path)
        try:
            return key, _read_whole(path, size, self.max_file_bytes)
        except FileRefused as refused:
            return error_row(key, "read", refused.reason, str(refused))
        except OSError as error:
            return error_row(key, "read", _read_error_type(error), error.strerror or str(error))
        except Exception as error:  # Any other filesystem failure: that file fails, not the run.
            return error_row(key, "read", type(error).__name__, str(error))


def _read_whole(path, listed_size: int, limit: int) -> bytes:
    if FileSystems.get_scheme(_text(path)) is None:
        return _read_local(path, limit)
    if listed_size > limit:
        raise FileRefused("too large", _too_large(listed_size, limit))
    with FileSystems.open(path, compression_type="uncompressed") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileRefused("too large", _too_large(len(data), limit, growing=True))
    return data


def _read_local(path, limit: int) -> bytes:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, possibly for ever.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise FileRefused("not a regular file", "only regular files are read (this is a FIFO, device, socket "
                                                    "or folder)")
        if status.st_size > limit:
            raise FileRefused("too large", _too_large(status.st_size, limit))
        chunks, total = [], 0
        while True:
            chunk = os.read(descriptor, max(status.st_size + 1 - total, 1 << 16))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefused("too large", _too_large(total, limit, growing=True))
    finally:
        os.close(descriptor)


def _too_large(size: int, limit: int, growing: bool = False) -> str:
    what = f"more than {size:,} bytes (it grew while it was read)" if growing else f"{size:,} bytes"
    return f"the file is {what}, over the limit of {limit:,} (--max_file_bytes)"


def _text(path) -> str:
    return path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path


def _read_error_type(error: OSError) -> str:
    return {errno.ENOENT: "gone", errno.EACCES: "unreadable", errno.EPERM: "unreadable", errno.ELOOP: "link loop",
            errno.ENAMETOOLONG: "path too long", errno.EISDIR: "not a regular file"}.get(error.errno,
                                                                                      type(error).__name__)
