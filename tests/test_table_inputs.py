"""Tests scoring the images a table lists (--input_table): a Parquet table and the same table as CSV over the real
sample images, with missing, broken, null, relative and repeated URIs and kept columns of int64, string and
timestamp type, read back with pyarrow; every table row is one output row, its columns carried; --uri_root refuses
a row outside it without opening the file; the mistakes a user makes fail fast with the README's exit codes."""

import csv
import datetime
import glob
import json
import os
import shutil
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import score
from tests.helpers import REPO_ROOT, partition, read_rows

IMAGES = os.path.join(REPO_ROOT, "sample_inputs", "images")
NIGHT = "2026-03-01"


def _score(*arguments) -> int:
    return score.run(["--progress_seconds", "0", "--run_date", NIGHT, "--max_error_rate", "1", *arguments])


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> dict:
    """A folder with images beside a table of them: good PNGs and photos (absolute and relative URIs), a broken file,
    a missing one, a null and an empty URI, a folder, a glob, and one image listed twice."""
    folder = tmp_path_factory.mktemp("catalogue")
    shutil.copytree(IMAGES, folder / "images")
    good = sorted(glob.glob(str(folder / "images" / "fashion" / "*.png")))[:8]
    photos = sorted(glob.glob(str(folder / "images" / "photos" / "*.jpg")))[:3]
    uris = ([os.path.relpath(path, folder) for path in good[:4]] + good[4:] + photos
            + [str(folder / "images" / "broken" / "cut-in-half.png"), str(folder / "images" / "gone.png"), None, "",
               str(folder / "images" / "fashion"), "images/fashion/*.png", good[0]])
    count = len(uris)
    columns = {
        "image": pa.array(uris, pa.string()),
        "product_id": pa.array([1000 + row for row in range(count)], pa.int64()),
        "title": pa.array([f"listing {row}" for row in range(count)], pa.string()),
        "listed_at": pa.array([datetime.datetime(2026, 2, 1) + datetime.timedelta(hours=row) for row in range(count)],
                              pa.timestamp("s")),
    }
    table = pa.table(columns)
    pq.write_table(table, folder / "table.parquet", row_group_size=5)  # several row groups, read as tasks
    with open(folder / "table.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(columns))
        for row in table.to_pylist():
            writer.writerow(["" if row["image"] is None else row["image"], row["product_id"], row["title"],
                             row["listed_at"].isoformat(sep=" ")])
    return {"folder": str(folder), "uris": uris, "good": good, "photos": photos, "rows": table.to_pylist()}


def _outputs(output: str) -> tuple:
    found = partition(output)
    manifest = json.loads(open(os.path.join(found, "manifest.json"), encoding="utf-8").read())
    return read_rows(os.path.join(found, "scores")), read_rows(os.path.join(found, "errors")), manifest


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_every_table_row_is_one_output_row_with_its_kept_columns(catalogue, kind, tmp_path):
    table = os.path.join(catalogue["folder"], f"table.{kind}")
    output = str(tmp_path / "out")
    assert _score("--input_table", table, "--uri_column", "image", "--keep_columns", "product_id,title,listed_at",
                  "--output", output) == score.EXIT_OK
    scores, errors, manifest = _outputs(output)
    rows = catalogue["rows"]
    by_index = {row["table_row"]["index"]: row for row in scores + errors}
    assert sorted(by_index) == list(range(len(rows)))  # one to one with the table, nothing dropped
    assert len(scores) + len(errors) == len(rows)
    assert all(row["table_row"]["file"] == table for row in scores + errors)
    for index, row in by_index.items():
        assert (row["product_id"], row["title"], row["listed_at"]) == (
            rows[index]["product_id"], rows[index]["title"], rows[index]["listed_at"])
    # the key is the resolved URI: relative ones against the table's folder
    expected_scored = catalogue["good"] + catalogue["photos"] + [catalogue["good"][0]]
    assert sorted(row["key"] for row in scores) == sorted(expected_scored)
    assert [row["table_row"]["index"] for row in scores if row["key"] == catalogue["good"][0]] == [0, len(rows) - 1]
    reasons = {row["table_row"]["index"]: row["error_type"] for row in errors}
    base = len(catalogue["good"]) + len(catalogue["photos"])
    assert reasons == {base: "truncated", base + 1: "missing", base + 2: "no uri", base + 3: "no uri",
                       base + 4: "not a regular file", base + 5: "not a file"}
    counts = manifest["counts"]
    assert (counts["matched"], counts["scored"], counts["failed"], counts["skipped"]) == (len(rows), 12, 6, 0)
    assert counts["invariant_holds"]
    assert manifest["inputs"]["table"]["keep_columns"] == ["product_id", "title", "listed_at"]
    schema = pq.read_schema(glob.glob(os.path.join(partition(output), "scores", "*.parquet"))[0])
    assert schema.field("product_id").type == pa.int64() and schema.field("title").type == pa.string()
    assert pa.types.is_timestamp(schema.field("listed_at").type)


def test_the_scores_of_a_table_equal_the_same_files_given_as_input(catalogue, tmp_path):
    table = os.path.join(catalogue["folder"], "table.parquet")
    assert _score("--input_table", table, "--uri_column", "image", "--output", str(tmp_path / "table")) == 0
    assert _score("--input", os.path.join(catalogue["folder"], "images", "fashion"), os.path.join(
        catalogue["folder"], "images", "photos"), "--output", str(tmp_path / "files")) == 0
    from_table = {row["key"]: row["probabilities"] for row in _outputs(str(tmp_path / "table"))[0]}
    from_files = {row["key"]: row["probabilities"] for row in _outputs(str(tmp_path / "files"))[0]}
    assert from_table and all(from_table[key] == from_files[key] for key in from_table)


def test_a_candidate_models_rows_carry_the_tables_columns(catalogue, tiny_model_path, tmp_path):
    table = os.path.join(catalogue["folder"], "table.parquet")
    output = str(tmp_path / "out")
    assert _score("--input_table", table, "--uri_column", "image", "--keep_columns", "product_id",
                  "--candidate_model", tiny_model_path, "--output", output) == 0
    candidate = read_rows(os.path.join(partition(output), "candidate"))
    scores = _outputs(output)[0]
    assert sorted((row["table_row"]["index"], row["product_id"]) for row in candidate) == sorted(
        (row["table_row"]["index"], row["product_id"]) for row in scores)


def test_a_uri_outside_every_root_is_an_error_row_and_never_opened(catalogue, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    fifo = outside / "waits-for-a-writer.png"
    os.mkfifo(fifo)  # opening it for reading would wait for ever
    shutil.copy(catalogue["good"][1], outside / "real.png")
    link = tmp_path / "inside" / "link.png"
    link.parent.mkdir()
    os.symlink(outside / "real.png", link)  # inside a root by name, outside every root by its target
    table = tmp_path / "table.parquet"
    pq.write_table(pa.table({"image": [catalogue["good"][0], str(fifo), str(tmp_path / "inside" / ".." / "elsewhere"
                                                                              / "waits-for-a-writer.png"), str(link)],
                             "sku": ["a", "b", "c", "d"]}), table)
    output = str(tmp_path / "out")
    done = threading.Event()
    result = []

    def run():
        result.append(_score("--input_table", str(table), "--uri_column", "image", "--keep_columns", "sku",
                             "--uri_root", os.path.join(catalogue["folder"], "images"),
                             "--uri_root", str(tmp_path / "inside"), "--output", output))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(300), "the run opened the FIFO outside the roots"
    assert result == [score.EXIT_OK]
    scores, errors, _ = _outputs(output)
    assert [row["sku"] for row in scores] == ["a"]
    assert sorted((row["sku"], row["error_type"]) for row in errors) == [
        ("b", "outside the allowed roots"), ("c", "outside the allowed roots"), ("d", "outside the allowed roots")]


def test_a_csv_row_that_is_not_utf8_is_an_error_row(catalogue, tmp_path):
    table = tmp_path / "table.csv"
    good = catalogue["good"]
    table.write_bytes(b"image,note\n" + good[0].encode() + b",fine\n" + good[1].encode() + b",caf\xe9\n"
                      + good[2].encode() + b",also fine\n")
    output = str(tmp_path / "out")
    assert _score("--input_table", str(table), "--uri_column", "image", "--keep_columns", "note",
                  "--output", output) == 0
    scores, errors, manifest = _outputs(output)
    assert sorted(row["note"] for row in scores) == ["also fine", "fine"]
    assert [(row["table_row"]["index"], row["error_type"]) for row in errors] == [(1, "not UTF-8")]
    assert manifest["counts"]["matched"] == 3


def _refused(capsys, *arguments) -> tuple:
    code = score.run(["--output", "/nonexistent-never-written", *arguments])
    lines = capsys.readouterr().err.strip().splitlines()
    return code, lines


def test_a_users_mistakes_fail_fast_in_one_line(catalogue, tmp_path, capsys):
    table = os.path.join(catalogue["folder"], "table.parquet")
    cases = [
        (["--uri_column", "url"], score.EXIT_USAGE, "--uri_column: "),
        (["--uri_column", "image", "--keep_columns", "label"], score.EXIT_USAGE, "is the name of an output column"),
        (["--uri_column", "image", "--keep_columns", "colour"], score.EXIT_USAGE, "has no column 'colour'"),
        (["--uri_column", "product_id"], score.EXIT_USAGE, "holds int64, not strings"),
    ]
    for extra, code, said in cases:
        found, lines = _refused(capsys, "--input_table", table, *extra)
        assert (found, len(lines)) == (code, 1) and said in lines[0], lines
    not_a_table = tmp_path / "list.txt"
    not_a_table.write_text("a.png\n")
    found, lines = _refused(capsys, "--input_table", str(not_a_table), "--uri_column", "image")
    assert found == score.EXIT_USAGE and "neither Parquet (.parquet) nor CSV (.csv)" in lines[0]
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"image": pa.array([], pa.string())}), empty)
    found, lines = _refused(capsys, "--input_table", str(empty), "--uri_column", "image")
    assert found == score.EXIT_NO_INPUT and "holds no row" in lines[0]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(pa.table({"image": ["a.png"], "n": pa.array([1], pa.int64())}), mixed / "part-0.parquet")
    pq.write_table(pa.table({"image": ["b.png"], "n": pa.array(["1"], pa.string())}), mixed / "part-1.parquet")
    found, lines = _refused(capsys, "--input_table", str(mixed), "--uri_column", "image", "--keep_columns", "n")
    assert found == score.EXIT_USAGE and "give files of one schema" in lines[0]
    with pytest.raises(SystemExit) as exited:
        score.run(["--output", str(tmp_path / "o"), "--input_table", table])
    assert exited.value.code == score.EXIT_USAGE


