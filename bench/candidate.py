"""Benchmarks scoring a candidate model beside the run's model (--candidate_model) against what a team does without
it: two separate runs, one per model, over the same inputs. Also the model alone, so the candidate's own cost shows.

    python bench/candidate.py [--pairs fmnist backbones] [--repeat 3] [--cache /tmp/candidate-bench]

Pairs: the shipped Fashion-MNIST CNN with a second Fashion-MNIST model (an MLP trained here by `python -m
model.train`, 2 epochs) on native 28x28 PNGs of the real test set; and two 224x224x3 backbones (MobileNetV3Small as
the model, EfficientNetB0 as the candidate, both carded with the same fit recipe, as bench/backbones.py makes them) on
JPEG photos of real photographic content. Fresh processes, one worker, interleaved, medians of --repeat at two sizes
per pair, so that the steady rate and the fixed cost come apart; peak RSS is the whole process tree's.
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import backbones, datasets  # noqa: E402
from bench.benchmark import ONE_WORKER, pipeline, print_table, ratio, run_interleaved, summarise  # noqa: E402
from model.runtimes.model_files import DEFAULT_MODEL_PATH  # noqa: E402

SIZES = {"fmnist": (5_000, 30_000), "backbones": (300, 1_200)}


def second_fmnist_model(cache: str) -> str:
    """A second Fashion-MNIST model (an MLP, 2 epochs on the real training set), trained once into the cache."""
    def build(folder):
        subprocess.run([sys.executable, "-m", "model.train", "--architecture", "mlp", "--epochs", "2",
                        "--run-dir", os.path.join(folder, "run"), "--export", os.path.join(folder, "mlp.keras"),
                        "--verbose", "0"], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(datasets.cached(os.path.join(cache, "model-mlp"), build), "mlp.keras")


def pair(name: str, args) -> dict:
    """Times the model alone, the candidate run and the two separate runs on one pair; prints the table and ratios."""
    small, large = SIZES[name]
    if name == "fmnist":
        model, candidate = DEFAULT_MODEL_PATH, second_fmnist_model(args.cache)
        folders = {size: datasets.pngs(size, args.cache) for size in (small, large)}
        title, unit = "Shipped CNN + an MLP, native 28x28 PNGs", "img"
    else:
        model, candidate = (backbones.backbone(backbone, args.cache)
                            for backbone in ("MobileNetV3Small", "EfficientNetB0"))
        folders = {size: backbones.photos(size, args.cache) for size in (small, large)}
        title, unit = "MobileNetV3Small + EfficientNetB0 224x224x3, JPEG photos 400-1000 px", "photo"
    out = os.path.join(args.cache, "out", name)
    os.makedirs(out, exist_ok=True)

    def run(size: int, where: str, *flags) -> list:
        return pipeline(["--input", folders[size]], f"{out}/{where}-{size}", *flags, *ONE_WORKER)

    def both_alone(size: int) -> list:  # one run after the other, as one measured command
        first, second = run(size, "first", "--model", model), run(size, "second", "--model", candidate)
        return ["sh", "-c", f"{subprocess.list2cmdline(first)} && {subprocess.list2cmdline(second)}"]

    ways = {
        "model alone": lambda size: run(size, "alone", "--model", model),
        "model + candidate, one run": lambda size: run(size, "both", "--model", model, "--candidate_model", candidate),
        "two runs, one per model": both_alone,
    }
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"{title} ({small:,} and {large:,}, median of {args.repeat})", found, unit=unit)
    one, two, alone = "model + candidate, one run", "two runs, one per model", "model alone"
    print(f"  candidate run against two runs: whole process {1 / ratio(found, one, two, 'rate', small):.2f}x the "
          f"time at {small:,}, {1 / ratio(found, one, two, 'rate', large):.2f}x at {large:,}; steady "
          f"{ratio(found, one, two, 'steady'):.2f}x the rate; fixed {found[one]['fixed']:.1f} s against "
          f"{found[two]['fixed']:.1f} s; peak RSS {ratio(found, one, two, 'rss', large):.2f}x")
    print(f"  the candidate's own cost: steady {ratio(found, one, alone, 'steady'):.2f}x the model alone's rate, "
          f"fixed +{found[one]['fixed'] - found[alone]['fixed']:.1f} s")
    import pyarrow.parquet as pq

    for table in ("scores", "candidate"):
        rows = pq.read_table(os.path.join(datasets.partition(f"{out}/both-{large}"), table)).num_rows
        assert rows == large, f"the candidate run wrote {rows} of {large} rows to {table}/"
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=3, help="runs per way and size, interleaved; median reported")
    parser.add_argument("--cache", default="/tmp/candidate-bench", help="where inputs and models are made once")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores; every run a fresh process, one worker")
    for name in args.pairs:
        pair(name, args)


if __name__ == "__main__":
    main()
