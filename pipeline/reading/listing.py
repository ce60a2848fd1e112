"""Lists what a run's inputs name. Every entry the listing meets becomes a file to read, an error row, or a skipped
entry counted with its reason: nothing met is left unaccounted for.

An input that exists as a local file or folder is taken literally, even when its name holds `[ ] * ?`; anything else
is a glob, on any Beam filesystem (a trailing `/` on an object store means everything below it). Local folders and
globs are walked with os.scandir, which sees what a glob would not report: links to nowhere, link loops, FIFOs and
devices (never opened: reading one would hang or never end), folders that cannot be read. A glob's walk only enters
folders that could hold a match, so a folder it can never match cannot fail it. Hidden entries (names that start
with `.`) are skipped and counted; links to folders are not followed (a loop could never end) and are counted; so is
the run's own output folder when it lies below an input. Links to files are followed wherever they point, unless
--refuse_outside_links: then a link whose target lies outside every input is an error row, `link outside the inputs`.
The same file named by two inputs is listed once.

Local paths whose names are not valid UTF-8 travel as bytes (Beam's coders write text as UTF-8); `key_for` turns
any path into the row key, writing each byte that is not UTF-8 as \\xNN and each backslash as \\\\, so that a key
names one path only: `caf\\xe9.png` is the Latin-1 name, `caf\\\\xe9.png` the name spelled with a backslash.
"""

import dataclasses
import errno
import functools
import os
import re
import stat

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from model.reading import lies_inside
from pipeline.reading import globs
from pipeline.records import error_row

@dataclasses.dataclass(frozen=True)
class Rules:
    """What a listing leaves out besides hidden entries: `output`, the run's own output folder (skipped), and, when
    `inside` is given (--refuse_outside_links), links to files whose real target lies in none of those real paths
    (error rows). None: links are followed wherever they point."""

    output: str = None
    inside: tuple = None


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
    if not globs.GLOB_CHARACTERS.search(text) or FileSystems.exists(text):
        return InputSpec("file", text)
    return InputSpec("glob", text)


def key_for(path) -> str:
    """The row key of a path (or of a TFRecord's key feature): the path itself, with each backslash written as \\\\
    and each byte that is not UTF-8 as \\xNN. Doubling the backslash makes the key one-to-one with the name: without
    it the Latin-1 `caf\\xe9.png` and a file named `caf\\\\xe9.png` would share a key. (A backslash is ASCII, so it is
    never part of a multi-byte character nor a byte that is not UTF-8.) Keys of names with a backslash written
    before this had it once: --skip_scored scores such a file once more (see pipeline.outputs.fingerprints)."""
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def _portable(path: str):
    """A local path as Beam can carry it: text if it is valid UTF-8, else its bytes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


FOLDER = "folder"  # what `level` gives for a folder to walk


def spec_entries(spec: InputSpec, rules: Rules = Rules()):
    """Every (path, entry) an input names, where an entry is (path, size, mtime), an error row or a reason to skip."""
    if FileSystems.get_scheme(spec.path) is not None:
        yield from remote_entries(spec.path)
    elif spec.kind == "file":
        yield spec.path, classify(spec.path, inside=rules.inside)
    else:
        root, matches = walk_root(spec)
        if os.path.isdir(root):
            yield from walk_matching(root, matches, rules)


def walk_root(spec: InputSpec) -> tuple:
    """(the folder to walk, what it matches there: a test of paths with a `may_hold(folder)` test of folders) for a
    local folder or glob input."""
    if spec.kind == "folder":
        return spec.path, globs.Everything()
    root = globs.fixed_prefix_folder(spec.path)
    return root, globs.Glob(spec.path, root)


def link_roots(specs) -> tuple:
    """The real paths that --refuse_outside_links lets links point into: each local input's folder (a glob's: the
    folder it is walked from) or file (a link named on the command line is followed)."""
    local = [spec for spec in specs if FileSystems.get_scheme(spec.path) is None]
    return tuple(os.path.realpath(walk_root(spec)[0] if spec.kind == "glob" else spec.path) for spec in local)


def remote_entries(pattern: str):
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        entry = ("hidden" if os.path.basename(metadata.path.rstrip("/")).startswith(".")
                 else (metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds))
        yield metadata.path, entry


def walk_matching(folder: str, matches, rules: Rules = Rules()):
    """(path, entry) for what a local input lists below `folder`: the paths `matches` takes, found in the folders
    that may hold one (see walk_root), and every folder among those that cannot be listed."""
    return ((path, entry) for path, entry in walk(folder, rules, matches.may_hold) if path is None or matches(path))


def walk(root: str, rules: Rules = Rules(), enters=lambda folder: True):
    """(path, entry) for everything below a folder, entering the sub-folders `enters` accepts; the folder
    rules.output is one skipped entry. An unreadable folder's path is None: whatever a glob asks, it may hide
    matches."""
    folders = [root]
    while folders:
        for path, entry in level(folders.pop(), rules):
            if entry != FOLDER:
                yield path, entry
            elif enters(path):
                folders.append(path)


def level(folder: str, rules: Rules = Rules()):
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
            yield item.path, FOLDER if item.path != rules.output else "the run's own output folder"
        else:
            yield item.path, classify(item.path, item, rules.inside)


def lists(spec: InputSpec, path: str, rules: Rules = Rules()) -> bool:
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
    return not _hidden_or_linked(root, folder, rules.output) and not os.path.basename(path).startswith(".")


@functools.lru_cache(maxsize=4096)
def _hidden_or_linked(root: str, folder: str, output: str) -> bool:
    """Is some folder between root (exclusive) and folder (inclusive) hidden, a link, or the output? (A walk from
    root would not enter it.)"""
    while folder != root and len(folder) > len(root):
        if os.path.basename(folder).startswith(".") or os.path.islink(folder) or folder == output:
            return True
        folder = os.path.dirname(folder)
    return False


def classify(path: str, found=None, inside: tuple = None):
    """(path, size, mtime) for a regular file (or a link to one), else an error row or a reason to skip.

    `found` is the os.DirEntry when walking: its type and its (followed) status come without extra system calls.
    A folder named as a file (an input, not a walk) is an error. With `inside` (Rules.inside), a link to anything but
    a folder whose real target lies outside those paths is an error row, never read.
    """
    try:
        if found is not None:
            is_link, status = found.is_symlink(), found.stat()  # stat follows a link to its target
        else:  # one system call for what is not a link
            status = os.lstat(path)
            is_link = stat.S_ISLNK(status.st_mode)
            status = os.stat(path) if is_link else status
    except OSError as error:
        if error.errno == errno.ENOENT and os.path.lexists(path):
            return error_row(key_for(path), "read", "dangling link", f"the link points to {os.readlink(path)!r}, "
                             "which does not exist")
        return error_row(key_for(path), "read", _error_type(error, "unreadable"), error.strerror or str(error))
    if stat.S_ISDIR(status.st_mode):
        return "link to a folder" if is_link else error_row(key_for(path), "read", "not a regular file",
                                                              "it is a folder")
    if is_link and inside is not None and not lies_inside(os.path.realpath(path), inside):
        return error_row(key_for(path), "read", "link outside the inputs", f"the link points to "
                         f"{os.path.realpath(path)!r}, outside every input (--refuse_outside_links)")
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
