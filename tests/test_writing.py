"""Tests the one atomic write (model.writing) that cards, training state, the history CSV and the workers' model
cache all use: the target is either as it was or whole, and no temporary file is left either way."""

import json
import os

import pytest

from model import writing


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    writing.write_json_atomically(str(target), {"epoch": 3, "name": "Ankle boot \u2014 v2"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"epoch": 3, "name": "Ankle boot \u2014 v2"}
    assert target.read_text(encoding="utf-8").endswith("}\n")
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_a_stream_that_fails_half_way_leaves_the_file_as_it_was(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the copy a worker may be loading")

    def chunks():
        yield b"x" * (1 << 20)
        raise OSError("the bucket stopped answering")

    with pytest.raises(OSError, match="stopped answering"):
        writing.write_atomically(str(target), chunks())
    assert target.read_bytes() == b"the copy a worker may be loading"
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]
    writing.write_atomically(str(target), iter([b"a", b"b"]))
    assert target.read_bytes() == b"ab"
