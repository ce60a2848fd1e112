"""Measures scoring on a GPU against the CPU of the same machine: the forward pass of the shipped model, of a small
224x224x3 colour model and of the backbones bench/backbones.py cards (MobileNetV3Small, EfficientNetB0, ResNet50),
in TensorFlow and, exported to ONNX, in onnxruntime (its CUDA provider where onnxruntime-gpu is installed), the
pipeline's steady rate end to end, and what bounds it (decoding or the model).

    python bench/gpu.py [--sizes 2000 6000] [--repeat 3] [--cache /tmp/gpu-bench]

Run it on a machine with an NVIDIA GPU and the CUDA build of TensorFlow (FASHION_SCORER_TENSORFLOW=gpu pip install
.); on a machine without one it measures the CPU alone and says so. The pipeline's CPU runs hide the GPU with
CUDA_VISIBLE_DEVICES="".
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.benchmark import ONE_WORKER, pipeline, print_table, ratio, run_interleaved, summarise  # noqa: E402
from bench.backbones import SIZES as BACKBONES, backbone, onnx_backbone  # noqa: E402
from bench.own_model import SHAPES, own_model, photos  # noqa: E402
from model import recipes  # noqa: E402
from model.runtimes import devices, forward, model_files  # noqa: E402


def forward_rates(model_path: str, device: str, calls: int = 20) -> float:
    """Images a second of the served forward pass (fixed-row calls, as the scorer makes them) on `device`."""
    import tensorflow as tf

    with tf.device(device):
        return _served_rate(model_files.load(model_path, runtime="keras"), calls)


def onnx_forward_rate(model_path: str, calls: int = 20) -> tuple:
    """(images a second, where) of an ONNX model's served forward pass: on CUDA where onnxruntime has it."""
    loaded = model_files.load(model_path)
    return _served_rate(loaded, calls), forward.device(loaded.model)


def _served_rate(loaded, calls: int) -> float:
    call = forward.served_forward(loaded.model, loaded.spec)
    block = forward.probe_block(loaded.spec)
    call(block)  # traced, and its kernels chosen, before timing
    started = time.perf_counter()
    for _ in range(calls):
        call(block)
    return calls * len(block) / (time.perf_counter() - started)


def decode_rate(folder: str, model_path: str, count: int = 300) -> float:
    """Photos a second the model's recipe converts on one core (the scorer decodes on every core of a worker)."""
    spec = model_files.load(model_path).spec
    names = sorted(name for name in os.listdir(folder) if name.endswith(".jpg"))[:count]
    payloads = [open(os.path.join(folder, name), "rb").read() for name in names]
    started = time.perf_counter()
    for payload in payloads:
        recipes.to_model_input(spec, payload)
    return len(payloads) / (time.perf_counter() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(2000, 6000), metavar=("N1", "N2"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", default="/tmp/gpu-bench")
    args = parser.parse_args(argv)
    gpus = devices.gpus()
    print(f"{os.cpu_count()} cores; GPUs TensorFlow sees: {', '.join(gpus) or 'none (CPU figures only)'}")
    models = {"shipped 28x28x1": model_files.DEFAULT_MODEL_PATH, "224x224x3": own_model(SHAPES["224"], args.cache),
              **{name: backbone(name, args.cache) for name in BACKBONES}}  # keras.applications at 224x224x3
    targets = ["/CPU:0"] + (["/GPU:0"] if gpus else [])
    for name, path in models.items():
        rates = {target: forward_rates(path, target) for target in targets}
        shown = ", ".join(f"{target} {rate:,.0f} img/s" for target, rate in rates.items())
        speedup = f" (GPU {rates['/GPU:0'] / rates['/CPU:0']:.1f}x)" if gpus else ""
        print(f"forward pass, {name}: {shown}{speedup}", flush=True)
    for name in BACKBONES:
        rate, where = onnx_forward_rate(onnx_backbone(name, args.cache))
        print(f"forward pass, {name} exported to ONNX, onnxruntime on {where}: {rate:,.0f} img/s", flush=True)
    folders = {size: photos(size, args.cache) for size in args.sizes}
    model = models["224x224x3"]
    print(f"fit recipe, one core: {decode_rate(folders[args.sizes[0]], model):,.0f} photos/s for 224x224x3")
    out = os.path.join(args.cache, "out")
    ways = {"pipeline, CPU": lambda n: ["env", "CUDA_VISIBLE_DEVICES="] + pipeline(
        ["--input", folders[n]], f"{out}/cpu-{n}", "--model", model, *ONE_WORKER)}
    if gpus:
        ways["pipeline, GPU"] = lambda n: pipeline(["--input", folders[n]], f"{out}/gpu-{n}", "--model", model,
                                                   "--require_gpu", *ONE_WORKER)
    found = summarise(run_interleaved(ways, tuple(args.sizes), args.repeat))
    print_table(f"224x224x3 model, JPEG photos 400-800 px (median of {args.repeat})", found, unit="photo")
    if gpus:
        print(f"  GPU steady {ratio(found, 'pipeline, GPU', 'pipeline, CPU', 'steady'):.2f}x CPU; bounded by "
              "decoding where the GPU's forward rate is far above the pipeline's rate")


if __name__ == "__main__":
    main()
