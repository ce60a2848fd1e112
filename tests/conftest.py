"""Shared fixtures: the real dataset, a small real IDX subset, and a tiny trained model with its card."""

import gzip
import os

import numpy as np
import pytest

from model import data
from model.vocabulary import DATASET_INSTALL_HINT, DEFAULT_DATA_DIR, IDX_FILES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The real Fashion-MNIST; the tests need it and say how to get it (`make test` installs it)."""
    if not os.path.isfile(os.path.join(DEFAULT_DATA_DIR, IDX_FILES["test"][0])):
        pytest.fail(f"the real Fashion-MNIST is missing from {DEFAULT_DATA_DIR}: run `{DATASET_INSTALL_HINT}`")
    return DEFAULT_DATA_DIR


@pytest.fixture(scope="session")
def test_split(data_dir) -> data.LabelledImages:
    return data.load_split("test", data_dir)


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as a gzipped IDX file (magic 0x0000080N, big-endian sizes)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def small_data_dir(data_dir, tmp_path_factory) -> str:
    """A real subset of Fashion-MNIST in IDX form: the first 3,000 training and 1,000 test images."""
    folder = tmp_path_factory.mktemp("fmnist-small")
    for split, count in (("train", 3000), ("test", 1000)):
        full = data.load_split(split, data_dir)
        image_name, label_name = IDX_FILES[split]
        write_idx(str(folder / image_name), full.images[:count])
        write_idx(str(folder / label_name), full.labels[:count].astype(np.uint8))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model_path(small_data_dir, tmp_path_factory) -> str:
    """A real MLP trained for two epochs on the small subset, exported with its card through the training CLI."""
    from model import train

    folder = tmp_path_factory.mktemp("tiny-model")
    export = str(folder / "tiny.keras")
    code = train.main(["--architecture", "mlp", "--epochs", "2", "--batch-size", "64", "--data-dir", small_data_dir,
                       "--run-dir", str(folder / "run"), "--export", export, "--verbose", "0"])
    assert code == 0
    return export


SHIPPED_MODEL = os.path.join(REPO_ROOT, "model", "artifacts", "fashion_cnn.keras")
SAMPLE_INPUTS = os.path.join(REPO_ROOT, "sample_inputs")


@pytest.fixture(scope="session")
def shipped_model() -> str:
    if not os.path.isfile(SHIPPED_MODEL):
        pytest.fail(f"the shipped model {SHIPPED_MODEL} is missing; train it with `make train-default`")
    return SHIPPED_MODEL


def local_pipeline(*args):
    """A TestPipeline on the offline Python runner (Beam's DirectRunner would first try to download Prism)."""
    from apache_beam.testing.test_pipeline import TestPipeline

    return TestPipeline(runner="FnApiRunner", argv=list(args), blocking=True)


def read_rows(folder: str) -> list:
    """All rows of a Parquet folder as dicts, sorted by key, read with pyarrow."""
    import pyarrow.parquet as pq

    return sorted(pq.read_table(folder).to_pylist(), key=lambda row: row["key"])


def partition(output: str) -> str:
    """The one date partition (dt=YYYY-MM-DD) a scoring run wrote under `output`."""
    import glob

    found = glob.glob(os.path.join(str(output), "dt=*"))
    assert len(found) == 1, f"expected one partition under {output}, found {found}"
    return found[0]
