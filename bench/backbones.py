"""Benchmarks the scorer with ImageNet-sized backbones (keras.applications at 224x224x3, 5 classes, weights=None:
speed does not depend on the weights) against the tf.data script a team would write instead, on JPEG photos with
real photographic content.

    python bench/backbones.py [--models MobileNetV3Small EfficientNetB0 ResNet50] [--repeat 2]
                              [--cache /tmp/backbone-bench] [--onnx]

Photos: matplotlib's bundled photograph (grace_hopper.jpg, a real photo), cut into distinct photos by seeded crops
(55-100% of each side), flips, brightness and colour changes, resized so the longest edge is 400-1000 px, JPEG
quality 85-95. Each model is saved and carded by `python -m model.card --resize crop --input-range uint8` (its
scaling inside the model, as keras.applications builds MobileNetV3 and EfficientNet; ResNet50 takes 0-255 as is).

The tf.data script (`--tfdata-worker FOLDER OUTPUT MODEL bilinear|antialiased`): list -> read_file -> decode_jpeg ->
resize the shorter side to 224 -> central crop -> batch(the card's rows per model call, 64 here) -> prefetch ->
predict_on_batch -> one Parquet file. Fresh processes, interleaved, median of --repeat, at two sizes per model so
that the steady rate and the fixed cost come apart; peak RSS is the whole process tree's. One more pipeline run per
model prints its start-up phases (pipeline.timeline).

With --onnx, each backbone is also exported to ONNX by Keras itself (model.export(format="onnx"), through tf2onnx)
and carded the same way, and scored by the pipeline beside the script a user would write for an ONNX model
(`--onnx-worker FOLDER OUTPUT MODEL`: Pillow decodes each photo in a thread pool, shorter side to 224 with an
antialiased bilinear resize, central crop, batches of 64 -> onnxruntime's session.run -> Parquet) and beside the same
backbone served by TensorFlow in the pipeline.
"""

import argparse
import glob
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import tfdata_baseline  # noqa: E402
from bench.benchmark import (ONE_WORKER, measure, pipeline, print_table, ratio, run_interleaved,  # noqa: E402
                             summarise)
from bench.datasets import cached, partition  # noqa: E402
from bench.peer_output import write_scores  # noqa: E402
from model.cards import card_spec  # noqa: E402
from model.runtimes import model_files  # noqa: E402

CLASSES = ("a", "b", "c", "d", "e")
SIZES = {"MobileNetV3Small": (400, 2000), "EfficientNetB0": (400, 2000), "ResNet50": (150, 450)}


def photos(count: int, cache: str) -> str:
    """`count` distinct JPEG photos cut from one real photograph (seeded)."""
    def build(folder):
        from matplotlib import cbook
        from PIL import Image, ImageEnhance, ImageOps

        with cbook.get_sample_data("grace_hopper.jpg") as stream:
            source = Image.open(stream).convert("RGB")
        rng = np.random.default_rng(count)
        for index in range(count):
            width, height = (int(side * rng.uniform(0.55, 1.0)) for side in source.size)
            left, top = rng.integers(0, source.width - width + 1), rng.integers(0, source.height - height + 1)
            image = source.crop((left, top, left + width, top + height))
            if rng.random() < 0.5:
                image = ImageOps.mirror(image)
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
            image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.5))
            scale = int(rng.integers(400, 1001)) / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
            image.save(os.path.join(folder, f"photo-{index:05d}.jpg"), "JPEG", quality=int(rng.integers(85, 96)))
    return cached(os.path.join(cache, f"photos-{count}"), build)


def backbone(name: str, cache: str) -> str:
    """A carded .keras file of keras.applications.`name` at 224x224x3 with 5 classes and random weights, its runtimes
    chosen by the card (`--runtime auto`: an ONNX copy beside it, every installed runtime measured here)."""
    def build(folder):
        import subprocess

        import keras

        keras.utils.set_random_seed(7)
        model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3), classes=len(CLASSES))
        path = os.path.join(folder, f"{name}.keras")
        model.save(path)
        subprocess.run([sys.executable, "-m", "model.card", path, "--classes", ",".join(CLASSES), "--preprocessing",
                        "fit", "--resize", "crop", "--input-range", "uint8", "--version", "1.0.0"], check=True,
                       stdout=subprocess.DEVNULL)
    return os.path.join(cached(os.path.join(cache, f"model-auto-{name}"), build), f"{name}.keras")


