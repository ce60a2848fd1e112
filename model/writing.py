"""Defines writing a local file atomically, the one way every command and worker does: the bytes go to a temporary
file of this process's own beside the target, which is then renamed over it. A reader (a worker loading a cached
model, a resumed training run, a user's editor) never sees half a file, and two processes writing the same target
never share a temporary file."""

import json
import os


def write_atomically(path: str, data) -> None:
    """Writes `data` (bytes, or an iterable of bytes: streamed, so a generator may raise to abandon the write) to
    `path`; where anything fails, `path` is as it was and no temporary file is left."""
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "wb") as stream:
            for chunk in [data] if isinstance(data, (bytes, bytearray)) else data:
                stream.write(chunk)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_json_atomically(path: str, payload: dict) -> None:
    """`payload` as indented JSON (keys in their order) and a newline, written atomically."""
    write_atomically(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode("utf-8"))