def test_the_documented_catalogue_command_runs_as_written(tmp_path):
    """docs/scoring.md's --input_table line, run from the repository as written (its output moved to tmp_path):
    sample_inputs/catalogue.csv lists the sample images by relative paths, the two broken files among them."""
    import shlex

    from tests.test_docs import commands

    [argv] = [argv for argv in commands("docs/scoring.md") if "--input_table" in argv]
    arguments = argv[3:]
    arguments[arguments.index("--output") + 1] = str(tmp_path / "out")
    here = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        assert score.run(arguments + ["--run_date", NIGHT]) == score.EXIT_OK, shlex.join(argv)
    finally:
        os.chdir(here)
    scores, errors, manifest = _outputs(str(tmp_path / "out"))
    listed = list(csv.DictReader(open(os.path.join(REPO_ROOT, "sample_inputs", "catalogue.csv"), encoding="utf-8")))
    assert (len(scores), len(errors), manifest["counts"]["matched"]) == (len(listed) - 2, 2, len(listed))
    expected = {os.path.join(REPO_ROOT, "sample_inputs", row["image"]): int(row["product_id"]) for row in listed}
    assert {row["key"]: row["product_id"] for row in scores + errors} == expected


def test_two_worker_processes_give_the_same_rows(catalogue, tmp_path):
    table = os.path.join(catalogue["folder"], "table.parquet")
    found = {}
    for name, extra in {"memory": [], "two-workers": ["--direct_running_mode=multi_processing",
                                                      "--direct_num_workers=2", "--files_per_chunk", "3"]}.items():
        output = str(tmp_path / name)
        assert _score("--input_table", table, "--uri_column", "image", "--keep_columns", "product_id",
                      "--output", output, *extra) == 0
        scores, errors, manifest = _outputs(output)
        found[name] = (sorted((row["table_row"]["index"], row["key"], row["product_id"], tuple(row["probabilities"]))
                              for row in scores),
                       sorted((row["table_row"]["index"], row["error_type"]) for row in errors), manifest["counts"])
    assert found["memory"][:2] == found["two-workers"][:2]
    assert found["memory"][2]["matched"] == found["two-workers"][2]["matched"] == len(catalogue["rows"])


