"""Tests what of the GPU and Dataflow set-up can be checked without a GPU or Google Cloud: the requirements each
device's install resolves, the GPU image against setup.py, and the Flex Template's parameters against the scorer's
flags."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from pipeline import options
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

DATAFLOW = os.path.join(REPO_ROOT, "deploy", "dataflow")


def _requirements(tmp_path, device: str = None, extra: str = None) -> list:
    """The install requirements setup.py declares, as pip resolves them from its metadata (egg_info)."""
    source = tmp_path / f"checkout-{device}"
    source.mkdir(parents=True)
    for name in ("setup.py", "MANIFEST.in", "README.md", "constraints.txt"):
        shutil.copy(os.path.join(REPO_ROOT, name), source / name)
    for package in ("model", "pipeline"):
        shutil.copytree(os.path.join(REPO_ROOT, package), source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
    env = {key: value for key, value in os.environ.items() if key != "FASHION_SCORER_TENSORFLOW"}
    if device:
        env["FASHION_SCORER_TENSORFLOW"] = device
    done = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "-e", str(source)], cwd=source, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    requires = (source / "fashion_scorer.egg-info" / "requires.txt").read_text()
    if extra:
        return re.search(rf"^\[{extra}\]\n(.*?)(?:\n\n|\Z)", requires, re.M | re.S).group(1).split()
    return requires.split("\n\n")[0].split()  # the install requirements, before the extras' sections


def test_the_default_install_gets_cpu_tensorflow_and_the_gpu_one_the_cuda_build(tmp_path):
    cpu = _requirements(tmp_path)
    gpu = _requirements(tmp_path, "gpu")
    assert [r for r in cpu if r.startswith("tensorflow")] == ["tensorflow-cpu<2.22,>=2.21"]
    assert [r for r in gpu if r.startswith("tensorflow")] == ["tensorflow[and-cuda]<2.22,>=2.21"]
    assert [r for r in cpu if not r.startswith("tensorflow")] == [r for r in gpu if not r.startswith("tensorflow")]
    pinned = re.search(r"^tensorflow[-_]cpu==(\S+)$", open(os.path.join(REPO_ROOT, "constraints.txt")).read(), re.M)
    assert pinned and pinned.group(1).startswith("2.21.")  # the tested pin is in both ranges' release
    # ONNX models: onnxruntime on CPU workers, its GPU build beside TensorFlow's CUDA build
    assert [r for r in _requirements(tmp_path / "cpu-onnx", extra="onnx") if r.startswith("onnxruntime")] == [
        "onnxruntime<2,>=1.22"]
    assert [r for r in _requirements(tmp_path / "gpu-onnx", "gpu", "onnx") if r.startswith("onnxruntime")] == [
        "onnxruntime-gpu<2,>=1.22"]


def test_the_gpu_image_installs_the_project_for_the_gpu_with_the_tested_pins():
    text = open(os.path.join(REPO_ROOT, "Dockerfile.gpu"), encoding="utf-8").read()
    assert re.search(r"^ENV FASHION_SCORER_TENSORFLOW=gpu$", text, re.M)
    assert re.search(r"^RUN pip install --no-cache-dir -c constraints\.txt '\.\[gcp,aws,onnx\]'$", text, re.M)
    base = re.search(r"^FROM apache/beam_python3\.11_sdk:(\S+)$", text, re.M)
    assert base and base.group(1) == re.search(r"^apache-beam==(\S+)$", open(os.path.join(REPO_ROOT,
                                                                                         "constraints.txt")).read(),
                                               re.M).group(1)
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in copied.split():
            assert os.path.exists(os.path.join(REPO_ROOT, path)), path


def test_the_flex_templates_metadata_is_the_same_from_another_checkout_machine_and_zone(tmp_path):
    """Written from a copy of the checkout at another path, in another time zone, with other temporary and home
    folders and CPU affinity, metadata.json comes out byte for byte as committed."""
    elsewhere = tmp_path / "another checkout"
    for package in ("model", "pipeline"):
        shutil.copytree(os.path.join(REPO_ROOT, package), elsewhere / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DATAFLOW, elsewhere / "deploy" / "dataflow", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tmp").mkdir()
    environment = dict(os.environ, TZ="Asia/Kathmandu", TMPDIR=str(tmp_path / "tmp"), HOME=str(tmp_path),
                       HOSTNAME="another-host", USER="someone-else", LANG="C.UTF-8")
    command = [sys.executable, os.path.join("deploy", "dataflow", "metadata.py")]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    written = subprocess.run(command, cwd=elsewhere, env=environment, capture_output=True, text=True, check=True)
    with open(os.path.join(DATAFLOW, "metadata.json"), encoding="utf-8") as stream:
        assert written.stdout == stream.read()


def test_the_flex_templates_parameters_are_the_scorers_flags():
    sys.path.insert(0, DATAFLOW)
    try:
        import metadata
    finally:
        sys.path.remove(DATAFLOW)
    written = json.load(open(os.path.join(DATAFLOW, "metadata.json"), encoding="utf-8"))
    assert written == metadata.metadata()  # regenerated: python deploy/dataflow/metadata.py > .../metadata.json
    flags = {action.option_strings[0].lstrip("-") for action in options.build_parser()._actions
             if action.option_strings and action.dest != "help"}
    assert {parameter["name"] for parameter in written["parameters"]} == flags
    # Dataflow passes each parameter as --name=value: switches too.
    config, beam_args = options.parse(["--input=gs://b/images/**", "--output=gs://b/scores", "--skip_scored=true",
                                       "--require_gpu=false", "--verbose=true", "--max_error_rate=0.1"])
    assert (config.skip_scored, config.require_gpu, config.verbose, config.max_error_rate) == (True, False, True, 0.1)
    launcher = open(os.path.join(DATAFLOW, "Dockerfile"), encoding="utf-8").read()
    for variable, path in re.findall(r"^ENV (FLEX_TEMPLATE_PYTHON_\w+_FILE)=/template/(\S+)$", launcher, re.M):
        assert os.path.isfile(os.path.join(REPO_ROOT, path)), variable
    with pytest.raises(SystemExit):
        options.parse(["--input=x", "--output=y", "--skip_scored=maybe"])
