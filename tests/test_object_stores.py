"""Runs the scorer against real object-store servers on loopback (SeaweedFS's S3, fake-gcs-server's GCS): inputs,
TFRecords and the model in a bucket, outputs, the lock, --skip_scored history and the report there, runs killed at
each step of publishing, and mistakes that must fail before any work. Rows are compared with the same images scored
from a local folder; pyarrow's own S3 and GCS clients read the scores back."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from model.runtimes import model_files
from pipeline import score
from pipeline.outputs import partitions
from pipeline.report import report
from tests import samples
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS, partition, read_rows
from tests.object_store_servers import ACCESS_KEY, REGION, SECRET_KEY, gcs_server, s3_server
from tests.portable_servers import free_port

DATE = "2026-11-25"
BUCKET = "shop"


STORES = {"s3": s3_server, "gcs": gcs_server}


@pytest.fixture(scope="module", params=sorted(STORES))
def store(request, tmp_path_factory, monkeypatch_module):
    with STORES[request.param](str(tmp_path_factory.mktemp(request.param))) as server:
        for name, value in server.env.items():
            monkeypatch_module.setenv(name, value)
        server.make_bucket(BUCKET)  # one bucket: each holds volumes of its own on SeaweedFS
        yield server


@pytest.fixture(params=sorted(STORES))
def store_kind(request):
    return request.param


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _url(store, key: str) -> str:
    return f"{store.scheme}://{BUCKET}/{key}"


def _upload_pngs(store, prefix: str, images, names) -> None:
    for image, name in zip(images, names):
        store.put(BUCKET, f"{prefix}{name}", samples.png_bytes(image))


def _run(store, *arguments, date=DATE) -> int:
    return score.run([*arguments, "--run_date", date, "--progress_seconds", "0", *store.flags])


def _remote_rows(store, prefix: str) -> list:
    """The rows of a Parquet folder in the bucket, read by pyarrow's own S3 or GCS filesystem (not Beam's)."""
    import pyarrow.dataset as ds

    return ds.dataset(f"{BUCKET}/{prefix}", filesystem=store.arrow(), format="parquet").to_table().to_pylist()


def _duckdb_on(store):
    """DuckDB with its httpfs extension loaded from the installed wheel (nothing downloaded), pointed at `store`."""
    import duckdb
    import duckdb_extension_httpfs

    extension = os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", f"v{duckdb.__version__}",
                             "httpfs.duckdb_extension")
    connection = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    connection.sql(f"LOAD '{extension}'")
    connection.sql(f"CREATE SECRET store (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}', REGION '{REGION}', "
                   f"ENDPOINT '{store.endpoint.split('://', 1)[1]}', URL_STYLE 'path', USE_SSL false)")
    return connection


def _trusted(store, prefix: str) -> dict:
    """{date: the keys of its scores} for each partition under `prefix` that has its _SUCCESS, as a reader that
    trusts _SUCCESS reads them."""
    found = {}
    for key in store.keys(BUCKET, prefix):
        matched = re.fullmatch(re.escape(prefix) + r"dt=(\d{4}-\d{2}-\d{2})/_SUCCESS", key)
        if matched:
            found[matched.group(1)] = sorted(row["key"] for row in
                                             _remote_rows(store, f"{prefix}dt={matched.group(1)}/scores"))
    return found


def _by_name(rows) -> dict:
    return {row["key"].rsplit("/", 1)[-1]: (row["label"], np.asarray(row["probabilities"])) for row in rows}


def test_two_nights_over_a_growing_bucket_prefix(store, test_split, tiny_model_path, tmp_path, monkeypatch):
    names = [f"item-{i:03d}.png" for i in range(40)]
    _upload_pngs(store, "nightly/", test_split.images[:30], names[:30])
    output, nightly = _url(store, "scores"), _url(store, "nightly/")
    assert _run(store, "--input", nightly, "--output", output, "--model", tiny_model_path,
                "--skip_scored", date="2026-11-24") == score.EXIT_OK
    _upload_pngs(store, "nightly/", test_split.images[30:40], names[30:40])  # the next night's new files
    assert _run(store, "--input", nightly, "--output", output, "--model", tiny_model_path,
                "--skip_scored") == score.EXIT_OK
    manifest = json.loads(store.get(BUCKET, f"scores/dt={DATE}/manifest.json"))
    assert manifest["counts"]["scored"] == 10 and manifest["counts"]["skipped_by_reason"] == {"already scored": 30}
    first, second = (_remote_rows(store, f"scores/dt={day}/scores") for day in ("2026-11-24", DATE))
    assert sorted(row["key"] for row in first + second) == [nightly + name for name in names]
    assert not [key for key in store.keys(BUCKET, "scores/") if key.startswith(("scores/.staging/",
                                                                                "scores/.trash/", "scores/.locks/"))]
    if store.scheme == "s3":  # DuckDB's own S3 client (httpfs) reads every night as one table
        nights = _duckdb_on(store).sql(f"SELECT dt, count(*) FROM read_parquet('{output}/dt=*/scores/*.parquet', "
                                       "hive_partitioning = true) GROUP BY dt ORDER BY dt").fetchall()
        assert [(str(day), rows) for day, rows in nights] == [("2026-11-24", 30), (DATE, 10)]
    local_folder = tmp_path / "local"
    samples.write_pngs(test_split.images[:40], str(local_folder), names)
    local_out = str(tmp_path / "local-out")
    assert score.run(["--input", str(local_folder), "--output", local_out, "--model", tiny_model_path,
                      "--progress_seconds", "0"]) == score.EXIT_OK
    local = _by_name(read_rows(os.path.join(partition(local_out), "scores")))
    remote = _by_name(first + second)
    assert remote.keys() == local.keys()
    for name, (label, probabilities) in remote.items():  # the same rows as from a local folder, to the bit
        assert label == local[name][0] and np.array_equal(probabilities, local[name][1])
    page = store.get(BUCKET, f"scores/dt={DATE}/report.html").decode()
    assert page.count("<img class='seen'") == 10 and "cannot be read" not in page  # read back from the bucket
    assert report.main([f"{output}/dt={DATE}", "--to", str(tmp_path / "rebuilt.html"), *store.flags]) == 0
    assert open(tmp_path / "rebuilt.html", encoding="utf-8").read().count("<img class='seen'") == 10
    monkeypatch.setattr(partitions, "WHOLE_READ_BYTES", 0)  # each Parquet file read by ranged reads, as a big one is
    assert report.main([f"{output}/dt={DATE}", "--to", str(tmp_path / "ranged.html"), *store.flags]) == 0
    assert (tmp_path / "ranged.html").read_text(encoding="utf-8") == (tmp_path / "rebuilt.html").read_text(
        encoding="utf-8")


def test_objects_named_one_by_one_and_by_glob(store, test_split, tiny_model_path, tmp_path):
    names = ["a1.png", "a2.png", "b1.png", "b2.png"]
    _upload_pngs(store, "named/", test_split.images[:4], names)
    output = str(tmp_path / "out")
    assert _run(store, "--input", _url(store, "named/b1.png"), "--input", _url(store, "named/a*.png"),
                "--output", output, "--model", tiny_model_path) == score.EXIT_OK
    rows = read_rows(os.path.join(partition(output), "scores"))
    assert [row["key"] for row in rows] == [_url(store, f"named/{name}") for name in ("a1.png", "a2.png", "b1.png")]


def test_a_table_in_a_bucket_with_relative_and_absolute_uris_and_a_root(store, test_split, tiny_model_path, tmp_path):
    """--input_table in the bucket: relative URIs read against the table's folder there, absolute ones as given, a
    missing object and one outside --uri_root as error rows with their kept columns; one output row per table row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["p1.png", "p2.png", "p3.png"]
    _upload_pngs(store, "catalogue/images/", test_split.images[:3], names)
    _upload_pngs(store, "private/", test_split.images[3:4], ["secret.png"])
    uris = ["images/p1.png", _url(store, "catalogue/images/p2.png"), "images/p3.png", "images/gone.png",
            _url(store, "private/secret.png"), "images/p1.png"]
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"url": uris, "sku": pa.array(range(len(uris)), pa.int64())}), buffer, row_group_size=2)
    store.put(BUCKET, "catalogue/table.parquet", buffer.getvalue().to_pybytes())
    output = str(tmp_path / "out")
    assert _run(store, "--input_table", _url(store, "catalogue/table.parquet"), "--uri_column", "url",
                "--keep_columns", "sku", "--uri_root", _url(store, "catalogue/"), "--output", output, "--model",
                tiny_model_path, "--max_error_rate", "1") == score.EXIT_OK
    scores = read_rows(os.path.join(partition(output), "scores"))
    errors = read_rows(os.path.join(partition(output), "errors"))
    assert sorted((row["sku"], row["key"]) for row in scores) == [
        (0, _url(store, "catalogue/images/p1.png")), (1, _url(store, "catalogue/images/p2.png")),
        (2, _url(store, "catalogue/images/p3.png")), (5, _url(store, "catalogue/images/p1.png"))]
    assert sorted((row["sku"], row["error_type"]) for row in errors) == [(3, "missing"),
                                                                         (4, "outside the allowed roots")]
    assert {row["table_row"]["file"] for row in scores + errors} == {_url(store, "catalogue/table.parquet")}