def test_hostile_uris_and_kept_values_are_shown_escaped_never_raw(catalogue, tmp_path, capfd):
    hostile = ["\x1b[2J\x1b[31mred.png", "evil\u202egnp.exe", "../../etc/passwd"]
    table = tmp_path / "table.parquet"
    pq.write_table(pa.table({"image": hostile + [catalogue["good"][0]],
                             "note": ["\x1b]0;title\x07", "\u202eright-to-left", "plain",
                                      "<script>alert(1)</script>\u202e"]}), table)  # the scored row's card line
    output = str(tmp_path / "out")
    assert _score("--input_table", str(table), "--uri_column", "image", "--keep_columns", "note",
                  "--output", output) == 0
    printed = capfd.readouterr()
    page = open(os.path.join(partition(output), "report.html"), encoding="utf-8").read()
    for text in (printed.out, printed.err, page):
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "<script>" not in page and "note=&lt;script&gt;alert(1)&lt;/" in page  # the card line, escaped
    errors = _outputs(output)[1]
    assert sorted(row["note"] for row in errors) == sorted(["\x1b]0;title\x07", "\u202eright-to-left", "plain"])
    # stored as the table has them (data, read back as data); `[` makes the first URI a glob
    assert sorted(row["error_type"] for row in errors) == ["missing", "missing", "not a file"]


