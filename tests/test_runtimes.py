"""Tests the runtimes as plug-ins (model.runtimes.registry): the card choosing every runtime that gives the model's
answers, a Keras model served from the ONNX copy Keras exports beside it, --runtime on the scorer, a plain install
without the ONNX runtimes still scoring a Keras model, a tampered copy refused; and the flat models scikit-learn
exports (scikit-learn's bundled digits, probabilities equal to predict_proba on the same pixels), and a PyTorch export
where torch is installed."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from model import card, writing
from model.cards import card_spec
from model.runtimes import choosing, model_files, registry
from pipeline import score, timeline
from tests import samples
from tests.helpers import REPO_ROOT, partition, read_rows

pytest.importorskip("onnxruntime", reason="the ONNX extra (pip install '.[onnx]'), which the test extra includes")


def test_the_registry_decides_every_file_kind_and_names_its_runtimes():
    assert registry.NAMES == ("keras", "onnxruntime", "openvino")
    assert registry.suffixes() == (".keras", ".onnx")
    assert registry.framework_of("a/b.keras") == "keras" and registry.framework_of("s3://b/m.onnx") == "onnx"
    assert [runtime.name for runtime in registry.serving("onnx")] == ["onnxruntime", "openvino"]
    assert registry.get("onnx").name == "onnxruntime"  # a format-3 card's name for it
    with pytest.raises(model_files.ModelFileError, match="only .keras and .onnx model files"):
        registry.framework_of("model.h5")
    with pytest.raises(ValueError, match="unknown runtime 'tflite': use one of keras, onnxruntime, openvino"):
        registry.get("tflite")


@pytest.fixture(scope="module")
def recarded(shipped_model, tmp_path_factory) -> str:
    """A copy of the shipped model (augmentation and batch norms inside) with its runtimes chosen by the card."""
    folder = tmp_path_factory.mktemp("recarded")
    path = str(folder / "fashion_cnn.keras")
    shutil.copy(shipped_model, path)
    shutil.copy(model_files.card_path_for(shipped_model), model_files.card_path_for(path))
    written = json.loads(open(model_files.card_path_for(path)).read())
    written.pop("runtimes", None)
    writing.write_json_atomically(model_files.card_path_for(path), written)
    assert card.main([path, "--runtimes-only"]) == card.EXIT_OK
    return path


def test_the_card_lists_every_runtime_that_gives_the_models_answers_fastest_first(recarded):
    written = json.loads(open(model_files.card_path_for(recarded)).read())
    entries = written["runtimes"]
    names = [entry["runtime"] for entry in entries]
    expected = {"keras", "onnxruntime"} | ({"openvino"} if registry.get("openvino").installed() else set())
    assert set(names) == expected, names
    assert all(entry["max_abs_diff"] <= choosing.AGREEMENT and entry["images_per_second"] > 0 for entry in entries)
    assert all(entry["cpu"] == choosing.cpu_name() for entry in entries)
    keras_rate = entries[names.index("keras")]["images_per_second"]
    for entry in entries[:names.index("keras")]:  # only a runtime >= 10% faster goes ahead of the model's own
        assert entry["images_per_second"] >= choosing.AHEAD * keras_rate - 1
    rates = [entry["images_per_second"] for entry in entries if entry["runtime"] != "keras"]
    assert rates == sorted(rates, reverse=True)
    copy = os.path.join(os.path.dirname(recarded), "fashion_cnn.onnx")
    onnx_entries = [entry for entry in entries if entry["runtime"] != "keras"]
    assert {entry["file"] for entry in onnx_entries} == {"fashion_cnn.onnx"} and os.path.isfile(copy)
    from model.runtimes import onnx_checks

    assert onnx_entries[0]["sha256"] == onnx_checks.check_file(copy).content_sha256
    assert written["card_format"] == 1 and written["known_answers"]  # the rest of the card as it was


def _score(model: str, inputs: str, output: str, *flags, timeline_path: str = None, monkeypatch=None) -> list:
    if timeline_path:
        monkeypatch.setenv(timeline.TIMELINE_ENV, timeline_path)
    assert score.run(["--input", inputs, "--output", output, "--model", model, "--progress_seconds", "0",
                      "--run_date", "2026-11-30", *flags]) == 0
    if timeline_path:
        monkeypatch.delenv(timeline.TIMELINE_ENV)
    return read_rows(os.path.join(partition(output), "scores"))


def test_each_runtime_scores_the_same_rows_and_the_timeline_says_which(recarded, test_split, tmp_path, monkeypatch):
    inputs = str(tmp_path / "in")
    samples.write_pngs(test_split.images[:300], inputs, [f"{index:03d}.png" for index in range(300)])
    by_runtime = {}
    for name in [runtime.name for runtime in registry.runtimes() if runtime.installed()]:
        marks = str(tmp_path / f"{name}.timeline")
        by_runtime[name] = _score(recarded, inputs, str(tmp_path / name), "--runtime", name, timeline_path=marks,
                                  monkeypatch=monkeypatch)
        assert any(phase == f"model file read on {name}" or phase.startswith(f"model file read on {name} ")
                   for _, _, phase in timeline.read(marks)), name
    keras_rows = by_runtime.pop("keras")
    expected = np.array([row["probabilities"] for row in keras_rows])
    for name, rows in by_runtime.items():
        assert [row["key"] for row in rows] == [row["key"] for row in keras_rows]
        np.testing.assert_allclose(np.array([row["probabilities"] for row in rows]), expected, rtol=0, atol=1e-5)
        assert [row["label"] for row in rows] == [row["label"] for row in keras_rows], name
    chosen = _score(recarded, inputs, str(tmp_path / "card"))  # the card's choice: the first installed
    np.testing.assert_allclose(np.array([row["probabilities"] for row in chosen]), expected, rtol=0, atol=1e-5)


def _blocked(tmp_path, packages) -> dict:
    """An environment in which `packages` cannot be imported (as in an install without them)."""
    blocked = tmp_path / "blocked"
    for package in packages:
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text("raise ImportError('not installed (blocked by the test)')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), REPO_ROOT])}


def test_a_plain_install_scores_a_keras_model_whose_card_lists_onnx_runtimes_on_keras(recarded, test_split, tmp_path):
    inputs = str(tmp_path / "in")
    samples.write_pngs(test_split.images[:40], inputs, [f"{index:02d}.png" for index in range(40)])
    marks = str(tmp_path / "timeline")
    environment = {**_blocked(tmp_path, ("onnx", "onnxruntime", "openvino")), timeline.TIMELINE_ENV: marks}
    result = subprocess.run([sys.executable, "-m", "pipeline.score", "--input", inputs, "--output",
                             str(tmp_path / "out"), "--model", recarded, "--progress_seconds", "0"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(phase.startswith("model file read on keras") for _, _, phase in timeline.read(marks))
    assert len(read_rows(os.path.join(partition(str(tmp_path / "out")), "scores"))) == 40


def test_a_tampered_copy_is_refused_in_one_line(recarded, test_split, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("fashion_cnn.keras", "fashion_cnn.json", "fashion_cnn.onnx"):
        shutil.copy(os.path.join(os.path.dirname(recarded), name), folder / name)
    import onnx

    tampered = onnx.load(str(folder / "fashion_cnn.onnx"))
    weights = next(tensor for tensor in tampered.graph.initializer if tensor.dims and len(tensor.raw_data) > 64)
    weights.raw_data = bytes(len(weights.raw_data))
    onnx.save(tampered, str(folder / "fashion_cnn.onnx"))
    samples.write_pngs(test_split.images[:2], str(tmp_path / "in"), ["a.png", "b.png"])
    result = subprocess.run([sys.executable, "-m", "pipeline.score", "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out"), "--model", str(folder / "fashion_cnn.keras"), "--runtime",
                             "onnxruntime"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "fashion_cnn.onnx" in result.stderr and "content hash" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_a_runtime_the_card_does_not_list_for_a_keras_model_is_one_line(shipped_model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(shipped_model, folder / "m.keras")
    written = json.loads(open(model_files.card_path_for(shipped_model)).read())
    written.pop("runtimes", None)
    writing.write_json_atomically(str(folder / "m.json"), written)
    with pytest.raises(model_files.ModelFileError, match="--runtime openvino: .* its card lists no onnx copy; card "
                                                         "it with `python -m model.card MODEL --runtime openvino`"):
        model_files.load(str(folder / "m.keras"), runtime="openvino")


@pytest.mark.skipif(not registry.get("openvino").installed(), reason="OpenVINO (pip install '.[openvino]')")
def test_openvino_at_bf16_only_when_the_card_says_and_checked_at_its_tolerance(recarded, test_split, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("fashion_cnn.keras", "fashion_cnn.json"):
        shutil.copy(os.path.join(os.path.dirname(recarded), name), folder / name)
    path = str(folder / "fashion_cnn.keras")
    assert card.main([path, "--runtimes-only", "--runtime", "openvino", "--precision", "bf16"]) == card.EXIT_OK
    written = json.loads(open(model_files.card_path_for(path)).read())
    assert [(entry["runtime"], entry.get("precision", "f32")) for entry in written["runtimes"]] == [
        ("openvino", "bf16"), ("keras", "f32")]
    assert written["runtimes"][0]["max_abs_diff"] <= choosing.BF16_AGREEMENT
    loaded = model_files.load(path)
    assert (loaded.runtime, loaded.precision) == ("openvino", "bf16")
    f32 = model_files.load(recarded, runtime="openvino")
    assert f32.precision == "f32"
    assert f32.model.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"


# scikit-learn: a flat model of the bundled 8x8 digits, exported by skl2onnx the usual way.

DIGIT_SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(folder of 8x8 grey PNGs of scikit-learn's digits, their uint8 pixels, a fitted LogisticRegression): the model
    learns from the pixels as the PNGs hold them (0-16 scaled to 0-255)."""
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn, in the test extra")
    from sklearn.linear_model import LogisticRegression

    bunch = datasets.load_digits()
    pixels = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    model = LogisticRegression(max_iter=2000).fit(pixels[:1500].reshape(1500, -1).astype(np.float32),
                                                  bunch.target[:1500])
    folder = tmp_path_factory.mktemp("digits")
    from PIL import Image

    held_out = pixels[1500:1620]
    for index, image in enumerate(held_out):
        Image.fromarray(image, "L").save(folder / f"digit-{index:03d}.png")
    return str(folder), held_out, model