def test_tfrecords_and_the_model_and_a_candidate_from_a_bucket(store, shipped_model, tiny_model_path, tmp_path):
    folder = os.path.join(SAMPLE_INPUTS, "tfrecords")
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as stream:
            store.put(BUCKET, f"records/{name}", stream.read())
    for model_path in (shipped_model, tiny_model_path):  # each with every file its card lists (the ONNX copy)
        card = model_files.read_card(model_path)
        copies = [os.path.join(os.path.dirname(model_path), name) for name in model_files.copies(model_path, card)]
        for path in (model_path, os.path.splitext(model_path)[0] + ".json", *copies):
            with open(path, "rb") as stream:
                store.put(BUCKET, f"models/{os.path.basename(path)}", stream.read())
    model, candidate = (_url(store, f"models/{os.path.basename(path)}") for path in (shipped_model, tiny_model_path))
    assert _run(store, "--input_tfrecords", _url(store, "records/*.tfrecord"), "--output", str(tmp_path / "out"),
                "--model", model, "--candidate_model", candidate) == score.EXIT_OK
    local_out = str(tmp_path / "local")
    assert score.run(["--input_tfrecords", os.path.join(folder, "*.tfrecord"), "--output", local_out,
                      "--model", shipped_model, "--candidate_model", tiny_model_path, "--run_date", DATE,
                      "--progress_seconds", "0"]) == score.EXIT_OK
    for table in ("scores", "candidate"):
        remote = read_rows(os.path.join(partition(str(tmp_path / "out")), table))
        local = read_rows(os.path.join(partition(local_out), table))
        assert len(remote) == len(local) == 30
        assert sorted((r["label"], tuple(r["probabilities"])) for r in remote) == \
            sorted((r["label"], tuple(r["probabilities"])) for r in local)
    # Labels arriving later from the bucket measure both models of the night.
    night = partition(str(tmp_path / "out"))
    rows = read_rows(os.path.join(night, "scores"))
    truth = [(row["key"], row["label"] if index % 3 else "Bag") for index, row in enumerate(rows)]
    store.put(BUCKET, "labels/night.csv", ("key,label\n" + "".join(f"{key},{label}\n" for key, label in truth))
              .encode())
    assert report.main([night, "--labels", _url(store, "labels/night.csv"), *store.flags]) == 0
    with open(os.path.join(night, "_labels.json"), encoding="utf-8") as stream:
        measured = json.load(stream)["models"]
    correct = sum(row["label"] == label for row, (_, label) in zip(rows, truth))
    assert (measured["model"]["accuracy"]["labelled"], measured["model"]["accuracy"]["correct"]) == (30, correct)
    assert measured["candidate"]["accuracy"]["labelled"] == 30


