"""Plain helpers the tests share (fixtures are in conftest.py): where things are, reading outputs back, a local
Beam pipeline, writing IDX files."""

import glob
import gzip
import os

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_MODEL = os.path.join(REPO_ROOT, "model", "artifacts", "fashion_cnn.keras")
SAMPLE_INPUTS = os.path.join(REPO_ROOT, "sample_inputs")


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as a gzipped IDX file (magic 0x0000080N, big-endian sizes)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def local_pipeline(*args):
    """A TestPipeline on the offline Python runner (Beam's DirectRunner would first try to download Prism)."""
    from apache_beam.testing.test_pipeline import TestPipeline

    return TestPipeline(runner="FnApiRunner", argv=list(args), blocking=True)


def read_rows(folder: str) -> list:
    """All rows of a Parquet folder as dicts, sorted by key, read with pyarrow."""
    import pyarrow.parquet as pq

    return sorted(pq.read_table(folder).to_pylist(), key=lambda row: row["key"])


def scored_in_memory_and_on_two_workers(inputs: str, model: str, tmp_path) -> list:
    """The scores rows of `model` on the folder `inputs`, scored by the real CLI once in memory and once on two worker
    processes (small chunks, so both workers get some): asserted the same, with no errors; sorted by key."""
    from pipeline import score

    runs = {"memory": [], "two-workers": ["--direct_running_mode=multi_processing", "--direct_num_workers=2",
                                          "--files_per_chunk", "5"]}
    rows = {}
    for name, extra in runs.items():
        output = str(tmp_path / name)
        assert score.run(["--input", inputs, "--output", output, "--model", model, *extra]) == 0
        rows[name] = read_rows(os.path.join(partition(output), "scores"))
        assert read_rows(os.path.join(partition(output), "errors")) == []
    assert rows["memory"] == rows["two-workers"]
    return rows["memory"]


def partition(output: str) -> str:
    """The one date partition (dt=YYYY-MM-DD) a scoring run wrote under `output`."""
    found = glob.glob(os.path.join(str(output), "dt=*"))
    assert len(found) == 1, f"expected one partition under {output}, found {found}"
    return found[0]


def too_long_to_list(folder: str) -> None:
    """40 nested 200-character folders below `folder`: 8,000 characters, over Linux's 4,096 for a whole path, so
    walking them fails even for root (whom a chmod 000 would not stop)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(40):
            os.mkdir("d" * 200, dir_fd=descriptor)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
    finally:
        os.close(descriptor)


def log_tails(folder: str, chars: int = 4000) -> str:
    """The end of each *.log in `folder`, for a failure message: the SDK workers' tracebacks land in the worker
    pool's."""
    tails = []
    for path in sorted(glob.glob(os.path.join(folder, "*.log"))):
        with open(path, encoding="utf-8", errors="replace") as stream:
            tails.append(f"--- {os.path.basename(path)}\n{stream.read()[-chars:]}")
    return "\n".join(tails)