def onnx_backbone(name: str, cache: str) -> str:
    """The backbone of backbone(name), exported to ONNX by Keras (tf2onnx) and carded the same way."""
    def build(folder):
        import subprocess

        import keras

        keras.utils.set_random_seed(7)
        model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3), classes=len(CLASSES))
        model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)  # Keras exports only a model that has run
        path = os.path.join(folder, f"{name}.onnx")
        model.export(path, format="onnx")
        _constants_as_initializers(path, model)
        subprocess.run([sys.executable, "-m", "model.card", path, "--classes", ",".join(CLASSES), "--preprocessing",
                        "fit", "--resize", "crop", "--input-range", "uint8", "--version", "1.0.0"], check=True,
                       stdout=subprocess.DEVNULL)
    return os.path.join(cached(os.path.join(cache, f"onnx-{name}"), build), f"{name}.onnx")


def _constants_as_initializers(path: str, model) -> None:
    """tf2onnx leaves a Normalization layer's mean and variance as graph inputs (EfficientNet's, here), which the
    scorer refuses (one image input only): they become initializers holding the layer's own values."""
    import keras
    import onnx

    proto = onnx.load(path)
    extra = list(proto.graph.input[1:])
    if not extra:
        return
    layer = next(layer for layer in model.layers if type(layer) is keras.layers.Normalization)
    values = {"/Sub/": np.asarray(layer.mean), "/Sqrt/": np.asarray(layer.variance)}
    for value in extra:
        found = next(array for marker, array in values.items() if marker in value.name)
        dims = [edge.dim_value for edge in value.type.tensor_type.shape.dim]
        proto.graph.initializer.append(onnx.numpy_helper.from_array(found.reshape(dims).astype(np.float32),
                                                                    value.name))
        proto.graph.input.remove(value)
    onnx.save(proto, path)