def test_an_onnx_model_with_external_data_from_a_bucket(store, test_split, tmp_path):
    """The model, its card and its external data file are copied from the bucket and score as the local files do; a
    model in the bucket naming external data outside its folder is refused in one line before anything is copied
    for it."""
    pytest.importorskip("onnxruntime", reason="the ONNX extra, which the test extra includes")
    from model import card
    from tests import onnx_models

    local = tmp_path / "model"
    local.mkdir()
    path = onnx_models.save(onnx_models.colour_nchw_logits(), str(local / "net.onnx"), external="net.weights")
    assert card.main([path, "--classes", "lamp,chair,table,vase", "--resize", "crop", "--input-range", "unit",
                      "--outputs", "logits", "--repeat", "1"]) == card.EXIT_OK
    for name in ("net.onnx", "net.weights", "net.json"):
        store.put(BUCKET, f"onnx/{name}", (local / name).read_bytes())
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(6):
        samples.catalogue_photo(test_split.images[index], index).save(photos / f"{index}.png")
    assert _run(store, "--input", str(photos), "--output", str(tmp_path / "remote"), "--model",
                _url(store, "onnx/net.onnx")) == score.EXIT_OK
    assert _run(store, "--input", str(photos), "--output", str(tmp_path / "local"), "--model", path) == score.EXIT_OK
    assert read_rows(os.path.join(partition(str(tmp_path / "remote")), "scores")) == read_rows(
        os.path.join(partition(str(tmp_path / "local")), "scores"))
    hostile, _ = onnx_models.with_external_location(onnx_models.colour_nchw_logits(), "../secret.bin", str(local))
    store.put(BUCKET, "evil/net.onnx", hostile.SerializeToString())
    store.put(BUCKET, "evil/net.json", (local / "net.json").read_bytes())
    store.put(BUCKET, "secret.bin", b"not for the model")
    evil = _url(store, "evil/net.onnx")
    # tests.killed_run runs the scorer as its CLI does, with the GCS emulator's shims (no credentials search)
    result = subprocess.run([sys.executable, "-m", "tests.killed_run", "--", "--input", str(photos), "--output",
                             str(tmp_path / "evil-out"), "--model", evil, *store.flags],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {evil}: refused, tensor 'conv_w' names external data '../secret.bin', "
                                    "which is not a file inside the model's folder"), result.stderr


