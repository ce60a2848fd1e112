"""Defines reading image files: a unit of listed entries -> (key, bytes, where it was read) per file, or an error row
per file that cannot or must not be read.

Only regular files are read, and only up to --max_file_bytes: the size is checked before a byte is read (from the
open file, so a file swapped for a FIFO or a device after listing is refused too, and never hangs the run), and
again while reading, in case the file grew. Reading runs where the unit is decoded (pipeline/scoring/blocks.py), so
each file is read by the thread that decodes it.
"""

import errno

from apache_beam.io.filesystems import FileSystems

# Local files are read as every command reads them (model.reading); a refusal's .reason is the row's error type.
from model.reading import (DEFAULT_MAX_FILE_BYTES, FileRefused, read_regular_file, read_regular_file_and_status,
                           too_large)
from pipeline.outputs import fingerprints
from pipeline.reading import matching, object_reads
from pipeline.reading.inputs import Inputs
from pipeline.records import error_row
from pipeline.reading.listing import key_for
from pipeline.records import Source

_LIMIT_FLAG = "--max_file_bytes"  # named in a too-large file's message


class ReadImageFiles:
    """A unit -> (key, bytes, pipeline.records.Source) per file and the unit's error rows as they are.

    Local files are read one after the other: from the page cache that is ~100,000 files/s, and from this machine's
    disk threads did not help. Files on other filesystems (gs://, s3://, hdfs://) are read on `pool`'s threads: each
    read there waits for the network (tens of milliseconds from a cloud store), one at a time a few dozen files a
    second per worker. S3 and GCS objects are read by pipeline.reading.object_reads, with one client per worker.
    """

    def __init__(self, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, inside: tuple = None,
                 in_flight: int = object_reads.IN_FLIGHT):
        self.max_file_bytes = max_file_bytes
        self.inside = inside  # --refuse_outside_links: checked again on the open file, as the listing checked it
        self.in_flight = in_flight  # the read threads of the pool it is given: a client connection for each

    def __call__(self, unit, pool=None):
        files = [entry for entry in unit if not isinstance(entry, dict)]
        remote = pool is not None and any(FileSystems.get_scheme(_text(entry[0])) for entry in files)
        results = iter(pool.map(self._read, files) if remote else map(self._read, files))
        for entry in unit:
            yield entry if isinstance(entry, dict) else next(results)

    def _read(self, entry):
        # A table's entries end with the TableRow that named them; its local files come unlisted (size None): their
        # size and modification time are taken from the open file, one system call fewer a row.
        path, size, modified, *named_by = entry
        table = named_by[0] if named_by else None
        key = key_for(path)
        try:
            if size is None:
                data, status = read_regular_file_and_status(path, self.max_file_bytes, _LIMIT_FLAG, self.inside)
                size, modified = status.st_size, status.st_mtime
            else:
                data = _read_whole(path, size, self.max_file_bytes, self.inside, self.in_flight)
            return key, data, Source(path, size, modified, table=table)
        except FileRefused as refused:
            return error_row(key, "read", refused.reason, str(refused), table)
        except OSError as error:
            if table is not None and error.errno == errno.ENOENT:
                return error_row(key, "read", "missing", "no file has this path", table)
            return error_row(key, "read", _read_error_type(error), error.strerror or str(error), table)
        except Exception as error:  # Any other filesystem failure: that file fails, not the run.
            return error_row(key, "read", type(error).__name__, str(error), table)


def _read_whole(path, listed_size: int, limit: int, inside: tuple = None, in_flight: int = 1) -> bytes:
    if FileSystems.get_scheme(_text(path)) is None:
        return read_regular_file(path, limit, _LIMIT_FLAG, inside)
    if listed_size > limit:
        raise FileRefused("too large", too_large(listed_size, limit, limit_flag=_LIMIT_FLAG))
    if FileSystems.get_scheme(path) in object_reads.SCHEMES:
        data = object_reads.read_object(path, limit, in_flight)
    else:
        with FileSystems.open(path, compression_type="uncompressed") as stream:
            data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileRefused("too large", too_large(len(data), limit, growing=True, limit_flag=_LIMIT_FLAG))
    return data


def _text(path) -> str:
    return path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path


def _read_error_type(error: OSError) -> str:
    return {errno.ENOENT: "gone", errno.EACCES: "unreadable", errno.EPERM: "unreadable", errno.ELOOP: "link loop",
            errno.ENAMETOOLONG: "path too long", errno.EISDIR: "not a regular file"}.get(error.errno,
                                                                                      type(error).__name__)


class ImageFiles(Inputs):
    """--input: image files, folders (walked) and globs, on any filesystem; --skip_scored's fingerprints kept."""

    flag, option = "--input", "inputs"
    fingerprinted = True
    manifest_key = "images"

    def patterns(self) -> tuple:
        return self.config.inputs

    def _transform(self, version: str = None) -> matching.MatchInputs:
        config = self.config
        return matching.MatchInputs(config.inputs, config.files_per_chunk, True, self.already_scored(version),
                                    config.output, version,
                                    refuse_outside_links=config.refuse_outside_links)

    def match(self, pipeline, version: str, folder: str):
        matched = pipeline | "MatchImages" >> self._transform(version)
        _ = matched.fingerprints | "WriteFingerprints" >> fingerprints.WriteFingerprints(folder)
        return matched

    def reader(self):  # links checked again when read
        config = self.config
        return ReadImageFiles(config.max_file_bytes, self._transform().rules.inside, config.reads_in_flight)

    def identity(self) -> dict:
        return {"images": list(self.config.inputs)}

    def manifest(self) -> dict:
        return {**super().manifest(), **self.identity()}
