"""Builds the sdist offline from a copy of the checkout and checks it carries the code, the model and the CLIs."""

import configparser
import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile

from tests.helpers import REPO_ROOT

NAME, VERSION = "fashion-scorer", "0.1.0"
PREFIX = f"{NAME}-{VERSION}/"
PACKAGES = ("pipeline", "model")
ARTIFACTS = ("model/artifacts/fashion_cnn.keras", "model/artifacts/fashion_cnn.json")
CONSOLE_SCRIPTS = ("fashion-score", "fmnist-train", "fmnist-evaluate", "fmnist-predict", "fmnist-weights")
# What `setup.py sdist` writes into its working directory: the egg-info, and the release tree while it archives.
BUILD_LEFTOVERS = ("fashion_scorer.egg-info", f"{NAME}-{VERSION}", "build", "dist")


def _source_files() -> list:
    """The checkout's files as git sees them: tracked and untracked-but-not-ignored (the model artifacts are
    untracked); without git, every file outside the .gitignore'd folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                                capture_output=True, check=True, timeout=60).stdout.decode()
        return [path for path in listed.split("\0") if path and os.path.isfile(os.path.join(REPO_ROOT, path))]
    except (OSError, subprocess.CalledProcessError):
        return _walk_without_ignored()


def _walk_without_ignored() -> list:
    with open(os.path.join(REPO_ROOT, ".gitignore"), encoding="utf-8") as stream:
        ignored = [line.strip().rstrip("/") for line in stream if line.strip() and not line.startswith("#")] + [".git"]
    files = []
    for folder, subfolders, names in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if not any(fnmatch.fnmatch(name, p) for p in ignored)]
        kept = [name for name in names if not any(fnmatch.fnmatch(name, p) for p in ignored)]
        files += [os.path.relpath(os.path.join(folder, name), REPO_ROOT) for name in kept]
    return files


def _copy_checkout(target: str) -> str:
    """Copies the checkout, so the build's egg-info and release tree never land in the real one."""
    for path in _source_files():
        os.makedirs(os.path.join(target, os.path.dirname(path)), exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, path), os.path.join(target, path))
    return target


def _build_sdist(source: str, dist: str) -> str:
    # `python -m build` is not installed in the venv; plain setup.py needs no network (no setup_requires).
    result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", dist], cwd=source,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return os.path.join(dist, f"{NAME}-{VERSION}.tar.gz")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry_point_targets(sdist: tarfile.TarFile) -> dict:
    parser = configparser.ConfigParser()
    parser.read_string(sdist.extractfile(PREFIX + "fashion_scorer.egg-info/entry_points.txt").read().decode())
    return dict(parser["console_scripts"])


def _assert_target_defined(sdist: tarfile.TarFile, target: str) -> None:
    """`package.module:function` must name a module in the sdist that defines that function."""
    module, function = target.split(":")
    path = PREFIX + module.replace(".", "/")
    names = sdist.getnames()
    source = sdist.extractfile(path + ".py" if path + ".py" in names else path + "/__init__.py").read().decode()
    assert f"def {function}(" in source, target


def test_sdist_carries_code_model_and_console_scripts(tmp_path, shipped_model):
    leftovers_before = {name for name in BUILD_LEFTOVERS if os.path.exists(os.path.join(REPO_ROOT, name))}
    source = _copy_checkout(str(tmp_path / "checkout"))
    with tarfile.open(_build_sdist(source, str(tmp_path / "dist"))) as sdist:
        members = {name[len(PREFIX):] for name in sdist.getnames() if name.startswith(PREFIX)}
        # Every module of the packages, as git lists them (a module left out of the sdist breaks an installed run).
        expected = {path for path in _source_files() if path.endswith(".py") and path.split("/")[0] in PACKAGES}
        assert {"pipeline/score.py", "pipeline/graph.py", "model/train.py",
                "model/recipes/preprocessing.py", "model/runtimes/onnx_checks.py"} <= expected
        assert sorted((expected | {"setup.py", "PKG-INFO", *ARTIFACTS}) - members) == []
        for artifact in ARTIFACTS:  # The copies in the sdist are the files themselves, not stale or empty ones.
            with open(os.path.join(source, artifact), "rb") as stream:
                assert _sha256(sdist.extractfile(PREFIX + artifact).read()) == _sha256(stream.read()), artifact
        targets = _entry_point_targets(sdist)
        assert sorted(set(CONSOLE_SCRIPTS) - set(targets)) == []
        for target in targets.values():
            _assert_target_defined(sdist, target)
        pkg_info = sdist.extractfile(PREFIX + "PKG-INFO").read().decode()
    assert f"Name: {NAME}\n" in pkg_info and f"Version: {VERSION}\n" in pkg_info
    assert {name for name in BUILD_LEFTOVERS if os.path.exists(os.path.join(REPO_ROOT, name))} == leftovers_before