def _exported(model, path: str, zipmap: bool) -> str:
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx, in the test extra")
    from skl2onnx.common.data_types import FloatTensorType

    options = None if zipmap else {id(model): {"zipmap": False}}
    exported = skl2onnx.convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 64]))],
                                        options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    with open(path, "wb") as stream:
        stream.write(exported.SerializeToString())
    return path


@pytest.mark.parametrize("zipmap", [True, False], ids=["ZipMap (the default)", "zipmap False"])
def test_a_scikit_learn_export_scores_as_predict_proba(digits, tmp_path, zipmap):
    folder, held_out, model = digits
    path = _exported(model, str(tmp_path / "digits.onnx"), zipmap)
    assert card.main([path, "--classes", ",".join(map(str, range(10))), "--layout", "flat", "--input-shape",
                      "8x8x1", "--resize", "pad", "--repeat", "1"]) == card.EXIT_OK
    written = json.loads(open(model_files.card_path_for(path)).read())
    assert written["layout"] == "flat" and written["input_shape"] == list(DIGIT_SHAPE)
    assert "onnxruntime" in [entry["runtime"] for entry in written["runtimes"]]
    rows = _score(path, folder, str(tmp_path / "out"))
    expected = model.predict_proba(held_out.reshape(len(held_out), -1).astype(np.float32))
    found = np.array([row["probabilities"] for row in rows])
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    assert [row["label"] for row in rows] == [str(label) for label in expected.argmax(axis=1)]