def test_the_report_shows_each_table_rows_place_and_kept_columns_beside_its_key(catalogue, tmp_path):
    table = os.path.join(catalogue["folder"], "table.parquet")
    output = str(tmp_path / "out")
    assert _score("--input_table", table, "--uri_column", "image", "--keep_columns", "product_id,title",
                  "--output", output) == 0
    page = open(os.path.join(partition(output), "report.html"), encoding="utf-8").read()
    missing = len(catalogue["good"]) + len(catalogue["photos"]) + 1  # the row naming images/gone.png
    assert (f"/<wbr>gone.png</div><div class=example-row>row {missing} of table.parquet; "
            f"product_id={1000 + missing}, title=listing {missing}</div>") in page  # a failed row: its row under it
    assert "<div class=example>(no URI)</div><div class=example-row>row " in page
    assert f"{table} (column image; kept: product_id, title)" in page  # the run's inputs, as the run section says
    scored = [index for index, uri in enumerate(catalogue["uris"]) if index < missing - 1 or index == len(
        catalogue["uris"]) - 1]  # the contact sheet: every scored row's card says which row and its kept columns
    for index in scored:
        assert f"<div class=table-row>row {index} of table.parquet; product_id={1000 + index}, title=listing {index}" \
               f"</div>" in page


def test_skip_scored_skips_the_rows_whose_file_an_earlier_night_scored_as_it_is(catalogue, tmp_path):
    """Nightly runs over a growing table with --skip_scored: a row is skipped when its file's path, size and
    modification time were scored by this model version before (both rows of a file listed twice), a new or touched
    file is scored, a broken one is tried again; each night's index carries the files it skipped forward."""
    folder = tmp_path / "images"
    shutil.copytree(os.path.join(catalogue["folder"], "images", "fashion"), folder)
    images = sorted(str(path) for path in folder.glob("*.png"))
    broken = shutil.copy(os.path.join(catalogue["folder"], "images", "broken", "cut-in-half.png"), folder / "cut.png")
    table, output = tmp_path / "table.parquet", str(tmp_path / "out")

    def night(date: str, uris: list) -> dict:
        pq.write_table(pa.table({"image": uris, "row_id": list(range(len(uris)))}), table)
        assert score.run(["--progress_seconds", "0", "--max_error_rate", "1", "--input_table", str(table),
                          "--uri_column", "image", "--keep_columns", "row_id", "--output", output, "--skip_scored",
                          "--run_date", date]) == score.EXIT_OK
        found = os.path.join(output, f"dt={date}")
        manifest = json.loads(open(os.path.join(found, "manifest.json"), encoding="utf-8").read())
        return {"counts": manifest["counts"], "indexed": manifest["inputs_indexed"],
                "scored": sorted(row["key"] for row in read_rows(os.path.join(found, "scores"))),
                "failed": sorted(row["key"] for row in read_rows(os.path.join(found, "errors")))}

    first_uris = images[:6] + [str(broken), images[0]]
    first = night("2026-03-01", first_uris)
    assert first["scored"] == sorted(images[:6] + [images[0]]) and first["failed"] == [str(broken)]
    assert first["indexed"]
    index = read_rows(os.path.join(output, "dt=2026-03-01", "_inputs"))
    assert sorted(row["key"] for row in index) == sorted(images[:6] + [str(broken)])  # one row a file
    os.utime(images[1], (os.stat(images[1]).st_atime, os.stat(images[1]).st_mtime + 5))  # touched: scored again
    second = night("2026-03-02", first_uris + images[6:9])
    assert second["scored"] == sorted([images[1]] + images[6:9]) and second["failed"] == [str(broken)]
    counts = second["counts"]
    assert (counts["matched"], counts["skipped"], counts["scored"], counts["failed"]) == (11, 6, 4, 1)
    assert counts["skipped_by_reason"] == {"already scored": 6} and counts["invariant_holds"]
    third = night("2026-03-03", first_uris + images[6:9])  # night 2's index answers for night 1's files too
    assert (third["counts"]["skipped"], third["scored"], third["failed"]) == (10, [], [str(broken)])


