"""Benchmarks the scorer with a team's own colour model (carded by model.card) against a tf.data script doing the same
job, on colour JPEG photos whose longest edge is 400-800 px.

    python bench/own_model.py [--sizes 2000 6000] [--repeat 3] [--cache /tmp/own-model-bench] [--only 64 224] [--antialias]

Two models are built once (Keras 3, seeded, trained for about a minute on photos of tinted Fashion-MNIST training
items sorted into 4 classes) and carded: 64x64x3 taking [0, 1] and giving logits, and 224x224x3 taking 0-255 (a
Rescaling layer inside) and giving probabilities. The tf.data script (`--tfdata-worker FOLDER OUTPUT MODEL`):
from_tensor_slices -> read_file + decode_jpeg -> resize_with_pad (bilinear) -> batch(the scorer's rows per call:
1,024 at 64x64x3, 64 at 224x224x3) -> prefetch -> predict_on_batch -> softmax of logits -> one Parquet file. Each run
is a fresh process on warm inputs; ways are interleaved and repeated, median reported, at two sizes so that steady
rate and fixed cost come apart (see bench/benchmark.py). Every run is checked to have scored every photo, and the two
ways' labels are compared.
"""

import argparse
import glob
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import tfdata_baseline  # noqa: E402
from bench.benchmark import ONE_WORKER, pipeline, print_table, ratio, run_interleaved, summarise  # noqa: E402
from bench.datasets import cached, partition, tinted_jpeg  # noqa: E402
from bench.peer_output import write_scores  # noqa: E402
from model.cards import card_spec  # noqa: E402
from model.recipes import fit_preprocessing  # noqa: E402
from model.runtimes import model_files  # noqa: E402
from model.training import data  # noqa: E402
from tests import samples  # noqa: E402

CLASSES = ("top", "trouser-or-dress", "shoe", "bag")
GROUP = (0, 1, 0, 1, 0, 2, 0, 2, 3, 2)  # each Fashion-MNIST class's index in CLASSES
SCALING = {"uint8": (1.0, 0.0), "unit": (1 / 255, 0.0), "symmetric": (1 / 127.5, -1.0)}
TRAINING_ITEMS = 2048
SHAPES = {"64": (64, 64, 3), "224": (224, 224, 3)}


def photos(count: int, cache: str) -> str:
    """`count` photos of the test items, longest edge 400-800 px (seeded), named by index and class."""
    def build(folder):
        test = data.load_split("test")
        edges = np.random.default_rng(count).integers(400, 801, size=count)
        for index in range(count):
            item = index % len(test.labels)
            with open(os.path.join(folder, samples.file_name(index, test.labels[item], ".jpg")), "wb") as stream:
                stream.write(tinted_jpeg(test.images[item], index, int(edges[index])))
    return cached(os.path.join(cache, f"photos-{count}"), build)


def network(shape: tuple):
    """(Keras model, input range, output kind) for `shape`: a small CNN on [0, 1] giving logits at 64x64, strided
    conv blocks on 0-255 giving probabilities at 224x224; each first turns its input into ink on black (at 224x224
    also scaling it), which a freshly started ReLU network learns far sooner than ink on white."""
    import keras
    from keras import layers

    if shape[0] == 64:
        body = [layers.Rescaling(-1, offset=1), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
                layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(), layers.Conv2D(64, 3, activation="relu"),
                layers.GlobalAveragePooling2D(), layers.Dense(len(CLASSES))]
        return keras.Sequential([keras.Input(shape), *body]), "unit", "logits"
    body = [layers.Rescaling(-1 / 255, offset=1), layers.Conv2D(16, 5, strides=4, activation="relu"),
            layers.Conv2D(32, 3, strides=2, activation="relu"), layers.Conv2D(64, 3, strides=2, activation="relu"),
            layers.Conv2D(128, 3, strides=2, activation="relu"), layers.GlobalAveragePooling2D(),
            layers.Dense(len(CLASSES), activation="softmax")]
    return keras.Sequential([keras.Input(shape), *body]), "uint8", "probabilities"


