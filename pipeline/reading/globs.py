"""Defines what a local glob matches, in Beam's glob language: the paths, the folder its walk starts from, and the
folders below that could hold a match (so a walk never enters, and never fails on, one that cannot)."""

import os
import re

from apache_beam.io.filesystem import FileSystem

GLOB_CHARACTERS = re.compile(r"[*?\[]")
# Parts of a glob that may match across a `/`: Beam's `**` matches anything, and its `?` and `[...]` any character,
# `/` included (FileSystem.translate_pattern); only its single `*` stays within one name.
_CROSSING = re.compile(r"\*\*|[?\[]")


class Everything:
    """What a folder input matches: every path, in every folder below it."""

    def __call__(self, path: str) -> bool:
        return True

    def may_hold(self, folder: str) -> bool:
        return True


class Glob:
    """What a local glob matches below the folder it is walked from: its paths, and the folders that could hold one.

    Folders are compared name by name with the glob's parts; from a part that may match across a `/` (_CROSSING) on,
    any folder may hold a match. So `DIR/*.png` never enters a folder below DIR, and `DIR/*/x*.png` only DIR's own."""

    def __init__(self, pattern: str, root: str):
        self.root = root
        self.matches = re.compile(FileSystem.translate_pattern(pattern)).match
        self.parts = [None if _CROSSING.search(part) else re.compile(FileSystem.translate_pattern(part)).match
                      for part in pattern[len(root):].lstrip("/").split("/")]

    def __call__(self, path: str) -> bool:
        return bool(self.matches(path))

    def may_hold(self, folder: str) -> bool:
        names = folder[len(self.root):].lstrip(os.sep).split(os.sep)
        for name, part in zip(names, self.parts):
            if part is None:
                return True
            if not part(name):
                return False
        return len(names) < len(self.parts)  # a match is a file below the folder, for the glob's next part


def fixed_prefix_folder(pattern: str) -> str:
    """The deepest folder of a glob that holds no glob character: where its matches can be."""
    found = GLOB_CHARACTERS.search(pattern)
    return os.path.dirname(pattern[:found.start()]) if found else os.path.dirname(pattern)
