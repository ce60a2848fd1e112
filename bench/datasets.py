"""Builds the benchmark's inputs once from the real test split (and reuses them), and reads accuracy back."""

import datetime
import glob
import io
import os
import shutil
import time

import numpy as np

from model.training import data

from model.cards.card_spec import FASHION_MNIST, class_index
from tests import samples

TEST_IMAGES = 10_000
TFRECORD_SHARDS = 4


def cached(folder: str, build) -> str:
    """Runs build(folder) unless an earlier run finished it (marked by .complete); returns the folder."""
    done = os.path.join(folder, ".complete")
    if not os.path.exists(done):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        build(folder)
        open(done, "w").close()
    return folder


def tinted_jpeg(item: np.ndarray, index: int, longest_edge: int) -> bytes:
    """JPEG bytes (quality 90) of a catalogue photo of `item` in a colour that varies with `index`, resized so its
    longest edge is `longest_edge`."""
    tint = ((index * 40) % 256 / 255, 0.3 + (index % 3) * 0.2, 1 - (index % 5) * 0.15)
    image = samples.catalogue_photo(item, index, tint=tint)
    scale = longest_edge / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def pngs(count: int, cache: str) -> str:
    """`count` PNG files: the 10,000 test images, repeated, 10,000 to a sub-folder."""
    def build(folder):
        test = data.load_split("test")
        for start in range(0, count, TEST_IMAGES):
            indices = range(start, min(start + TEST_IMAGES, count))
            samples.write_pngs(test.images[[i % TEST_IMAGES for i in indices]],
                               os.path.join(folder, f"{start // TEST_IMAGES:03d}"), [f"{i:07d}.png" for i in indices])
    return cached(os.path.join(cache, f"png-{count}"), build)


def tfrecords(count: int, cache: str) -> str:
    """The same images as `pngs(count)`, PNG-encoded in TFRecord shards; returns the shards' glob."""
    def build(folder):
        paths = sorted(glob.glob(os.path.join(pngs(count, cache), "**", "*.png"), recursive=True))
        for shard in range(TFRECORD_SHARDS):
            chosen = paths[shard::TFRECORD_SHARDS]
            samples.write_tfrecord(os.path.join(folder, f"part-{shard}.tfrecord"),
                                   (samples.example_bytes(open(path, "rb").read(), filename=path) for path in chosen))
    return os.path.join(cached(os.path.join(cache, f"tfrecords-{count}"), build), "*.tfrecord")


def photos(count: int, cache: str) -> str:
    """`count` catalogue photos (1200x1600 JPEG, quality 90) of the first test images, named by index and class."""
    def build(folder):
        test = data.load_split("test")
        for index in range(count):
            photo = samples.large_catalogue_photo(test.images[index % TEST_IMAGES], index)
            photo.save(os.path.join(folder, samples.file_name(index, test.labels[index % TEST_IMAGES], ".jpg")),
                       quality=90)
    return cached(os.path.join(cache, f"photos-{count}"), build)


def accuracy(parquet: str) -> float:
    """Share of rows whose label is the class in the file's name (test-00042-ankle-boot.jpg)."""
    import pyarrow.parquet as pq

    table = pq.read_table(parquet, columns=["key", "label_index"])
    truth = [class_index(os.path.basename(key).split(".")[0].split("-", 2)[2], FASHION_MNIST.class_names)
             for key in table.column("key").to_pylist()]
    return float(np.mean(np.array(truth) == table.column("label_index").to_numpy()))


