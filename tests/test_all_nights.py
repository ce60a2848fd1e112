"""Tests the README's lines that read every night as one table, run as written with the real clients: pyarrow's
dataset, DuckDB and PySpark (a local Spark on loopback), on two real nights the scorer published."""

import contextlib
import os
import re
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline import score
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS

NIGHTS = {"2026-11-21": os.path.join(SAMPLE_INPUTS, "images"), "2026-11-22": os.path.join(SAMPLE_INPUTS, "images",
                                                                                          "fashion")}


def _readme_blocks() -> list:
    """The python blocks of the README's "Every night as one table" paragraph, as written."""
    text = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
    part = text[text.index("**Every night as one table**"):]
    part = part[:part.index("\n\n", part.index("```python\nscores = spark"))]
    return re.findall(r"```python\n(.*?)```", part, re.S)


@pytest.fixture(scope="module")
def nights(shipped_model, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("nights") / "scores")
    for night, folder in NIGHTS.items():
        code = score.run(["--input", folder, "--output", output, "--model", shipped_model, "--run_date", night,
                          "--progress_seconds", "0", "--max_error_rate", "0.5"])
        assert code == score.EXIT_OK
    return output


@contextlib.contextmanager
def _local_spark(monkeypatch, name: str):
    """A local Spark session on loopback (skipped without Java), stopped afterwards."""
    if shutil.which("java") is None:
        pytest.skip("PySpark needs Java: apt-get install -y default-jre-headless (CI installs it)")
    from pyspark.sql import SparkSession

    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only
    spark = (SparkSession.builder.master("local[1]").appName(name).config("spark.ui.enabled", "false")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1").getOrCreate())
    try:
        yield spark
    finally:
        spark.stop()


def _expected(output: str, table: str) -> dict:
    """{date: rows} of each night's table, read one partition at a time."""
    return {night: pq.read_table(os.path.join(output, f"dt={night}", table)).num_rows for night in NIGHTS}


@pytest.mark.clock  # not PySpark's test: a JVM under faketime spins in its sleeps (see tests/clock/sitecustomize.py)
def test_pyarrow_and_duckdb_read_every_night_as_one_table_with_the_date(nights):
    block = _readme_blocks()[0]
    assert 'OUT = "out/scores"' in block
    found = {}
    exec(block.replace('OUT = "out/scores"', f"OUT = {nights!r}"), found)
    scores, errors = found["scores"], found["errors"]
    expected = _expected(nights, "scores")
    assert scores.num_rows == sum(expected.values()) and errors.num_rows == sum(_expected(nights, "errors").values())
    dates = scores.column("dt").to_pylist()
    assert {night: dates.count(night) for night in NIGHTS} == expected
    assert errors.num_rows == 2 and set(errors.column("dt").to_pylist()) == {"2026-11-21"}
    assert scores.schema.names[-1] == "dt" and len(scores.column("probabilities")[0]) == 10
    counted = {}
    for night, _, n in found["per_night"]:
        counted[night.isoformat()] = counted.get(night.isoformat(), 0) + n
    assert counted == expected


def test_pyspark_reads_every_night_as_one_table_with_the_date(nights, monkeypatch):
    with _local_spark(monkeypatch, "all-nights") as spark:
        found = {"spark": spark, "OUT": nights}
        exec(_readme_blocks()[1], found)
        rows = found["scores"].groupBy("dt").count().collect()
        assert {str(row["dt"]): row["count"] for row in rows} == _expected(nights, "scores")
        assert "probabilities" in found["scores"].columns


@pytest.fixture(scope="module")
def table_nights(shipped_model, tmp_path_factory) -> str:
    """Two nights of sample_inputs/catalogue.csv, the first keeping product_id, the second title."""
    output = str(tmp_path_factory.mktemp("table-nights") / "scores")
    for night, kept in (("2026-11-21", "product_id"), ("2026-11-22", "title")):
        code = score.run(["--input_table", os.path.join(SAMPLE_INPUTS, "catalogue.csv"), "--uri_column", "image",
                          "--keep_columns", kept, "--output", output, "--model", shipped_model, "--run_date", night,
                          "--progress_seconds", "0", "--max_error_rate", "0.5"])
        assert code == score.EXIT_OK
    return output


@pytest.mark.clock
def test_nights_that_keep_other_table_columns_read_as_one_table_by_name(table_nights):
    found = {}
    exec(_readme_blocks()[0].replace('OUT = "out/scores"', f"OUT = {table_nights!r}"), found)
    rows = found["scores"].to_pylist()
    assert {"product_id", "title", "table_row", "dt"} <= set(found["scores"].schema.names)
    first = [row for row in rows if row["dt"] == "2026-11-21"]
    second = [row for row in rows if row["dt"] == "2026-11-22"]
    assert len(first) == len(second) == 55
    assert all(row["product_id"] is not None and row["title"] is None for row in first)
    assert all(row["title"] is not None and row["product_id"] is None for row in second)
    assert found["errors"].num_rows == 4 and {"product_id", "title"} <= set(found["errors"].schema.names)
    assert sum(n for _, _, n in found["per_night"]) == 110


def test_pyspark_reads_nights_that_keep_other_table_columns_by_name(table_nights, monkeypatch):
    with _local_spark(monkeypatch, "table-nights") as spark:
        found = {"spark": spark, "OUT": table_nights}
        exec(_readme_blocks()[1], found)
        scores = found["scores"]
        assert {"product_id", "title"} <= set(scores.columns)
        rows = scores.groupBy("dt").agg({"product_id": "count", "title": "count"}).collect()
        assert {str(row["dt"]): (row["count(product_id)"], row["count(title)"]) for row in rows} == {
            "2026-11-21": (55, 0), "2026-11-22": (0, 55)}