@pytest.mark.parametrize("mistake", ["endpoint", "credentials", "input bucket", "output bucket"])
def test_store_mistakes_fail_before_any_work_in_one_line(store, tiny_model_path, tmp_path, capsys, monkeypatch,
                                                         mistake):
    store.put(BUCKET, "mistakes/a.png", b"x")
    flags, where, output = list(store.flags), _url(store, "mistakes/"), str(tmp_path / "out")
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    if mistake == "endpoint" and store.scheme == "s3":
        flags[flags.index("--s3_endpoint_url") + 1] = nowhere
    elif mistake == "endpoint":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", nowhere)
    elif mistake == "credentials":
        if store.scheme != "s3":
            pytest.skip("fake-gcs-server takes any credentials, or none")
        flags[flags.index("--s3_secret_access_key") + 1] = "wrong-secret"
    elif mistake == "input bucket":
        where = f"{store.scheme}://no-such-bucket/mistakes/"
    else:
        output = f"{store.scheme}://no-such-bucket/scores"
    code = score.run(["--input", where, "--output", output, "--model", tiny_model_path, "--progress_seconds", "0",
                      *flags])
    err = capsys.readouterr().err
    said = {"endpoint": f"{nowhere} does not answer", "credentials": "cannot be listed",
            "input bucket": "the bucket 'no-such-bucket' does not exist",
            "output bucket": "the bucket 'no-such-bucket' does not exist"}[mistake]
    assert code == score.EXIT_USAGE and said in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("out/dt=*"))


def test_an_object_deleted_between_listing_and_reading_is_one_error_row(store, test_split):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.reading import listing, sources

    FileSystems.set_options(PipelineOptions(store.flags))
    _upload_pngs(store, "vanishing/", test_split.images[:3], ["a.png", "b.png", "c.png"])
    entries = [entry for _, entry in listing.spec_entries(listing.input_spec(_url(store, "vanishing/")))]
    store.delete(BUCKET, "vanishing/b.png")
    read = list(sources.ReadImageFiles()(entries))
    errors = [item for item in read if isinstance(item, dict)]
    assert [row["key"] for row in errors] == [_url(store, "vanishing/b.png")] and errors[0]["stage"] == "read"
    assert errors[0]["error_type"] == "gone"
    assert [item[0] for item in read if not isinstance(item, dict)] == [_url(store, f"vanishing/{name}")
                                                                       for name in ("a.png", "c.png")]


# Where a run is SIGKILLed (tests/killed_run.py: before or after the first FileSystems call of that kind whose paths
# match), and which partition of the date a reader that trusts _SUCCESS then finds: the old one, none, or the new.
_DATE_FOLDER = r"/dt=\d{4}-\d{2}-\d{2}/"  # a partition's own path; staging and trash folders are dt=DATE.RUN_ID/
KILL_POINTS = {
    "writing the partition": (("before", "create", r"/\.staging/.*manifest\.json"), "old"),
    "staged, not yet swapped": (("before", "copy", r"."), "old"),
    "backing the old one up": (("after", "copy", r"."), "old"),
    "old _SUCCESS deleted": (("after", "delete", _DATE_FOLDER + "_SUCCESS"), None),
    "old files deleted": (("before", "rename", _DATE_FOLDER), None),
    "new files in, no _SUCCESS yet": (("after", "rename", _DATE_FOLDER), None),
    "published, backup not cleared": (("before", "delete", r"/\.trash/"), "new"),
}
IN_THE_DEFAULT_RUN = ("old _SUCCESS deleted",)


