"""Benchmarks the scoring pipeline against the hand-written baseline on real test images written as PNG files.

    python bench/benchmark.py                      # 10,000 images; baseline, pipeline with 1 and 2 workers
    python bench/benchmark.py --images 100000      # the test set repeated to 100,000 files
    python bench/benchmark.py --workers 1 --repeat 1

Every way runs as a fresh process, so the numbers include Python start-up and imports; peak RSS is summed over the
process and its children (the pipeline's worker processes), sampled from /proc.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)


def prepare_images(count: int, cache: str) -> str:
    """Writes `count` PNGs (the 10,000 test images, repeated) once, and reuses them on later runs."""
    folder = os.path.join(cache, f"png-{count}")
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    from model import data, samples

    test = data.load_split("test")
    shutil.rmtree(folder, ignore_errors=True)
    for start in range(0, count, len(test.labels)):
        indices = range(start, min(start + len(test.labels), count))
        sub = os.path.join(folder, f"{start // len(test.labels):03d}")
        samples.write_pngs(test.images[[i % len(test.labels) for i in indices]], sub, [f"{i:07d}.png" for i in indices])
    open(done, "w").close()
    return folder


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue  # The process ended while we looked.
    family, grew = {pid}, True
    while grew:
        children = {child for child, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return sum(rss.get(member, 0) for member in family)


def measure(command: list) -> tuple:
    """Runs a command; returns (seconds, peak summed RSS in bytes)."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_bytes(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.monotonic() - started
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    return seconds, peak[0]


def ways(folder: str, out: str, workers: list) -> dict:
    pipeline = [sys.executable, "-m", "pipeline.score", "--input", folder, "--progress_seconds", "0"]
    found = {"baseline (PIL decode all + one predict)": [sys.executable, os.path.join(HERE, "baseline.py"), folder,
                                                          os.path.join(out, "baseline.parquet")]}
    for count in workers:
        mode = ["--direct_running_mode=in_memory"] if count == 1 else [
            "--direct_running_mode=multi_processing", f"--direct_num_workers={count}"]
        found[f"pipeline, {count} worker{'s' if count > 1 else ''}"] = pipeline + [
            "--output", os.path.join(out, f"pipeline-{count}")] + mode
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local worker processes to try")
    parser.add_argument("--repeat", type=int, default=3, help="runs per way, interleaved; the median is reported")
    parser.add_argument("--cache", default="/tmp/fashion-bench")
    args = parser.parse_args(argv)
    folder = prepare_images(args.images, args.cache)
    out = os.path.join(args.cache, "out")
    os.makedirs(out, exist_ok=True)
    results = {}
    print(f"{args.images:,} PNG files, {os.cpu_count()} cores, median of {args.repeat} interleaved runs")
    commands = ways(folder, out, args.workers)
    runs = {name: [] for name in commands}
    for _ in range(args.repeat):  # Interleaved, so a slow spell of this shared machine hits every way alike.
        for name, command in commands.items():
            runs[name].append(measure(command))
    for name, measured in runs.items():
        seconds = statistics.median(s for s, _ in measured)
        rss = max(r for _, r in measured)
        results[name] = args.images / seconds
        spread = f"{min(s for s, _ in measured):.2f}-{max(s for s, _ in measured):.2f} s"
        print(f"{name:42s} {seconds:7.2f} s ({spread})  {args.images / seconds:8,.0f} img/s  "
              f"peak RSS {rss / 2**30:5.2f} GiB", flush=True)
    baseline = next(iter(results.values()))
    for name, rate in list(results.items())[1:]:
        print(f"{name}: {rate / baseline:.2f}x the baseline")


if __name__ == "__main__":
    main()