def onnx_worker(folder: str, output: str, model_path: str) -> None:
    """The script a user would write for an ONNX model: Pillow in a thread pool (shorter side to 224, antialiased
    bilinear, central crop), batches of 64, onnxruntime's session.run, one Parquet file."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime
    from PIL import Image

    side, rows = 224, 64

    def convert(path):
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = side / min(image.size)
            size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
            left, top = (size[0] - side) // 2, (size[1] - side) // 2
            return np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.float32)

    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    paths = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        pixels = pool.map(convert, paths)
        batches = []
        while True:
            batch = [picture for _, picture in zip(range(rows), pixels)]
            if not batch:
                break
            batches.append(session.run(None, {name: np.stack(batch)})[0])
    write_scores(paths, np.concatenate(batches), output, CLASSES)


def tfdata_worker(folder: str, output: str, model_path: str, resize: str = "bilinear") -> None:
    """The tf.data script a user would write: shorter side to 224, central crop, batches of the card's rows."""
    import tensorflow as tf

    loaded = model_files.load(model_path, runtime="keras")  # the script a TensorFlow user writes
    spec = card_spec.spec_from_card(loaded.card)
    side = spec.input_shape[0]

    def convert(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        target = tf.cast(tf.math.ceil(shape * side / tf.reduce_min(shape)), tf.int32)
        image = tf.image.resize(image, target, antialias=resize == "antialiased")
        top, left = (target[0] - side) // 2, (target[1] - side) // 2
        return image[top:top + side, left:left + side, :]

    paths = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    probabilities = tfdata_baseline.predict(paths, convert, spec.model_call_rows, loaded.model)
    write_scores(paths, probabilities, output, spec.class_names)


def start_up_phases(command: list, log: str) -> None:
    """Runs the pipeline once with its timeline on and prints each phase's seconds after the command started."""
    from pipeline import timeline

    if os.path.exists(log):
        os.remove(log)
    os.environ[timeline.TIMELINE_ENV] = log
    try:
        measure(command)
    finally:
        del os.environ[timeline.TIMELINE_ENV]
    rows = timeline.read(log)
    started, previous = rows[0][0], rows[0][0]
    print("  start-up phases (s after the command started, and since the phase before):")
    for seconds, _, phase in rows:
        print(f"    {seconds - started:6.2f}  +{seconds - previous:5.2f}  {phase}")
        previous = seconds


def section(name: str, args) -> dict:
    """Times the pipeline and both tf.data variants with one backbone; prints the table and the ratios."""
    model = backbone(name, args.cache)
    small, large = args.sizes or SIZES[name]
    folders = {size: photos(size, args.cache) for size in (small, large)}
    out = os.path.join(args.cache, "out", name)
    os.makedirs(out, exist_ok=True)
    script = [sys.executable, os.path.abspath(__file__), "--tfdata-worker"]
    chosen = model_files.read_card(model)["runtimes"]
    print(f"\n{name}: the card's runtimes, fastest first (median of 5 model calls of "
          f"{card_spec.spec_from_card(model_files.read_card(model)).model_call_rows} rows): " + ", ".join(
              f"{entry['runtime']} {entry['images_per_second']:,} img/s (max |dp| {entry['max_abs_diff']:.1g})"
              for entry in chosen))
    ways = {
        "pipeline, 1 worker": lambda n: pipeline(["--input", folders[n]], f"{out}/pipeline-{n}", "--model", model,
                                                 *ONE_WORKER),
        "pipeline, keras (--runtime keras)": lambda n: pipeline(["--input", folders[n]], f"{out}/pipeline-keras-{n}",
                                                                "--model", model, "--runtime", "keras", *ONE_WORKER),
        "tf.data, bilinear": lambda n: script + [folders[n], f"{out}/tfdata-{n}.parquet", model, "bilinear"],
        "tf.data, antialiased": lambda n: script + [folders[n], f"{out}/tfdata-aa-{n}.parquet", model, "antialiased"],
    }
    if args.onnx:
        onnx_model = onnx_backbone(name, args.cache)
        ways["pipeline, ONNX model"] = lambda n: pipeline(["--input", folders[n]], f"{out}/pipeline-onnx-{n}",
                                                         "--model", onnx_model, *ONE_WORKER)
        ways["ONNX script (Pillow, onnxruntime)"] = lambda n: [sys.executable, os.path.abspath(__file__),
                                                              "--onnx-worker", folders[n],
                                                              f"{out}/onnx-script-{n}.parquet", onnx_model]
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"{name} 224x224x3, JPEG photos 400-1000 px ({small:,} and {large:,}, median of {args.repeat})",
                found, unit="photo")
    ours = "pipeline, 1 worker"
    print(f"  pipeline, 1 worker: served on {chosen[0]['runtime']} (the card's first runtime installed here)")
    for peer in list(ways)[1:4]:
        print(f"  pipeline against {peer}: steady {ratio(found, ours, peer, 'steady'):.2f}x, fixed "
              f"{ratio(found, ours, peer, 'fixed'):.2f}x ({found[ours]['fixed']:.1f} s against "
              f"{found[peer]['fixed']:.1f} s), CPU a photo {ratio(found, ours, peer, 'cpu_per_item'):.2f}x "
              f"({found[ours]['cpu_per_item'] * 1000:.2f} ms against {found[peer]['cpu_per_item'] * 1000:.2f}), "
              f"peak RSS at {large:,} {ratio(found, ours, peer, 'rss', large):.2f}x")
    if args.onnx:
        onnx_way, script = "pipeline, ONNX model", "ONNX script (Pillow, onnxruntime)"
        for way, peer, what in ((onnx_way, script, "pipeline's ONNX model against the ONNX script"),
                                (onnx_way, ours, "in the pipeline, onnxruntime against TensorFlow")):
            print(f"  {what}: steady {ratio(found, way, peer, 'steady'):.2f}x, fixed "
                  f"{ratio(found, way, peer, 'fixed'):.2f}x ({found[way]['fixed']:.1f} s against "
                  f"{found[peer]['fixed']:.1f} s), peak RSS at {large:,} {ratio(found, way, peer, 'rss', large):.2f}x")
    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(partition(f"{out}/pipeline-{large}"), "scores")).num_rows
    assert rows == large, f"the pipeline scored {rows} of {large} photos"
    start_up_phases(ways[ours](small), os.path.join(out, "timeline.txt"))
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    parser.add_argument("--sizes", type=int, nargs=2, metavar=("N1", "N2"), help="photos (default: per model)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per way and size, interleaved; median reported")
    parser.add_argument("--cache", default="/tmp/backbone-bench", help="where photos and models are made once")
    parser.add_argument("--onnx", action="store_true", help="also the backbone exported to ONNX: the pipeline and the "
                                                           "script a user would write for it")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores; keras.applications backbones carded by model.card; every run a fresh process")
    for name in args.models:
        section(name, args)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tfdata-worker"]:
        tfdata_worker(*sys.argv[2:6])
    elif sys.argv[1:2] == ["--onnx-worker"]:
        onnx_worker(*sys.argv[2:5])
    else:
        main()
