"""Shared fixtures: the real dataset, a small real IDX subset, a tiny trained model with its card, the shipped
model. Plain helpers are in tests/helpers.py."""

import os

import numpy as np
import pytest

from model.training import data
from model.training.data import DATASET_INSTALL_HINT, DEFAULT_DATA_DIR, IDX_FILES
from tests.helpers import SHIPPED_MODEL, write_idx


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The real Fashion-MNIST; the tests need it and say how to get it (`make test` installs it)."""
    if not os.path.isfile(os.path.join(DEFAULT_DATA_DIR, IDX_FILES["test"][0])):
        pytest.fail(f"the real Fashion-MNIST is missing from {DEFAULT_DATA_DIR}: run `{DATASET_INSTALL_HINT}`")
    return DEFAULT_DATA_DIR


@pytest.fixture(scope="session")
def test_split(data_dir) -> data.LabelledImages:
    return data.load_split("test", data_dir)


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


@pytest.fixture(scope="session")
def shipped_model() -> str:
    if not os.path.isfile(SHIPPED_MODEL):
        pytest.fail(f"the shipped model {SHIPPED_MODEL} is missing; train it with `make train-default`")
    return SHIPPED_MODEL
