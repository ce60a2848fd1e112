"""What the `fit` recipe's reduced-scale conversion costs in output and saves in time, against converting every photo
at full resolution, on colour catalogue photos of real Fashion-MNIST items saved as JPEG.

    python bench/fit_recipe.py [--count 300] [--shape 64x64x3] [--sizes 400 800 1600] [--versions 2]

Prints, per recipe version, source size and resize policy: the mean and largest difference in pixel levels (0-255)
between the two conversions, the share of pixels that differ by more than 8 levels, and milliseconds per photo each
way (median of 3 interleaved passes, one process).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import datasets  # noqa: E402
from model.recipes import fit_preprocessing  # noqa: E402
from model.training import data  # noqa: E402


def photos(count: int, longest_edge: int) -> list:
    """JPEG bytes of tinted catalogue photos of the first test items, their longest edge `longest_edge`."""
    items = data.load_split("test").images[:count]
    return [datasets.tinted_jpeg(item, index, longest_edge) for index, item in enumerate(items)]


def timed(convert, payloads: list) -> tuple:
    started = time.perf_counter()
    results = [convert(payload) for payload in payloads]
    return results, 1000 * (time.perf_counter() - started) / len(payloads)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--shape", default="64x64x3")
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 800, 1600])
    parser.add_argument("--versions", type=int, nargs="+", default=[fit_preprocessing.VERSION],
                        choices=fit_preprocessing.VERSIONS, help="the recipe's versions to measure")
    args = parser.parse_args(argv)
    shape = tuple(int(part) for part in args.shape.split("x"))
    print(f"{args.count} JPEG photos -> {args.shape}; reduced (the recipe) against full resolution")
    print(f"{'version':>7} {'source':>7} {'resize':>8} {'mean diff':>10} {'max diff':>9} {'>8 levels':>10} "
          f"{'ms reduced':>11} {'ms full':>8} {'speed-up':>9}")
    for edge in args.sizes:
        payloads = photos(args.count, edge)
        for version, policy in ((v, p) for v in args.versions for p in fit_preprocessing.RESIZE_POLICIES):
            parameters = fit_preprocessing.checked_parameters({"resize": policy, "fill": [255, 255, 255]})
            times = {"reduced": [], "full": []}
            for _ in range(3):
                reduced, cost = timed(lambda p: fit_preprocessing.to_model_input(p, shape, parameters, version=version),
                                      payloads)
                times["reduced"].append(cost)
                full, cost = timed(lambda p: fit_preprocessing.to_model_input(p, shape, parameters,
                                                                             full_resolution=True), payloads)
                times["full"].append(cost)
            difference = np.abs(np.stack(reduced).astype(np.int16) - np.stack(full).astype(np.int16))
            fast, slow = statistics.median(times["reduced"]), statistics.median(times["full"])
            print(f"{version:>7} {edge:>5}px {policy:>8} {difference.mean():>10.2f} {difference.max():>9d} "
                  f"{(difference > 8).mean():>10.2%} {fast:>11.2f} {slow:>8.2f} {slow / fast:>8.1f}x")


if __name__ == "__main__":
    main()