def png_table(folder: str, cache: str) -> str:
    """A Parquet table listing the PNGs of `folder` (image: absolute path, product_id: int64), made once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def build(target):
        paths = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
        pq.write_table(pa.table({"image": paths, "product_id": pa.array(range(len(paths)), pa.int64())}),
                       os.path.join(target, "table.parquet"), row_group_size=4096)

    return os.path.join(cached(os.path.join(cache, f"table-{os.path.basename(folder.rstrip('/'))}"), build),
                        "table.parquet")


def big_png_table(folder: str, rows: int, cache: str) -> str:
    """A Parquet table of `rows` rows naming the PNGs of `folder` over and over, in no order (row i names file
    i * 7919 mod the file count), beside a product id, a title and a timestamp; row groups of 131,072 rows, as a
    warehouse export might write them. Made once, a million rows at a time."""
    import datetime

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    def build(target):
        paths = np.array(sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True)), dtype=object)
        schema = pa.schema([("image", pa.string()), ("product_id", pa.int64()), ("title", pa.string()),
                            ("listed_at", pa.timestamp("s"))])
        with pq.ParquetWriter(os.path.join(target, "table.parquet"), schema) as writer:
            for start in range(0, rows, 1_000_000):
                index = np.arange(start, min(start + 1_000_000, rows), dtype=np.int64)
                listed = datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=1)
                writer.write_table(pa.table({
                    "image": pa.array(paths[(index * 7919) % len(paths)], pa.string()),
                    "product_id": pa.array(index),
                    "title": pa.array([f"listing {i}" for i in index], pa.string()),
                    "listed_at": pa.array(np.full(len(index), np.datetime64(listed, "s")), pa.timestamp("s")),
                }, schema=schema), row_group_size=131_072)

    name = f"bigtable-{rows}-{os.path.basename(folder.rstrip('/'))}"
    return os.path.join(cached(os.path.join(cache, name), build), "table.parquet")


def partition(output: str) -> str:
    found = glob.glob(os.path.join(output, "dt=*"))
    if len(found) != 1:
        raise RuntimeError(f"expected one partition under {output}, found {found}")
    return found[0]


def conversion_rate(folder: str, count: int = 200) -> float:
    """Photos per second that model.recipes.preprocessing.to_model_input converts on one core (bytes in memory)."""
    from model.recipes.preprocessing import to_model_input

    payloads = [open(path, "rb").read() for path in sorted(glob.glob(os.path.join(folder, "*.jpg")))[:count]]
    to_model_input(payloads[0])
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for payload in payloads:
            to_model_input(payload)
        best = min(best, time.perf_counter() - started)
    return len(payloads) / best


def linked_pngs(count: int, cache: str) -> str:
    """`count` PNG files as hard links to the 10,000 test PNGs, 10,000 to a sub-folder (a million cost no disk)."""
    def build(folder):
        source = pngs(TEST_IMAGES, cache)
        originals = sorted(glob.glob(os.path.join(source, "**", "*.png"), recursive=True))
        for start in range(0, count, TEST_IMAGES):
            sub = os.path.join(folder, f"{start // TEST_IMAGES:03d}")
            os.makedirs(sub)
            for index in range(start, min(start + TEST_IMAGES, count)):
                os.link(originals[index % TEST_IMAGES], os.path.join(sub, f"{index:07d}.png"))
    return cached(os.path.join(cache, f"linked-png-{count}"), build)


def history(folder: str, output: str, nights: int, new: int, version: str, spread: bool = False,
            rows_per_group: int = 8192) -> None:
    """Writes `nights` complete partitions under `output` as earlier runs of `version` would have left them.

    By default every night read every file of `folder` but the last `new` (as they are on disk), plus as many files
    since deleted, so that each partition holds as many fingerprints as the folder has files: a folder rescored
    every night, by runs that kept only what they read (as before runs carried their history forward). With
    `spread`, the files but the last `new` are shared out at random, each night reading its own share: a folder that
    grows every night, run with --skip_scored; the last night also carries every earlier night's files forward, as
    today's runs do, so its fingerprints index the folder."""
    import json
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.outputs import fingerprints
    from pipeline.outputs.errors import ERRORS_SCHEMA

    paths = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
    old = paths[: len(paths) - new]
    rows = [(path, status.st_size, status.st_mtime, None) for path, status in zip(old, map(os.stat, old))]
    if spread:
        random.Random(7).shuffle(rows)
        shares = [sorted(rows[night::nights]) for night in range(nights)]
        shares[-1] = sorted(shares[-1] + [(key, size, modified, f"history-{night}") for night in range(nights - 1)
                                          for key, size, modified, _ in shares[night]])
    else:
        gone = [(os.path.join(folder, "gone", f"{index:07d}.png"), 1234, 1.7e9, None) for index in range(new)]
        shares = [sorted(rows + gone)] * nights
    for night, share in enumerate(shares):
        keys, sizes, modified, scored_by = (list(column) for column in zip(*share))
        table = fingerprints.table(keys, sizes, modified, version, scored_by)
        day = datetime.date(2025, 11, 1) + datetime.timedelta(days=night)
        partition = os.path.join(output, f"dt={day}")
        os.makedirs(os.path.join(partition, "_inputs"))
        os.makedirs(os.path.join(partition, "errors"))
        pq.write_table(table, os.path.join(partition, "_inputs", "part-0.parquet"), row_group_size=rows_per_group)
        pq.write_table(pa.Table.from_pylist([], schema=ERRORS_SCHEMA), os.path.join(partition, "errors",
                                                                                    "part-0.parquet"))
        manifest = {"run_id": f"history-{night}", "model": {"version": version}, "counts": {"scored": len(share)},
                    "started_at": f"{day}T02:00:00+00:00", "finished_at": f"{day}T02:10:00+00:00"}
        if spread:
            manifest.update(inputs={"images": [folder], "tfrecords": []})
            manifest[fingerprints.INDEX_FLAG] = night == nights - 1
        with open(os.path.join(partition, "manifest.json"), "w", encoding="utf-8") as stream:
            json.dump(manifest, stream)
        with open(os.path.join(partition, "_SUCCESS"), "w", encoding="utf-8") as stream:
            stream.write(f"history-{night}")