def test_a_table_whose_every_row_fails_writes_every_error_row(tmp_path):
    table = tmp_path / "table.parquet"
    pq.write_table(pa.table({"image": ["gone-1.png", None, "gone-2.png"], "row_id": [1, 2, 3]}), table)
    output = str(tmp_path / "out")
    assert _score("--input_table", str(table), "--uri_column", "image", "--keep_columns", "row_id",
                  "--output", output) == score.EXIT_OK
    scores, errors, manifest = _outputs(output)
    assert scores == [] and sorted((row["row_id"], row["error_type"]) for row in errors) == [
        (1, "missing"), (2, "no uri"), (3, "missing")]
    assert (manifest["counts"]["matched"], manifest["counts"]["failed"]) == (3, 3)


def test_a_csv_value_of_another_type_than_the_first_rows_fails_its_row_alone(catalogue, tmp_path, monkeypatch):
    """Arrow infers a CSV's column types from its first block; a later value that is not of that type (`12a` in an
    int64 column) fails its own row (`bad value`), and every row after it is still read and scored."""
    from pipeline.reading import tables

    monkeypatch.setattr(tables, "CSV_BLOCK_BYTES", 256)  # a few rows a block: the odd values come in later blocks
    good = catalogue["good"]
    ids = ["1", "2", "3", "4", "5", "12a", "7", "NA", "3.5", "10", "11", "12"]
    table = tmp_path / "table.csv"
    with open(table, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "product_id", "title"])
        for row, product_id in enumerate(ids):
            writer.writerow([good[row % len(good)], product_id, f"listing {row}"])
    output = str(tmp_path / "out")
    assert _score("--input_table", str(table), "--uri_column", "image", "--keep_columns", "product_id,title",
                  "--output", output) == score.EXIT_OK
    scores, errors, manifest = _outputs(output)
    assert sorted((row["table_row"]["index"], row["product_id"], row["title"]) for row in scores) == [
        (row, None if value == "NA" else int(value), f"listing {row}") for row, value in enumerate(ids)
        if value not in ("12a", "3.5")]
    assert sorted((row["table_row"]["index"], row["error_type"], row["title"]) for row in errors) == [
        (5, "bad value", "listing 5"), (8, "bad value", "listing 8")]
    assert "holds '12a', not int64" in [row for row in errors if row["table_row"]["index"] == 5][0]["error_message"]
    assert manifest["counts"]["matched"] == len(ids) and manifest["counts"]["invariant_holds"]
