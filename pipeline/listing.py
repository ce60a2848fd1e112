"""Lists what a run's inputs name. Every entry the listing meets becomes a file to read, an error row, or a skipped
entry counted with its reason: nothing met is left unaccounted for.

An input that exists as a local file or folder is taken literally, even when its name holds `[ ] * ?`; anything else
is a glob, on any Beam filesystem (a trailing `/` on an object store means everything below it). Local folders and
globs are walked with os.scandir, which sees what a glob would not report: links to nowhere, link loops, FIFOs and
devices (never opened: reading one would hang or never end), folders that cannot be read. Hidden entries (names that
start with `.`) are skipped and counted; links to folders are not followed (a loop could never end) and are counted;
so is the run's own output folder when it lies below an input.
The same file named by two inputs is listed once.

Local paths whose names are not valid UTF-8 travel as bytes (Beam's coders write text as UTF-8); `key_for` turns
any path into the row key, writing each byte that is not UTF-8 as \\xNN.
"""

import collections
import dataclasses
import errno
import os
import re
import stat
import typing

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from pipeline import timeline
from pipeline.errors import error_row

_GLOB_CHARACTERS = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What one --input names: kind is "file", "folder" or "glob"; path is absolute for local inputs."""

    kind: str
    path: str


def input_spec(text: str) -> InputSpec:
    """How a command-line input is read. Raises ValueError for an empty one."""
    if not text.strip():
        raise ValueError("an input is empty; give a folder, a file or a glob")
    if FileSystems.get_scheme(text) is None:
        path = os.path.abspath(text)
        if os.path.isdir(path):
            return InputSpec("folder", path)
        if os.path.lexists(path):
            return InputSpec("file", path)
        return InputSpec("glob", path)
    if text.endswith("/"):
        return InputSpec("glob", text + "**")
    if not _GLOB_CHARACTERS.search(text) or FileSystems.exists(text):
        return InputSpec("file", text)
    return InputSpec("glob", text)


def key_for(path) -> str:
    """The row key of a path: the path itself, with each byte of its name that is not UTF-8 written as \\xNN."""
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def _portable(path: str):
    """A local path as Beam can carry it: text if it is valid UTF-8, else its bytes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


class Listing:
    """Lists input specs; iterate `entries(specs)` for (path, size, modification time) and error rows, then read
    `skipped` (reason -> count) and `met` (every entry met, skipped ones included)."""

    def __init__(self, output: str = None):
        self.skipped = collections.Counter()
        self.met = 0
        self._seen = set()
        # The run's own output, when it lies below an input: its earlier partitions are not images to score.
        self._output = os.path.abspath(output) if output and FileSystems.get_scheme(output) is None else None

    def entries(self, specs):
        for spec in specs:
            for entry in self._listed(spec):
                if isinstance(entry, str):  # a reason to skip
                    self.met += 1
                    self.skipped[entry] += 1
                    continue
                key = entry["key"] if isinstance(entry, dict) else key_for(entry[0])
                self.met += 1
                if key in self._seen:
                    self.skipped["listed twice"] += 1
                    continue
                self._seen.add(key)
                yield entry

    def _listed(self, spec: InputSpec):
        if FileSystems.get_scheme(spec.path) is not None:
            yield from _remote(spec)
        elif spec.kind == "file":
            yield from _classified(spec.path)
        elif spec.kind == "folder":
            yield from _walked(spec.path, output=self._output)
        else:
            matches = re.compile(FileSystem.translate_pattern(spec.path)).match
            root = _fixed_prefix_folder(spec.path)
            if os.path.isdir(root):
                yield from (entry for path, entry in _walked(root, with_paths=True, output=self._output)
                            if path is None or matches(path))


def _remote(spec: InputSpec):
    pattern = spec.path
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        if os.path.basename(metadata.path.rstrip("/")).startswith("."):
            yield "hidden"
        else:
            yield metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds


def _fixed_prefix_folder(pattern: str) -> str:
    """The deepest folder of a glob that holds no glob character: where its matches can be."""
    found = _GLOB_CHARACTERS.search(pattern)
    return os.path.dirname(pattern[:found.start()]) if found else os.path.dirname(pattern)


def _walked(root: str, with_paths: bool = False, output: str = None):
    """Everything below a folder: files, error rows and reasons to skip (with each entry's path if asked); the folder
    `output` counts as one skipped entry."""
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listed:
                entries = list(listed)
        except OSError as error:
            entry = error_row(key_for(folder), "read", _error_type(error, "unreadable folder"),
                              f"the folder cannot be listed: {error.strerror or error}")
            yield (None, entry) if with_paths else entry  # None: whatever a glob asks, it may hide matches
            continue
        for found in entries:
            if found.name.startswith("."):
                entry = "hidden"
            elif found.is_dir(follow_symlinks=False):
                if found.path != output:
                    folders.append(found.path)
                    continue
                entry = "the run's own output folder"
            else:
                entry = _classified_entry(found.path, found)
            yield (found.path, entry) if with_paths else entry