def _killed(store, kill: tuple, *arguments) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tests.killed_run", *kill, "--", *arguments, "--progress_seconds", "0",
               *store.flags]
    return subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, **store.env), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("point", [pytest.param(point, marks=() if point in IN_THE_DEFAULT_RUN else pytest.mark.slow)
                                   for point in KILL_POINTS])
def test_a_run_killed_while_publishing_never_costs_the_previous_partition(store, test_split, tiny_model_path, point):
    kill, seen_after_kill = KILL_POINTS[point]
    root = "kills/" + re.sub(r"[^a-z]+", "-", point) + "/"
    _upload_pngs(store, root + "old/", test_split.images[:4], [f"o{i}.png" for i in range(4)])
    _upload_pngs(store, root + "new/", test_split.images[4:9], [f"n{i}.png" for i in range(5)])
    output = _url(store, root + "out")
    model = ["--model", tiny_model_path]
    assert _run(store, "--input", _url(store, root + "old/"), "--output", output, *model) == score.EXIT_OK
    old = _trusted(store, root + "out/")[DATE]
    killed = _killed(store, kill, "--input", _url(store, root + "new/"), "--output", output, *model,
                     "--run_date", DATE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    new = sorted(_url(store, f"{root}new/n{i}.png") for i in range(5))
    now = _trusted(store, root + "out/").get(DATE)
    assert now == {"old": old, None: None, "new": new}[seen_after_kill]  # never a mix, never a partial partition
    if seen_after_kill is None:  # the date is between partitions: the old one waits, whole, in .trash
        backups = {key.split("/")[4] for key in store.keys(BUCKET, root + "out/.trash/")}
        assert len(backups) == 1
        backup = f"{root}out/.trash/{backups.pop()}/"
        assert backup + "_SUCCESS" in store.keys(BUCKET, backup)
        assert sorted(row["key"] for row in _remote_rows(store, backup + "scores")) == old
    # The next night (another date) puts back or clears whatever the killed run left, before it does anything else.
    assert _run(store, "--input", _url(store, root + "new/"), "--output", output, *model,
                date="2026-11-26") == score.EXIT_OK
    after = _trusted(store, root + "out/")
    assert after == {DATE: new if seen_after_kill == "new" else old, "2026-11-26": new}
    left = [key for key in store.keys(BUCKET, root + "out/") if "/." in key]
    assert left == [], "the killed run's staging, backup or lock marker was left"


def test_the_server_stopped_mid_run_is_exit_1_in_one_line_and_costs_nothing(store_kind, test_split, tiny_model_path,
                                                                            tmp_path, monkeypatch):
    import time

    with STORES[store_kind](str(tmp_path)) as server:  # a server of its own: this test stops it
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        server.make_bucket(BUCKET)
        _upload_pngs(server, "in/", test_split.images[:300], [f"i{i:03d}.png" for i in range(300)])
        output = _url(server, "out")
        arguments = ["--input", _url(server, "in/"), "--output", output, "--model", tiny_model_path]
        assert _run(server, *arguments) == score.EXIT_OK
        before = _trusted(server, "out/")
        command = [sys.executable, "-m", "tests.killed_run", "--", *arguments, "--run_date", DATE,
                   "--progress_seconds", "0", *server.flags]
        started = time.monotonic()
        run = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ, **server.env), stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
        while not server.keys(BUCKET, "out/.locks/"):  # the run holds the date: it is about to start the pipeline
            assert run.poll() is None and time.monotonic() - started < 120, "the run ended before it took the date"
            time.sleep(0.05)
        server.stop(grace=1.0)
        try:
            _, err = run.communicate(timeout=120)  # seconds, not the minutes Beam's retries would wait
        finally:
            run.kill()
        server.start()  # the same folder and ports: what the failed run left is there to see
        assert run.returncode == score.EXIT_FAILED, err
        assert len(err.strip().splitlines()) == 1 and "the store stopped answering" in err, err
        assert _eventually(lambda: _trusted(server, "out/")) == before  # the previous partition, whole


def _eventually(read, seconds: float = 30.0):
    """`read()`, tried again while it raises OSError: a store started again loads its volumes as it is asked."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