def test_a_flat_model_without_its_input_shape_is_refused_saying_what_to_pass(digits, tmp_path, capsys):
    _, _, model = digits
    path = _exported(model, str(tmp_path / "digits.onnx"), zipmap=False)
    assert card.main([path, "--classes", ",".join(map(str, range(10)))]) == card.EXIT_USAGE
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "pass --layout flat and --input-shape HxWxC" in said, said
    assert card.main([path, "--classes", ",".join(map(str, range(10))), "--layout", "flat", "--input-shape",
                      "9x9x1"]) == card.EXIT_USAGE
    assert "rows of 64 values, and --input-shape 9x9x1 makes 81" in capsys.readouterr().err


def test_a_model_with_two_score_outputs_asks_for_output_name(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    inputs = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 16])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 2]) for name in ("logits", "probs")]
    weights = helper.make_tensor("w", TensorProto.FLOAT, [16, 2], np.linspace(-1, 1, 32).astype(np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["pixels", "w"], ["logits"]),
                               helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
                              "two", [inputs], outputs, [weights])
    path = str(tmp_path / "two.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    flags = ["--classes", "a,b", "--layout", "flat", "--input-shape", "4x4x1", "--repeat", "1"]
    assert card.main([path, *flags]) == card.EXIT_USAGE
    said = capsys.readouterr().err
    assert "'logits', 'probs' could each be the scores; name the one" in said and "--output-name" in said
    assert card.main([path, *flags, "--output-name", "probs"]) == card.EXIT_OK
    assert json.loads(open(model_files.card_path_for(path)).read())["output_name"] == "probs"
    assert model_files.load(path).spec.output_name == "probs"


def test_a_pytorch_export_scores_as_torch_does(test_split, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed here (the test runs where it is)")

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    example = torch.zeros(2, 1, 28, 28)
    path = str(tmp_path / "net.onnx")
    torch.onnx.export(net, (example,), path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert card.main([path, "--classes", ",".join(card_spec.FASHION_MNIST.class_names), "--input-range", "unit",
                      "--outputs", "logits", "--resize", "pad", "--repeat", "1"]) == card.EXIT_OK
    folder = str(tmp_path / "in")
    samples.write_pngs(test_split.images[:50], folder, [f"{index:02d}.png" for index in range(50)])
    rows = _score(path, folder, str(tmp_path / "out"))
    spec = model_files.load(path).spec
    from model import recipes

    pixels = np.stack([recipes.to_model_input(spec, open(os.path.join(folder, f"{index:02d}.png"), "rb").read())
                       for index in range(50)]).astype(np.float32) / 255
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(pixels.reshape(50, 1, 28, 28))), dim=1).numpy()
    np.testing.assert_allclose(np.array([row["probabilities"] for row in rows]), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("file", ["../secret.onnx", "/etc/passwd", ".hidden.onnx", "sub/m.onnx", "m\u202e.onnx"])
def test_a_card_naming_a_copy_outside_the_models_folder_is_refused_before_anything_is_read(recarded, tmp_path, file):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(recarded, folder / "m.keras")
    written = json.loads(open(model_files.card_path_for(recarded)).read())
    copies = [entry for entry in written["runtimes"] if "file" in entry]
    assert copies, "the recarded model should list its ONNX copy"
    for entry in copies:
        entry["file"] = file
    writing.write_json_atomically(str(folder / "m.json"), written)
    with pytest.raises(model_files.ModelFileError, match="runtimes must be a list"):
        model_files.load(str(folder / "m.keras"))


def test_carding_a_model_warns_of_no_retracing_of_its_own_forward_passes(tiny_model_path, tmp_path):
    """model.card makes one forward pass per runtime it measures and per check, each traced once on purpose:
    TensorFlow's "triggered tf.function retracing" warning about them is dropped, its other warnings kept."""
    import logging

    from model.runtimes.keras_runtime import compiled_forward

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    loaded = model_files.load(tiny_model_path, runtime="keras")
    logger = logging.getLogger("tensorflow")
    handler = Keep()
    logger.addHandler(handler)
    try:
        block = np.zeros((loaded.spec.model_call_rows,) + loaded.spec.pixel_shape, np.uint8)
        for _ in range(8):  # TensorFlow warns from the fifth tracing among its recent calls
            compiled_forward(loaded.model, loaded.spec)(block)
        logger.warning("5 out of the last 5 calls to <function other> triggered tf.function retracing.")
    finally:
        logger.removeHandler(handler)
    assert seen == ["5 out of the last 5 calls to <function other> triggered tf.function retracing."]