def _classified(path: str):
    """One path named as a file: yields its entry (a folder named this way is a folder input, not this)."""
    yield _classified_entry(path, None)


def _classified_entry(path: str, found):
    """(path, size, mtime) for a regular file (or a link to one), else an error row or a reason to skip.

    `found` is the os.DirEntry when walking: its type and its (followed) status come without extra system calls.
    """
    try:
        is_link = found.is_symlink() if found is not None else os.path.islink(path)
        status = found.stat() if found is not None else os.stat(path)  # both follow a link to its target
    except OSError as error:
        if error.errno == errno.ENOENT and os.path.lexists(path):
            return error_row(key_for(path), "read", "dangling link", f"the link points to {os.readlink(path)!r}, "
                             "which does not exist")
        return error_row(key_for(path), "read", _error_type(error, "unreadable"), error.strerror or str(error))
    if stat.S_ISDIR(status.st_mode):
        return "link to a folder" if is_link else error_row(key_for(path), "read", "not a regular file",
                                                              "it is a folder")
    if not stat.S_ISREG(status.st_mode):
        kind = _special_kind(status.st_mode)
        return error_row(key_for(path), "read", "not a regular file", f"it is a {kind}; only regular files are read")
    return _portable(path), status.st_size, status.st_mtime


def _special_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _error_type(error: OSError, unreadable: str) -> str:
    return {errno.ELOOP: "link loop", errno.ENAMETOOLONG: "path too long", errno.ENOENT: "gone",
            errno.EACCES: unreadable, errno.EPERM: unreadable}.get(error.errno, type(error).__name__)


class Matched(typing.NamedTuple):
    units: beam.PCollection  # lists of (path, size, modification time) and error rows, reshuffled over the workers
    counts: beam.PCollection  # ("matched", n), ("skipped", n) and ("skipped_by_reason/REASON", n)


class _ListInUnits(beam.DoFn):
    """All input specs (one element, so that a file two inputs name is listed once) -> units of entries."""

    def __init__(self, unit_size: int, count_files: bool, already_scored=None, output: str = None):
        self.unit_size = unit_size
        self.output = output
        self.count_files = count_files  # False for TFRecords: their records are counted once read
        self.already_scored = already_scored  # a callable returning the set of (key, size, mtime) to skip, or None

    def process(self, specs):
        timeline.mark("listing files")
        listing = Listing(self.output)
        found = list(listing.entries(specs))
        timeline.mark("files listed")
        if self.already_scored is not None:
            done = self.already_scored()
            todo = [e for e in found if isinstance(e, dict) or (key_for(e[0]), e[1], e[2]) not in done]
            listing.skipped["already scored"] += len(found) - len(todo)
            found = todo
        found.sort(key=lambda entry: entry["key"] if isinstance(entry, dict) else key_for(entry[0]))
        skipped = sum(listing.skipped.values())
        yield beam.pvalue.TaggedOutput(COUNTS, ("matched", listing.met if self.count_files else skipped))
        yield beam.pvalue.TaggedOutput(COUNTS, ("skipped", skipped))
        for reason, amount in sorted(listing.skipped.items()):
            yield beam.pvalue.TaggedOutput(COUNTS, (f"skipped_by_reason/{reason}", amount))
        for start in range(0, len(found), self.unit_size):
            yield found[start:start + self.unit_size]


COUNTS = "counts"


class ListInputs(beam.PTransform):
    """Command-line inputs -> Matched(units of up to unit_size entries, counts)."""

    def __init__(self, inputs, unit_size: int = 256, count_files: bool = True, already_scored=None,
                 output: str = None):
        super().__init__()
        self.specs = [input_spec(text) for text in inputs]
        self.output = output
        self.unit_size = unit_size
        self.count_files = count_files
        self.already_scored = already_scored

    def expand(self, pipeline):
        listed = (pipeline
                  | "Inputs" >> beam.Create([self.specs])
                  | "ListInUnits" >> beam.ParDo(_ListInUnits(self.unit_size, self.count_files, self.already_scored,
                                                           self.output))
                  .with_outputs(COUNTS, main="units"))
        # Reshuffled, so the units spread over the workers (fused with the listing, one worker would read them all).
        return Matched(listed.units | "SpreadUnits" >> beam.Reshuffle(), listed[COUNTS])
