"""Tests scoring ONNX models, as a team exports them from PyTorch, JAX or scikit-learn: built here with onnx.helper (a
colour NCHW net taking ImageNet-normalised input and giving logits, a grey NHWC one taking uint8 pixels), carded with
`python -m model.card` and scored by the real pipeline, in memory, with two worker processes and from TFRecords, each
row equal to onnxruntime run directly on the card's preprocessing of the same file; and hostile ONNX files refused
in one line, exit 2, without anything outside the model's folder being opened."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from model import card, recipes
from model.cards import card_spec
from model.runtimes import model_files
from model.vocabulary import CLASS_NAMES, RECORD_KEY_RAW_PIXELS
from pipeline import score
from tests import onnx_models, samples
from tests.helpers import REPO_ROOT, partition, read_rows, scored_in_memory_and_on_two_workers

pytest.importorskip("onnxruntime", reason="the ONNX extra (pip install '.[onnx]'), which the test extra includes")

CLASSES = ("lamp", "chair", "table", "vase")
SIDE = 32
NORMALISED = ["--input-range", "unit", "--mean", ",".join(map(str, onnx_models.IMAGENET_MEAN)),
              "--std", ",".join(map(str, onnx_models.IMAGENET_STD))]


def _photos(test_split, folder: str, count: int = 20) -> list:
    """Colour shop photos of real Fashion-MNIST items, tinted, JPEG and PNG of several sizes (some with alpha)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        tint = ((index * 40) % 256 / 255, 0.3 + (index % 3) * 0.2, 1 - (index % 5) * 0.15)
        photo = samples.catalogue_photo(test_split.images[index], index, tint=tint)
        photo = photo.resize((photo.width * (1 + index % 3) // 2, photo.height * (1 + index % 3) // 2))
        if index % 4 == 0:
            photo = photo.convert("RGBA")
        path = os.path.join(folder, f"photo-{index:02d}" + (".jpg" if index % 4 and index % 2 else ".png"))
        photo.save(path)
        paths.append(path)
    return paths


def _card(path: str, *flags) -> None:
    assert card.main([path, "--repeat", "1", *flags]) == card.EXIT_OK


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> str:
    """The colour NCHW logits model, carded: crop to 32x32, [0, 1], ImageNet's mean and std, logits."""
    path = onnx_models.save(onnx_models.colour_nchw_logits(), str(tmp_path_factory.mktemp("colour") / "net.onnx"))
    _card(path, "--classes", ",".join(CLASSES), "--resize", "crop", *NORMALISED, "--outputs", "logits",
          "--version", "3.0.0", "--runtime", "onnxruntime")  # test_runtimes.py covers the other runtimes
    return path


def _expected_colour(path: str, files: list) -> np.ndarray:
    spec = model_files.load(path).spec
    pixels = np.stack([recipes.to_model_input(spec, open(file, "rb").read()) for file in files])
    return onnx_models.softmax(onnx_models.run_directly(path, pixels, onnx_models.IMAGENET_MEAN,
                                                       onnx_models.IMAGENET_STD))


def test_the_card_records_the_runtime_layout_and_normalisation(colour_model):
    written = json.loads(open(model_files.card_path_for(colour_model)).read())
    assert written["card_format"] == card_spec.CARD_FORMAT == 4
    assert written["runtime"] == "onnxruntime" and written["layout"] == "nchw"  # read from [batch, 3, 32, 32]
    assert [entry["runtime"] for entry in written["runtimes"]] == ["onnxruntime"]
    assert written["runtimes"][0]["images_per_second"] > 0 and written["runtimes"][0]["max_abs_diff"] == 0
    assert written["input_shape"] == [SIDE, SIDE, 3] and written["input_range"] == "unit"
    assert written["mean"] == list(onnx_models.IMAGENET_MEAN) and written["std"] == list(onnx_models.IMAGENET_STD)
    assert written["outputs"] == "logits" and written["onnx_opset"] == onnx_models.OPSET
    assert written["parameter_count"] == 8 * 3 * 3 * 3 + 8 + 8 * 4 + 4 and len(written["known_answers"]) == 3
    loaded = model_files.load(colour_model)
    assert loaded.runtime == loaded.spec.runtime == "onnxruntime" and loaded.version.startswith("3.0.0+")


def test_an_onnx_model_scores_as_onnxruntime_does_in_memory_and_on_two_workers(colour_model, test_split, tmp_path):
    paths = _photos(test_split, str(tmp_path / "photos"))
    scored = scored_in_memory_and_on_two_workers(str(tmp_path / "photos"), colour_model, tmp_path)
    assert [row["key"] for row in scored] == sorted(paths)
    found = np.array([row["probabilities"] for row in scored])
    np.testing.assert_allclose(found, _expected_colour(colour_model, sorted(paths)), rtol=0, atol=1e-5)
    assert [row["label"] for row in scored] == [CLASSES[i] for i in found.argmax(axis=1)]
    assert {row["model_version"] for row in scored} == {model_files.load(colour_model).version}
    manifest = json.loads(open(os.path.join(partition(str(tmp_path / "memory")), "manifest.json")).read())
    assert manifest["model"]["runtime"] == "onnxruntime" and manifest["model"]["layout"] == "nchw"
    assert manifest["counts"]["scored_on"] == {"CPU": 20} and list(manifest["counts"]["per_class"]) == list(CLASSES)
    assert len({row["label"] for row in scored}) > 1  # a model that tells the photos apart


def test_an_onnx_model_as_the_candidate_beside_a_keras_model_scores_as_onnxruntime_does(colour_model, test_split,
                                                                                          tmp_path):
    paths = sorted(_photos(test_split, str(tmp_path / "photos")))
    alone, both = str(tmp_path / "alone"), str(tmp_path / "both")
    for output, extra in ((alone, []), (both, ["--candidate_model", colour_model])):
        assert score.run(["--input", str(tmp_path / "photos"), "--output", output, "--progress_seconds", "0",
                          *extra]) == 0
    assert read_rows(os.path.join(partition(both), "scores")) == read_rows(os.path.join(partition(alone), "scores"))
    candidate = read_rows(os.path.join(partition(both), "candidate"))
    assert [row["key"] for row in candidate] == paths
    np.testing.assert_allclose(np.array([row["probabilities"] for row in candidate]),
                               _expected_colour(colour_model, paths), rtol=0, atol=1e-5)
    found = json.loads(open(os.path.join(partition(both), "manifest.json")).read())["candidate"]
    assert found["model"]["runtime"] == "onnxruntime" and found["compared"] == 20 and found["agreement"] == 0.0


def test_an_onnx_model_scores_tfrecords_of_encoded_images_and_raw_pixels(colour_model, test_split, tmp_path):
    spec = model_files.load(colour_model).spec
    paths = _photos(test_split, str(tmp_path / "photos"), count=6)
    raw = [recipes.to_model_input(spec, open(p, "rb").read()) for p in paths]
    records = [samples.example_bytes(open(p, "rb").read(), os.path.basename(p)) for p in paths]
    records += [samples.example_bytes(pixels.tobytes(), f"raw-{i}", feature_name=RECORD_KEY_RAW_PIXELS)
                for i, pixels in enumerate(raw)]
    samples.write_tfrecord(str(tmp_path / "in.tfrecord"), records)
    output = str(tmp_path / "out")
    assert score.run(["--input_tfrecords", str(tmp_path / "in.tfrecord"), "--output", output, "--model",
                      colour_model, "--raw_feature", RECORD_KEY_RAW_PIXELS]) == 0
    rows = {row["key"]: row["probabilities"] for row in read_rows(os.path.join(partition(output), "scores"))}
    expected = _expected_colour(colour_model, paths)
    for index, file_path in enumerate(paths):
        np.testing.assert_allclose(rows[os.path.basename(file_path)], expected[index], rtol=0, atol=1e-5)
        np.testing.assert_allclose(rows[f"raw-{index}"], expected[index], rtol=0, atol=1e-5)


def test_a_shared_onnx_model_gives_the_same_rows(colour_model, test_split, tmp_path):
    """--share_model serves one onnxruntime session from a separate process; callers reach it through a proxy."""
    _photos(test_split, str(tmp_path / "photos"), count=8)
    for name, extra in (("own", []), ("shared", ["--share_model"])):
        assert score.run(["--input", str(tmp_path / "photos"), "--output", str(tmp_path / name), "--model",
                          colour_model, *extra]) == 0
    shared = read_rows(os.path.join(partition(tmp_path / "shared"), "scores"))
    assert len(shared) == 8 and shared == read_rows(os.path.join(partition(tmp_path / "own"), "scores"))


def test_the_model_commands_take_an_onnx_model(colour_model, test_split, tmp_path, capsys):
    from model import evaluate, predict, weights_text

    paths = _photos(test_split, str(tmp_path / "photos"), count=8)
    assert predict.main([*paths, "--model", colour_model, "--top", "2"]) == predict.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    expected = _expected_colour(colour_model, paths)
    for line, path, row in zip(lines, paths, expected):
        best = CLASSES[int(row.argmax())]
        assert line.startswith(f"{path}: {best} {100 * row.max():.1f}%"), line
    held_out = tmp_path / "held-out"
    for index, path in enumerate(paths):
        os.makedirs(held_out / CLASSES[index % 4], exist_ok=True)
        shutil.copy(path, held_out / CLASSES[index % 4])
    assert evaluate.main(["--no-fashion-mnist", "--eval-dir", str(held_out), "--model", colour_model,
                          "--output-dir", str(tmp_path / "evaluation")]) == 0
    measured = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    files = sorted(str(held_out / CLASSES[index % 4] / os.path.basename(path)) for index, path in enumerate(paths))
    truth = np.array([CLASSES.index(os.path.basename(os.path.dirname(file))) for file in files])
    predicted = _expected_colour(colour_model, files).argmax(axis=1)
    assert measured["accuracy"] == pytest.approx(float(np.mean(predicted == truth)))
    assert weights_text.main(["--model", colour_model, "--output", str(tmp_path / "w.txt")]) == 2
    assert "weights are written as text from a .keras model" in capsys.readouterr().err
    assert not (tmp_path / "w.txt").exists()


def test_a_grey_nhwc_model_taking_uint8_scores_fashion_mnist_pngs(test_split, tmp_path):
    path = onnx_models.save(onnx_models.grey_nhwc_uint8(), str(tmp_path / "grey.onnx"))
    _card(path, "--classes", ",".join(CLASS_NAMES), "--resize", "pad", "--input-range", "uint8")
    assert model_files.load(path).spec.layout == "nhwc"
    files = samples.write_pngs(test_split.images[:30], str(tmp_path / "pngs"), [f"{i:03d}" for i in range(30)])
    output = str(tmp_path / "out")
    assert score.run(["--input", str(tmp_path / "pngs"), "--output", output, "--model", path]) == 0
    rows = read_rows(os.path.join(partition(output), "scores"))
    expected = onnx_models.run_directly(path, test_split.images[:30], layout="nhwc", input_type=np.uint8)
    order = np.argsort(files)
    np.testing.assert_allclose([row["probabilities"] for row in rows], expected[order], rtol=0, atol=1e-5)


def test_external_data_beside_the_model_loads_and_scores_the_same(colour_model, tmp_path):
    import onnx

    folder = tmp_path / "external"
    folder.mkdir()
    path = onnx_models.save(onnx.load(colour_model), str(folder / "net.onnx"), external="net.weights")
    shutil.copy(model_files.card_path_for(colour_model), model_files.card_path_for(path))
    assert os.path.getsize(path) < 1000 < os.path.getsize(folder / "net.weights")
    # The card's content hash covers the external data, not the file alone: the same graph held elsewhere differs.
    with pytest.raises(model_files.ModelFileError, match="does not match the card's content_sha256"):
        model_files.load(path)
    _card(path, "--classes", ",".join(CLASSES), "--resize", "crop", *NORMALISED, "--outputs", "logits", "--force")
    pixels = np.random.default_rng(3).integers(0, 256, (5, SIDE, SIDE, 3), dtype=np.uint8)
    from model.runtimes import forward

    probabilities = {name: forward.served_predict(model_files.load(name).model, model_files.load(name).spec)(pixels)
                     for name in (colour_model, path)}
    np.testing.assert_array_equal(probabilities[colour_model], probabilities[path])
    (folder / "net.weights").write_bytes((folder / "net.weights").read_bytes()[:-4] + b"\x00\x00\x80\x3f")
    with pytest.raises(model_files.ModelFileError, match="does not match the card's content_sha256"):
        model_files.load(path)  # a changed weight is another model


def test_model_card_with_eval_dir_measures_an_onnx_model_on_labelled_pictures(colour_model, test_split, tmp_path):
    path = str(tmp_path / "net.onnx")
    shutil.copy(colour_model, path)
    held_out, files = tmp_path / "held-out", []
    for index, photo in enumerate(_photos(test_split, str(tmp_path / "photos"))):
        os.makedirs(held_out / CLASSES[index % 4], exist_ok=True)
        files.append(str(held_out / CLASSES[index % 4] / os.path.basename(photo)))
        os.replace(photo, files[-1])
    _card(path, "--classes", ",".join(CLASSES), "--resize", "crop", *NORMALISED, "--outputs", "logits",
          "--eval-dir", str(held_out))
    metrics = model_files.load(path).card["test_metrics"]
    truth = np.array([CLASSES.index(os.path.basename(os.path.dirname(file))) for file in files])
    predicted = _expected_colour(path, files).argmax(axis=1)
    assert metrics["examples"] == len(files)
    assert metrics["accuracy"] == round(float(np.mean(predicted == truth)), 6)
    for number, name in enumerate(CLASSES):
        assert metrics["per_class_accuracy"][name] == round(float(np.mean(predicted[truth == number] == number)), 4)


@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")  # Keras's tf2onnx patch asks numpy
def test_a_keras_model_exported_to_onnx_by_keras_itself_scores_as_keras_predicts(test_split, tmp_path):
    import keras

    keras.utils.set_random_seed(11)
    inputs = keras.Input(shape=(24, 20, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.predict(np.zeros((1, 24, 20, 3), np.float32), verbose=0)  # Keras exports only a model that has run
    path = str(tmp_path / "exported.onnx")
    model.export(path, format="onnx")  # through tf2onnx, which the test extra installs
    _card(path, "--classes", ",".join(CLASSES), "--resize", "stretch", "--input-range", "unit")
    loaded = model_files.load(path)
    assert loaded.spec.layout == "nhwc" and loaded.spec.input_shape == (24, 20, 3)
    paths = _photos(test_split, str(tmp_path / "photos"), count=10)
    output = str(tmp_path / "out")
    assert score.run(["--input", str(tmp_path / "photos"), "--output", output, "--model", path]) == 0
    rows = read_rows(os.path.join(partition(output), "scores"))
    pixels = np.stack([recipes.to_model_input(loaded.spec, open(p, "rb").read()) for p in sorted(paths)])
    expected = model.predict(pixels.astype(np.float32) / np.float32(255), verbose=0)
    np.testing.assert_allclose([row["probabilities"] for row in rows], expected, rtol=0, atol=1e-5)


def test_a_keras_card_takes_a_mean_and_std_too(tmp_path):
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input(shape=(20, 20, 3))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "k.keras")
    model.save(path)
    # --runtime keras: by `auto`, a model this small may run 1.10x faster on onnxruntime on one machine, not another
    _card(path, "--classes", "a,b,c", *NORMALISED, "--outputs", "logits", "--runtime", "keras")
    loaded = model_files.load(path)
    assert loaded.card["runtime"] == "keras" and loaded.spec.mean == onnx_models.IMAGENET_MEAN
    pixels = np.random.default_rng(0).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    from model.runtimes import forward

    expected = onnx_models.softmax(model.predict(
        (pixels / np.float32(255) - np.array(onnx_models.IMAGENET_MEAN, np.float32))
        / np.array(onnx_models.IMAGENET_STD, np.float32), verbose=0))
    np.testing.assert_allclose(forward.served_predict(loaded.model, loaded.spec)(pixels), expected, atol=1e-5)


def test_the_layout_is_read_from_the_input_shape_or_asked_for():
    from model.runtimes import onnx_checks

    def geometry(dims, layout=None):
        checked = onnx_checks.CheckedOnnx(b"", "", "x", dims, "float32", "y", 4, onnx_models.OPSET, 0)
        return onnx_checks.image_geometry(checked, layout)

    assert geometry((None, 3, 48, 40)) == ((48, 40, 3), "nchw")
    assert geometry((None, 48, 40, 1)) == ((48, 40, 1), "nhwc")
    assert geometry((None, 3, 8, 3), "nhwc") == ((3, 8, 3), "nhwc")
    assert geometry((None, 3, 8, 3), "nchw") == ((8, 3, 3), "nchw")
    with pytest.raises(ValueError, match="does not say where its channels are: pass --layout nchw"):
        geometry((None, 3, 8, 3))
    with pytest.raises(ValueError, match="is not \\[batch, H, W, C\\] with fixed H and W and C 1 or 3, as --layout"):
        geometry((None, 3, 48, 40), "nhwc")
    with pytest.raises(ValueError, match="is not an image batch"):
        geometry((None, 5, None, 7))


def test_model_card_refuses_a_half_given_normalisation_in_one_line(colour_model, tmp_path, capsys):
    path = str(tmp_path / "net.onnx")
    shutil.copy(colour_model, path)
    assert card.main([path, "--classes", ",".join(CLASSES), "--mean", "0.5,0.5,0.5"]) == card.EXIT_USAGE
    assert card.main([path, "--classes", ",".join(CLASSES), "--mean", "0.5", "--std", "0.2"]) == card.EXIT_USAGE
    assert card.main([path, "--classes", ",".join(CLASSES), "--layout", "nhwc"]) == card.EXIT_USAGE
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["error: --mean and --std: give both a mean and a std, or neither",
                      "error: --mean and --std: the mean and std need one value per channel (3), not 1 and 1",
                      "error: the model's input [?, 3, 32, 32] is not [batch, H, W, C] with fixed H and W and C 1 or "
                      "3, as --layout nhwc says"]
    assert not os.path.exists(model_files.card_path_for(path))


# Hostile and broken ONNX files: each is refused by the scorer (exit 2, one line), nothing outside the model's folder
# opened. The files outside are FIFOs: opening one to read it would wait for a writer for ever.

def _fifo(path) -> str:
    os.mkfifo(path)
    return str(path)


def _hostile(name: str, good, folder) -> str:
    """Writes the hostile model `name` into `folder` (with a card copied from a good model); returns its path."""
    model_dir = folder / "model"
    model_dir.mkdir()
    path = str(model_dir / "net.onnx")
    outside = _fifo(folder / "outside.bin")
    base = onnx_models.colour_nchw_logits()
    if name == "external data by ../":
        model, _ = onnx_models.with_external_location(base, "../outside.bin", str(model_dir))
    elif name == "external data by an absolute path":
        model, _ = onnx_models.with_external_location(base, outside, str(model_dir))
    elif name == "external data by a link inside the folder":
        os.symlink(outside, model_dir / "weights.bin")
        model, _ = onnx_models.with_external_location(base, "weights.bin", str(model_dir))
    elif name == "a huge size claim":
        model, _ = onnx_models.with_external_location(base, "weights.bin", str(model_dir), data=b"")
        model.graph.initializer[0].dims[:] = [1 << 20, 1 << 20, 3, 3]
    elif name == "a custom operator domain":
        model = onnx_models.colour_nchw_logits()
        model.graph.node[1].op_type, model.graph.node[1].domain = "EvilRelu", "com.example.evil"
        model.opset_import.add(domain="com.example.evil", version=1)
    elif name == "two inputs":
        model = onnx_models.colour_nchw_logits(extra_input=True)
    elif name == "an output of the wrong width":
        model = onnx_models.colour_nchw_logits(output_width=5)
    elif name == "a fixed batch of 1":
        model = onnx_models.colour_nchw_logits(batch=1)
    if name == "a truncated file":
        data = base.SerializeToString()
        open(path, "wb").write(data[:len(data) // 2])
    else:
        open(path, "wb").write(model.SerializeToString())  # as written, never resolved by onnx.save
    shutil.copy(model_files.card_path_for(good), model_files.card_path_for(path))
    return path


HOSTILE = {
    "external data by ../": "not a file inside the model's folder",
    "external data by an absolute path": "not a file inside the model's folder",
    "external data by a link inside the folder": "a link that leads outside the model's folder",
    "a huge size claim": "more than the 1,073,741,824 bytes a model may hold in all",
    "a custom operator domain": "uses operators of the domain 'com.example.evil'",
    "two inputs": "the model has 2 inputs",
    "an output of the wrong width": "it gives 5 values per image, and the card names 4 classes",
    "a fixed batch of 1": "export it with a free batch dimension",
    "a truncated file": "is not a whole ONNX model",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_or_broken_onnx_file_is_refused_in_one_line(name, colour_model, test_split, tmp_path):
    path = _hostile(name, colour_model, tmp_path)
    samples.write_pngs(test_split.images[:2], str(tmp_path / "in"), ["a", "b"])
    result = subprocess.run([sys.executable, "-m", "pipeline.score", "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out"), "--model", path], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert HOSTILE[name] in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "out" / "dt=")  # nothing scored
    assert card.main([path, "--classes", ",".join(CLASSES), "--force"]) == card.EXIT_USAGE


def test_an_onnx_model_without_the_onnx_extra_is_one_line_naming_what_to_install(colour_model, test_split, tmp_path):
    blocked = tmp_path / "blocked"
    for package in ("onnx", "onnxruntime"):
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text("raise ImportError('not installed (blocked by the test)')\n")
    samples.write_pngs(test_split.images[:2], str(tmp_path / "in"), ["a", "b"])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), REPO_ROOT])}
    result = subprocess.run([sys.executable, "-m", "pipeline.score", "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out"), "--model", colour_model], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env=environment)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "pip install '.[onnx]'" in result.stderr
