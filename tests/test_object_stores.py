"""Runs the scorer against a real S3 server on loopback (SeaweedFS): inputs, TFRecords and the model in a bucket,
outputs, the lock, --skip_scored history and the report there, and mistakes that must fail before any work. Rows are
compared with the same images scored from a local folder; pyarrow's own S3 client reads the scores back."""

import json
import os

import numpy as np
import pytest

from pipeline import report, score
from tests import samples
from tests.helpers import SAMPLE_INPUTS, partition, read_rows
from tests.object_store_servers import ACCESS_KEY, REGION, SECRET_KEY, s3_server
from tests.portable_servers import free_port

DATE = "2026-11-25"
BUCKET = "shop"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(str(tmp_path_factory.mktemp("seaweedfs"))) as server:
        server.client().create_bucket(Bucket=BUCKET)  # one bucket: each holds volumes of its own on the server
        yield server


def _upload_pngs(s3, bucket: str, prefix: str, images, names) -> None:
    client = s3.client()
    for image, name in zip(images, names):
        client.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=samples.png_bytes(image))


def _run(s3, *arguments, date=DATE) -> int:
    return score.run([*arguments, "--run_date", date, "--progress_seconds", "0", *s3.flags])


def _object(s3, bucket: str, key: str) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _remote_rows(s3, bucket: str, prefix: str) -> list:
    """The scores of a partition in the bucket, read by pyarrow's own S3 filesystem (not Beam's)."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    store = fs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=s3.endpoint,
                            scheme="http", region=REGION)
    return ds.dataset(f"{bucket}/{prefix}", filesystem=store, format="parquet").to_table().to_pylist()


def _by_name(rows) -> dict:
    return {row["key"].rsplit("/", 1)[-1]: (row["label"], np.asarray(row["probabilities"])) for row in rows}


def test_two_nights_over_a_growing_bucket_prefix(s3, test_split, tiny_model_path, tmp_path):
    names = [f"item-{i:03d}.png" for i in range(40)]
    _upload_pngs(s3, "shop", "nightly/", test_split.images[:30], names[:30])
    output = "s3://shop/scores"
    assert _run(s3, "--input", "s3://shop/nightly/", "--output", output, "--model", tiny_model_path,
                "--skip_scored", date="2026-11-24") == score.EXIT_OK
    _upload_pngs(s3, "shop", "nightly/", test_split.images[30:40], names[30:40])  # the next night's new files
    assert _run(s3, "--input", "s3://shop/nightly/", "--output", output, "--model", tiny_model_path,
                "--skip_scored") == score.EXIT_OK
    manifest = json.loads(_object(s3, "shop", f"scores/dt={DATE}/manifest.json"))
    assert manifest["counts"]["scored"] == 10 and manifest["counts"]["skipped_by_reason"] == {"already scored": 30}
    first, second = (_remote_rows(s3, "shop", f"scores/dt={day}/scores") for day in ("2026-11-24", DATE))
    assert sorted(row["key"] for row in first + second) == [f"s3://shop/nightly/{name}" for name in names]
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
    page = _object(s3, "shop", f"scores/dt={DATE}/report.html").decode()
    assert page.count("<img class='seen'") == 10 and "cannot be read" not in page  # read back from the bucket
    assert report.main([f"s3://shop/scores/dt={DATE}", "--to", str(tmp_path / "rebuilt.html"), *s3.flags]) == 0
    assert open(tmp_path / "rebuilt.html", encoding="utf-8").read().count("<img class='seen'") == 10


def test_tfrecords_and_the_model_from_a_bucket(s3, shipped_model, tmp_path):
    client = s3.client()
    folder = os.path.join(SAMPLE_INPUTS, "tfrecords")
    for name in os.listdir(folder):
        client.upload_file(os.path.join(folder, name), BUCKET, f"records/{name}")
    for path in (shipped_model, os.path.splitext(shipped_model)[0] + ".json"):
        client.upload_file(path, BUCKET, f"models/{os.path.basename(path)}")
    model = f"s3://{BUCKET}/models/{os.path.basename(shipped_model)}"
    assert _run(s3, "--input_tfrecords", f"s3://{BUCKET}/records/*.tfrecord", "--output", str(tmp_path / "out"),
                "--model", model) == score.EXIT_OK
    local_out = str(tmp_path / "local")
    assert score.run(["--input_tfrecords", os.path.join(folder, "*.tfrecord"), "--output", local_out,
                      "--model", shipped_model, "--run_date", DATE, "--progress_seconds", "0"]) == score.EXIT_OK
    remote = read_rows(os.path.join(partition(str(tmp_path / "out")), "scores"))
    local = read_rows(os.path.join(partition(local_out), "scores"))
    assert len(remote) == len(local) == 30
    assert sorted((r["label"], tuple(r["probabilities"])) for r in remote) == \
        sorted((r["label"], tuple(r["probabilities"])) for r in local)


@pytest.mark.parametrize("mistake", ["endpoint", "credentials", "bucket"])
def test_store_mistakes_fail_before_any_work_in_one_line(s3, tiny_model_path, tmp_path, capsys, mistake):
    s3.client().put_object(Bucket=BUCKET, Key="mistakes/a.png", Body=b"x")
    flags, where = list(s3.flags), f"s3://{BUCKET}/mistakes/"
    if mistake == "endpoint":
        flags[flags.index("--s3_endpoint_url") + 1] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    elif mistake == "credentials":
        flags[flags.index("--s3_secret_access_key") + 1] = "wrong-secret"
    else:
        where = "s3://no-such-bucket/mistakes/"
    code = score.run(["--input", where, "--output", str(tmp_path / "out"), "--model", tiny_model_path,
                      "--progress_seconds", "0", *flags])
    err = capsys.readouterr().err
    said = {"endpoint": "does not answer", "credentials": "cannot be listed",
            "bucket": "the bucket 'no-such-bucket' does not exist"}[mistake]
    assert code == score.EXIT_USAGE and said in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("out/dt=*"))


def test_an_object_deleted_between_listing_and_reading_is_one_error_row(s3, test_split):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import listing, sources

    FileSystems.set_options(PipelineOptions(s3.flags))
    _upload_pngs(s3, BUCKET, "vanishing/", test_split.images[:3], ["a.png", "b.png", "c.png"])
    entries = [entry for _, entry in listing.spec_entries(listing.input_spec(f"s3://{BUCKET}/vanishing/"))]
    s3.client().delete_object(Bucket=BUCKET, Key="vanishing/b.png")
    read = list(sources.ReadImageFiles()(entries))
    errors = [item for item in read if isinstance(item, dict)]
    assert [row["key"] for row in errors] == [f"s3://{BUCKET}/vanishing/b.png"] and errors[0]["stage"] == "read"
    assert [item[0] for item in read if not isinstance(item, dict)] == [f"s3://{BUCKET}/vanishing/{name}"
                                                                       for name in ("a.png", "c.png")]
