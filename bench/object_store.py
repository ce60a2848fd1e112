"""Scores PNG objects from a real S3 server on loopback (SeaweedFS, as the tests start it) beside the peer, a boto3
thread-pool script that only downloads them, at two sizes, so fixed cost and steady rate come apart.

    python bench/object_store.py                    # 2,000 and 10,000 objects, median of 3 interleaved runs
    python bench/object_store.py --latency_ms 20 --sizes 1000 4000 --in_flight 4 16 64 --peer_threads 16 64
                                                    # a store 20 ms away (bench/latency_proxy.py)

The server runs on the same 2 cores as the way being measured, so every number here includes serving the objects.
"""

import argparse
import concurrent.futures
import contextlib
import glob
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from bench import datasets  # noqa: E402
from bench.benchmark import ONE_WORKER, pipeline, print_table, run_interleaved, summarise  # noqa: E402
from bench.latency_proxy import LatencyProxy  # noqa: E402
from tests.object_store_servers import ACCESS_KEY, REGION, SECRET_KEY, s3_server  # noqa: E402

BUCKET = "bench"


def upload(server, folder: str, prefix: str) -> None:
    client = server.client()
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))

    def put(path: str) -> None:
        with open(path, "rb") as stream:
            client.put_object(Bucket=BUCKET, Key=prefix + os.path.relpath(path, folder), Body=stream.read())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, paths))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(2_000, 10_000), metavar=("N1", "N2"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peer_threads", type=int, nargs="+", default=(16,))
    parser.add_argument("--in_flight", type=int, nargs="+", default=(16,), help="the pipeline's --reads_in_flight")
    parser.add_argument("--latency_ms", type=float, default=0.0, help="delay every response by this much")
    parser.add_argument("--cache", default="/tmp/fashion-bench")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION)
    work = tempfile.mkdtemp(prefix="object-store-bench-")
    try:
        with s3_server(work) as server:
            server.make_bucket(BUCKET)
            for size in args.sizes:
                upload(server, datasets.pngs(size, args.cache), f"n{size}/")
            out = os.path.join(work, "out")
            with contextlib.ExitStack() as stack:
                endpoint = server.endpoint
                if args.latency_ms:
                    proxy = stack.enter_context(LatencyProxy(server.ports["s3"], args.latency_ms / 1000))
                    endpoint = f"http://127.0.0.1:{proxy.port}"
                flags = list(server.flags)
                flags[flags.index("--s3_endpoint_url") + 1] = endpoint
                ways = {}
                for threads in args.peer_threads:
                    ways[f"boto3 download, {threads} threads"] = (lambda threads: lambda n: [
                        sys.executable, os.path.join(HERE, "s3_download_baseline.py"), endpoint, BUCKET, f"n{n}/",
                        "--threads", str(threads)])(threads)
                for reads in args.in_flight:
                    ways[f"pipeline, {reads} reads in flight"] = (lambda reads: lambda n: pipeline(
                        ["--input", f"s3://{BUCKET}/n{n}/"], out, *ONE_WORKER, "--reads_in_flight", str(reads),
                        *flags))(reads)
                found = summarise(run_interleaved(ways, tuple(args.sizes), args.repeat))
            away = f", {args.latency_ms:g} ms away" if args.latency_ms else ""
            print(f"{os.cpu_count()} cores; SeaweedFS on loopback{away}; median of {args.repeat} interleaved runs")
            print_table(f"PNG objects from S3 ({args.sizes[0]:,} and {args.sizes[1]:,} objects)", found, unit="obj")
            peers = [name for name in found if name.startswith("boto3")]
            for name in (name for name in found if name.startswith("pipeline")):
                best = max(peers, key=lambda peer: found[peer]["steady"])
                print(f"  {name}: steady {found[name]['steady'] / found[best]['steady']:.2f}x {best}'s (which "
                      f"only downloads); fixed cost {found[name]['fixed'] - found[best]['fixed']:+.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