def own_model(shape: tuple, cache: str) -> str:
    """A .keras file of network(shape), trained briefly on photos of training items, with its card from model.card."""
    def build(folder):
        import keras

        keras.utils.set_random_seed(7)
        model, input_range, outputs = network(shape)
        train = data.load_split("train")
        parameters = fit_preprocessing.checked_parameters({"resize": "pad", "fill": [0, 0, 0]})
        pixels = np.stack([fit_preprocessing.to_model_input(tinted_jpeg(train.images[i], i, 400 + i % 401), shape,
                                                            parameters) for i in range(TRAINING_ITEMS)])
        scale, shift = SCALING[input_range]
        inputs = pixels if input_range == "uint8" else pixels.astype(np.float32) * scale + shift
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=outputs == "logits"))
        model.fit(inputs, np.take(GROUP, train.labels[:TRAINING_ITEMS]), epochs=8, batch_size=64, verbose=0)
        path = os.path.join(folder, f"colour{shape[0]}.keras")
        model.save(path)
        subprocess.run([sys.executable, "-m", "model.card", path, "--classes", ",".join(CLASSES), "--preprocessing",
                        "fit", "--resize", "pad", "--input-range", input_range, "--outputs", outputs, "--version",
                        "1.0.0"], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(cached(os.path.join(cache, f"model-{shape[0]}"), build), f"colour{shape[0]}.keras")


def tfdata_worker(folder: str, output: str, model_path: str, antialias: str = "plain") -> None:
    """The tf.data script: scores every JPEG in `folder` with the carded model, into one Parquet file; `antialiased`
    resizes with antialiasing, as the fit recipe does (resize_with_pad's default does not)."""
    import tensorflow as tf

    loaded = model_files.load(model_path, runtime="keras")  # the script a TensorFlow user writes
    spec = card_spec.spec_from_card(loaded.card)
    height, width, _ = spec.input_shape
    scale, shift = SCALING[spec.input_range]

    def convert(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize_with_pad(image, height, width, antialias=antialias == "antialiased") * scale + shift

    paths = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    outputs = tfdata_baseline.predict(paths, convert, spec.model_call_rows, loaded.model)
    probabilities = tf.nn.softmax(outputs).numpy() if spec.outputs == "logits" else outputs
    write_scores(paths, probabilities, output, spec.class_names)


def scored(parquet: str, count: int) -> dict:
    """{file name: label index} of a way's output, checked to hold one row per photo."""
    import pyarrow.parquet as pq

    table = pq.read_table(parquet, columns=["key", "label_index"])
    found = dict(zip(map(os.path.basename, table.column("key").to_pylist()), table.column("label_index").to_pylist()))
    assert table.num_rows == len(found) == count, f"{parquet}: {table.num_rows} rows for {count} photos"
    return found


def accuracy(labels: dict, test_labels: np.ndarray) -> float:
    """Share of photos labelled with their item's class group (test-00042-ankle-boot.jpg: test item 42, shoe)."""
    truth = {name: GROUP[test_labels[int(name.split("-")[1]) % len(test_labels)]] for name in labels}
    return float(np.mean([labels[name] == truth[name] for name in labels]))


def section(key: str, args, folders: dict) -> dict:
    """Times both ways with the model of SHAPES[key], prints the table, and checks and compares their outputs."""
    shape = SHAPES[key]
    model = own_model(shape, args.cache)
    rows = card_spec.spec_from_card(model_files.read_card(model)).model_call_rows
    out = os.path.join(args.cache, "out", key)
    tfdata_out = {size: os.path.join(out, f"tfdata-{size}.parquet") for size in args.sizes}
    ways = {
        "pipeline, 1 worker": lambda n: pipeline(["--input", folders[n]], f"{out}/pipeline-{n}", "--model", model,
                                                 *ONE_WORKER),
        "tf.data script": lambda n: [sys.executable, os.path.abspath(__file__), "--tfdata-worker", folders[n],
                                     tfdata_out[n], model],
    }
    if args.antialias:
        ways["tf.data, antialiased"] = lambda n: [sys.executable, os.path.abspath(__file__), "--tfdata-worker",
                                                  folders[n], f"{out}/tfdata-antialiased-{n}.parquet", model,
                                                  "antialiased"]
    small, large = args.sizes
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"Own {'x'.join(map(str, shape))} model, JPEG photos 400-800 px ({small:,} and {large:,} photos, "
                f"median of {args.repeat}; {rows:,} rows per model call)", found, unit="photo")
    ours, peer, *others = ways
    for other in others:
        print(f"  pipeline: steady {ratio(found, ours, other, 'steady'):.2f}x {other}'s")
    fixed = found[ours]["fixed"] - found[peer]["fixed"]
    print(f"  pipeline: steady {ratio(found, ours, peer, 'steady'):.2f}x tf.data's; whole process at {large:,} "
          f"{ratio(found, ours, peer, 'rate', large):.2f}x; fixed cost {fixed:+.1f} s; peak RSS at {large:,} "
          f"{found[ours]['rss'][large] / 2**30:.2f} GiB against {found[peer]['rss'][large] / 2**30:.2f} GiB")
    checked = {size: {ours: scored(os.path.join(partition(f"{out}/pipeline-{size}"), "scores"), size),
                      peer: scored(tfdata_out[size], size)} for size in (small, large)}
    labels, test_labels = checked[large], data.load_split("test").labels
    agree = np.mean([labels[ours][name] == labels[peer][name] for name in labels[ours]])
    print(f"  labels agree on {agree:.1%} of {large:,} photos (the fit recipe's reduced-scale resize against "
          f"resize_with_pad); accuracy pipeline {accuracy(labels[ours], test_labels):.3f}, tf.data "
          f"{accuracy(labels[peer], test_labels):.3f}", flush=True)
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(2000, 6000), metavar=("N1", "N2"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per way and size, interleaved; median reported")
    parser.add_argument("--cache", default="/tmp/own-model-bench", help="where photos and models are made once")
    parser.add_argument("--only", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--antialias", action="store_true",
                        help="also time the tf.data script resizing with antialiasing, the fit recipe's quality")
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(args.cache, "out"), exist_ok=True)
    folders = {size: photos(size, args.cache) for size in args.sizes}
    print(f"{os.cpu_count()} cores; own models carded by model.card; every run a fresh process")
    for key in args.only:
        section(key, args, folders)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tfdata-worker"]:
        tfdata_worker(*sys.argv[2:6])
    else:
        main()
