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

import dataclasses
import errno
import functools
import os
import re
import stat

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

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


FOLDER = "folder"  # what `level` gives for a folder to walk


def spec_entries(spec: InputSpec, output: str = None):
    """Every (path, entry) an input names, where an entry is (path, size, mtime), an error row or a reason to skip."""
    if FileSystems.get_scheme(spec.path) is not None:
        yield from remote_entries(spec.path)
    elif spec.kind == "file":
        yield spec.path, classify(spec.path)
    else:
        root, matches = walk_root(spec)
        if os.path.isdir(root):
            yield from ((path, entry) for path, entry in walk(root, output) if path is None or matches(path))


def walk_root(spec: InputSpec) -> tuple:
    """(the folder to walk, a test of the paths found there) for a local folder or glob input."""
    if spec.kind == "folder":
        return spec.path, lambda path: True
    return _fixed_prefix_folder(spec.path), re.compile(FileSystem.translate_pattern(spec.path)).match


def remote_entries(pattern: str):
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        entry = ("hidden" if os.path.basename(metadata.path.rstrip("/")).startswith(".")
                 else (metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds))
        yield metadata.path, entry


def walk(root: str, output: str = None):
    """(path, entry) for everything below a folder; the folder `output` is one skipped entry. An unreadable folder's
    path is None: whatever a glob asks, it may hide matches."""
    folders = [root]
    while folders:
        for path, entry in level(folders.pop(), output):
            if entry == FOLDER:
                folders.append(path)
            else:
                yield path, entry


def level(folder: str, output: str = None):
    """(path, entry or FOLDER) for what one folder holds, not below it."""
    try:
        with os.scandir(folder) as listed:
            found = list(listed)
    except OSError as error:
        yield None, error_row(key_for(folder), "read", _error_type(error, "unreadable folder"),
                              f"the folder cannot be listed: {error.strerror or error}")
        return
    for item in found:
        if item.name.startswith("."):
            yield item.path, "hidden"
        elif item.is_dir(follow_symlinks=False):
            yield item.path, FOLDER if item.path != output else "the run's own output folder"
        else:
            yield item.path, classify(item.path, item)


def lists(spec: InputSpec, path: str, output: str = None) -> bool:
    """Would `spec` list `path` as an entry? (Then a later input that names it again is skipped as listed twice.)"""
    if FileSystems.get_scheme(spec.path) is not None:
        return FileSystems.get_scheme(path) is not None and bool(
            re.match(FileSystem.translate_pattern(spec.path), path))
    if spec.kind == "file":
        return path == spec.path
    root, matches = walk_root(spec)
    if not path.startswith(root + os.sep) or not matches(path):
        return False
    folder = os.path.dirname(path)
    return not _hidden_or_linked(root, folder, output) and not os.path.basename(path).startswith(".")


@functools.lru_cache(maxsize=4096)
def _hidden_or_linked(root: str, folder: str, output: str) -> bool:
    """Is some folder between root (exclusive) and folder (inclusive) hidden, a link, or the output? (A walk from
    root would not enter it.)"""
    while folder != root and len(folder) > len(root):
        if os.path.basename(folder).startswith(".") or os.path.islink(folder) or folder == output:
            return True
        folder = os.path.dirname(folder)
    return False


def _fixed_prefix_folder(pattern: str) -> str:
    """The deepest folder of a glob that holds no glob character: where its matches can be."""
    found = _GLOB_CHARACTERS.search(pattern)
    return os.path.dirname(pattern[:found.start()]) if found else os.path.dirname(pattern)


def classify(path: str, found=None):
    """(path, size, mtime) for a regular file (or a link to one), else an error row or a reason to skip.

    `found` is the os.DirEntry when walking: its type and its (followed) status come without extra system calls.
    A folder named as a file (an input, not a walk) is an error.
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
