"""Measures what a cluster costs: the shipped model on native 28x28 PNGs, scored locally on two worker processes
against the same run on Spark and on Flink on loopback (two workers each; deploy/cluster/cluster.py).

    python bench/cluster.py [--sizes 5000 50000] [--repeat 1] [--engines spark flink]
    python bench/cluster.py --backbone MobileNetV3Small --sizes 400 2000   # a 224x224 backbone on 400-1000 px photos

Each way is a fresh scoring process, interleaved; fixed cost and steady rate come from the two sizes. A cluster's
own start-up (JVMs, job server, worker pool) and its first job (which also starts the executors) are measured once
and printed apart: a cluster that stays up pays them once, while every run pays submission, the engine's job
start-up and its SDK workers' start-up.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "deploy", "cluster"))

from bench import benchmark, datasets  # noqa: E402
import cluster as loopback_cluster  # noqa: E402 (deploy/cluster is a folder of scripts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[5000, 50000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--engines", nargs="+", default=["spark", "flink"], choices=["spark", "flink"])
    parser.add_argument("--backbone", help="a keras.applications name (bench/backbones.py) scored on photos instead "
                                           "of the shipped model on PNGs")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "fashion-bench"))
    args = parser.parse_args(argv)
    if args.backbone:
        from bench import backbones

        folders = {size: backbones.photos(size, args.cache) for size in args.sizes}
        model = ["--model", backbones.backbone(args.backbone, args.cache)]
        title, unit = f"{args.backbone} at 224x224x3, 400-1000 px JPEG photos", "photo"
    else:
        folders = {size: datasets.pngs(size, args.cache) for size in args.sizes}
        model, title, unit = [], "shipped model, native 28x28 PNGs", "img"
    scratch = tempfile.mkdtemp(prefix="cluster-bench-")
    clusters = {}
    try:
        for engine in args.engines:
            started = time.monotonic()
            clusters[engine] = loopback_cluster.up(engine, os.path.join(scratch, engine), log=lambda _: None)
            print(f"{engine}: cluster up in {time.monotonic() - started:.1f} s (fetched before)", flush=True)

        def way(flags):
            def command(size):
                output = os.path.join(scratch, "out")
                shutil.rmtree(output, ignore_errors=True)
                return benchmark.pipeline(["--input", folders[size]], output, "--progress_seconds", "0", *model,
                                          *flags)
            return command

        ways = {"local, 2 worker processes": way(["--direct_running_mode=multi_processing",
                                                  "--direct_num_workers=2"])}
        ways.update({f"{engine}, 2 workers": way(found.submit_flags()) for engine, found in clusters.items()})
        for name in list(ways)[1:]:  # a fresh cluster's first job also starts its executors: measured apart
            seconds, _ = benchmark.measure(ways[name](min(args.sizes)))
            print(f"{name}: first job on the fresh cluster, {min(args.sizes):,} inputs: {seconds:.1f} s", flush=True)
        found = benchmark.summarise(benchmark.run_interleaved(ways, tuple(args.sizes), args.repeat))
        benchmark.print_table(f"{title} (peak RSS: the submitting process tree only, for a cluster)", found, unit)
        local = found["local, 2 worker processes"]
        for name, row in found.items():
            print(f"{name}: fixed {row['fixed']:.1f} s ({row['fixed'] - local['fixed']:+.1f} s against local), "
                  f"steady {row['steady']:,.1f} {unit}/s ({row['steady'] / local['steady']:.2f}x local)")
    finally:
        for engine, found in clusters.items():
            loopback_cluster.down(found.state)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
