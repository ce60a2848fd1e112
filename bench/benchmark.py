"""Benchmarks the scorer against the scripts a user would write instead, side by side on this machine.

    python bench/benchmark.py                          # every section (about 20 minutes on 2 cores)
    python bench/benchmark.py --only native photos     # some of: native tfrecords table photos conversion scaling
                                                       # phases memory report scale bigtable (not by default: scale,
                                                       # a million files and long histories; bigtable, 10 million rows)

Every run is a fresh process, so imports and start-up count, and starts with its input files in the page cache (see
warm_page_cache). Ways are interleaved and repeated (the median of --repeat runs is reported), and each way runs at
two sizes so that fixed cost and steady rate come apart: steady = (N2 - N1) / (t2 - t1), fixed = t1 - N1 / steady.
Peak RSS is summed over the process and its children.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from bench import datasets  # noqa: E402

PIPELINE = [sys.executable, "-m", "pipeline.score", "--progress_seconds", "0"]
ONE_WORKER = ["--direct_running_mode=in_memory"]
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
ONE_THREAD = ["--model_threads", "1", "--decode_threads", "1"]


def pipeline(source: list, output: str, *flags, cores: str = "") -> list:
    """The scoring command for `source` (e.g. ["--input", folder]), optionally pinned to `cores` with taskset."""
    return (["taskset", "-c", cores] if cores else []) + PIPELINE + source + ["--output", output, *flags]


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


def warm_page_cache(command: list) -> None:
    """Reads every input file a command names (folders and globs) once, so each run starts with its inputs in the
    page cache. This machine's host reclaims the cache within minutes, and a run that reads 50,000 files from disk
    measures the disk (~8,000 files/s here, whatever the reader) instead of the way being measured."""
    import glob

    for argument in command:
        if os.path.isdir(argument):
            paths = glob.glob(os.path.join(argument, "**", "*"), recursive=True)
        elif "*" in argument:
            paths = glob.glob(argument)
        else:
            continue
        for path in paths:
            if os.path.isfile(path):
                with open(path, "rb", buffering=0) as stream:
                    stream.readall()


def measure(command: list) -> tuple:
    """Runs a command on warm inputs; returns (seconds, peak summed RSS in bytes)."""
    return measure_with_cpu(command)[:2]


def measure_with_cpu(command: list) -> tuple:
    """Runs a command on warm inputs; returns (seconds, peak summed RSS in bytes, CPU seconds: user + system of the
    process tree, as the kernel counts them for every child waited for). CPU seconds leave out the time this shared
    machine spends on others, which wall time does not."""
    warm_page_cache(command)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, peak[0], cpu


def run_interleaved(ways: dict, sizes: tuple, repeat: int) -> dict:
    """ways: {name: function(size) -> command}. Returns {name: {size: [(seconds, rss), ...]}}, interleaved."""
    runs = {name: {size: [] for size in sizes} for name in ways}
    for _ in range(repeat):  # so that a slow spell of this shared machine hits every way alike
        for size in sizes:
            for name, command in ways.items():
                runs[name][size].append(measure_with_cpu(command(size)))
    return runs


def summarise(runs: dict) -> dict:
    """{name: dict(fixed, steady, seconds per size, rate per size, rss per size)} from medians."""
    found = {}
    for name, by_size in runs.items():
        (small, large) = sorted(by_size)
        seconds = {size: statistics.median(run[0] for run in measured) for size, measured in by_size.items()}
        cpu = {size: statistics.median(run[2] for run in measured) for size, measured in by_size.items()}
        steady = (large - small) / max(seconds[large] - seconds[small], 1e-9)
        found[name] = {
            "fixed": seconds[small] - small / steady, "steady": steady, "seconds": seconds,
            "rate": {size: size / seconds[size] for size in by_size},
            "rss": {size: max(run[1] for run in measured) for size, measured in by_size.items()},
            "spread": {size: (min(run[0] for run in m), max(run[0] for run in m)) for size, m in by_size.items()},
            # CPU seconds an item in the steady state (the difference between the sizes), and fixed CPU seconds
            "cpu_per_item": (cpu[large] - cpu[small]) / (large - small),
            "cpu_fixed": cpu[small] - small * (cpu[large] - cpu[small]) / (large - small),
        }
    return found


def print_table(title: str, found: dict, unit: str = "img") -> None:
    sizes = sorted(next(iter(found.values()))["seconds"])
    print(f"\n{title}")
    header = f"{'way':34s} {'fixed':>7s} {'steady':>12s} {'CPU/' + unit:>9s} {'CPU fixed':>9s}" + "".join(
        f" {f'{size:,} (s)':>16s} {f'{size:,} rate':>14s}" for size in sizes) + "   peak RSS"
    print(header)
    for name, row in found.items():
        cells = "".join(f" {row['seconds'][s]:7.2f} ({row['spread'][s][0]:.1f}-{row['spread'][s][1]:.1f})"
                        f" {row['rate'][s]:9,.0f} {unit}/s" for s in sizes)
        rss = " / ".join(f"{row['rss'][s] / 2**30:.2f}" for s in sizes)
        print(f"{name:34s} {row['fixed']:6.2f}s {row['steady']:7,.0f} {unit}/s {row['cpu_per_item'] * 1000:6.2f}ms "
              f"{row['cpu_fixed']:8.1f}s{cells}   {rss} GiB", flush=True)


def ratio(found: dict, name: str, peer: str, key: str, size=None) -> float:
    value = (lambda row: row[key][size]) if size else (lambda row: row[key])
    return value(found[name]) / value(found[peer])


def native(args) -> dict:
    small, large = args.sizes
    folders = {size: datasets.pngs(size, args.cache) for size in (small, large)}
    out = os.path.join(args.cache, "out")
    ways = {
        "plain script (PIL + predict)": lambda n: [sys.executable, os.path.join(HERE, "baseline.py"), folders[n],
                                                    os.path.join(out, "plain.parquet")],
        "tf.data script": lambda n: [sys.executable, os.path.join(HERE, "tfdata_baseline.py"), folders[n],
                                     os.path.join(out, "tfdata.parquet")],
        "pipeline, 1 worker": lambda n: pipeline(["--input", folders[n]], f"{out}/p1", *ONE_WORKER),
        "pipeline, 2 worker processes": lambda n: pipeline(["--input", folders[n]], f"{out}/p2", *TWO_WORKERS),
    }
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"Native 28x28 PNGs ({small:,} and {large:,} files, median of {args.repeat})", found)
    tfdata, plain = "tf.data script", "plain script (PIL + predict)"
    for name in ("pipeline, 1 worker", "pipeline, 2 worker processes"):
        print(f"  {name}: steady {ratio(found, name, tfdata, 'steady'):.2f}x tf.data's; whole process at {large:,} "
              f"{ratio(found, name, tfdata, 'rate', large):.2f}x tf.data's; at {small:,} "
              f"{ratio(found, name, plain, 'rate', small):.2f}x the plain script's; fixed cost "
              f"{found[name]['fixed'] - found[plain]['fixed']:+.1f} s against the plain script")
    return found


def tfrecords(args) -> dict:
    small, large = args.sizes
    records = {size: datasets.tfrecords(size, args.cache) for size in (small, large)}
    folders = {size: datasets.pngs(size, args.cache) for size in (small, large)}
    out = os.path.join(args.cache, "out")
    ways = {
        "pipeline, loose PNG files": lambda n: pipeline(["--input", folders[n]], f"{out}/png", *ONE_WORKER),
        "pipeline, PNG TFRecords (4 shards)": lambda n: pipeline(["--input_tfrecords", records[n]], f"{out}/tfr",
                                                                 *ONE_WORKER),
    }
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"TFRecords against loose files ({small:,} and {large:,} images, 1 worker)", found)
    files, shards = "pipeline, loose PNG files", "pipeline, PNG TFRecords (4 shards)"
    print(f"  TFRecords: steady {ratio(found, shards, files, 'steady'):.2f}x the loose files'; fixed cost "
          f"{found[shards]['fixed'] - found[files]['fixed']:+.2f} s")
    return found


def table(args) -> dict:
    """The same native PNGs listed in a Parquet table (--input_table, a product id kept) against the folder given as
    --input, one worker."""
    small, large = args.sizes
    folders = {size: datasets.pngs(size, args.cache) for size in (small, large)}
    tables = {size: datasets.png_table(folders[size], args.cache) for size in (small, large)}
    out = os.path.join(args.cache, "out")
    ways = {
        "pipeline, --input folder": lambda n: pipeline(["--input", folders[n]], f"{out}/folder", *ONE_WORKER),
        "pipeline, --input_table": lambda n: pipeline(["--input_table", tables[n], "--uri_column", "image",
                                                       "--keep_columns", "product_id"], f"{out}/table",
                                                      *ONE_WORKER),
    }
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"A table of PNGs against the same folder ({small:,} and {large:,} files, 1 worker)", found)
    folder, listed = "pipeline, --input folder", "pipeline, --input_table"
    print(f"  --input_table: steady {ratio(found, listed, folder, 'steady'):.2f}x the folder's; fixed cost "
          f"{found[listed]['fixed']:.2f} s against {found[folder]['fixed']:.2f} s; CPU an image "
          f"{ratio(found, listed, folder, 'cpu_per_item'):.2f}x")
    return found


def photos(args) -> dict:
    small, large = args.photo_sizes
    folders = {size: datasets.photos(size, args.cache) for size in (small, large)}
    out = os.path.join(args.cache, "out")
    ways = {
        "naive Pillow script": lambda n: [sys.executable, os.path.join(HERE, "photo_baseline.py"), folders[n],
                                          os.path.join(out, f"naive-{n}.parquet")],
        "pipeline, 1 worker": lambda n: pipeline(["--input", folders[n]], f"{out}/photos-{n}", *ONE_WORKER),
        "pipeline, 1 worker on 1 core": lambda n: pipeline(["--input", folders[n]], f"{out}/photos-core1",
                                                           *ONE_WORKER, *ONE_THREAD, cores="0"),
    }
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"Catalogue photos, 1200x1600 JPEG ({small:,} and {large:,} photos)", found, unit="photo")
    naive, ours, one_core = "naive Pillow script", "pipeline, 1 worker", "pipeline, 1 worker on 1 core"
    print(f"  pipeline: whole process at {small:,} photos {ratio(found, ours, naive, 'rate', small):.2f}x the "
          f"naive script's, at {large:,} {ratio(found, ours, naive, 'rate', large):.2f}x; steady "
          f"{ratio(found, ours, naive, 'steady'):.2f}x")
    accuracy = {naive: datasets.accuracy(os.path.join(out, f"naive-{large}.parquet")),
                ours: datasets.accuracy(os.path.join(datasets.partition(f"{out}/photos-{large}"), "scores"))}
    print(f"  accuracy on the {large:,} photos: pipeline {accuracy[ours]:.3f}, naive script {accuracy[naive]:.3f}")
    per_core = datasets.conversion_rate(folders[small])
    print(f"  model.recipes.preprocessing.to_model_input on one core: {per_core:,.0f} photos/s "
          f"({1000 / per_core:.2f} ms a photo)")
    per_core_pipeline = found[one_core]["steady"]
    print(f"  capacity: {per_core_pipeline:,.0f} photos per core-second through the whole pipeline (steady rate of "
          f"one worker on one core); 10,000,000 photos in one hour need {10_000_000 / 3600 / per_core_pipeline:,.1f} "
          f"such cores")
    return found


def scaling(args) -> dict:
    small, large = args.sizes
    folders = {size: datasets.pngs(size, args.cache) for size in (small, large)}
    out = os.path.join(args.cache, "out")
    ways = {
        "1 worker on 1 core": lambda n: pipeline(["--input", folders[n]], f"{out}/core1", *ONE_WORKER, *ONE_THREAD,
                                                 cores="0"),
        "2 workers, 1 core each": lambda n: pipeline(["--input", folders[n]], f"{out}/core2", *TWO_WORKERS,
                                                     *ONE_THREAD, cores="0,1"),
    }
    found = summarise(run_interleaved(ways, (small, large), args.repeat))
    print_table(f"Scaling per core (native PNGs, {small:,} and {large:,} files)", found)
    one, two = "1 worker on 1 core", "2 workers, 1 core each"
    print(f"  2 one-core workers: {ratio(found, two, one, 'steady'):.2f}x the steady rate of one; "
          f"{found[one]['steady']:,.0f} img/s per core")
    return found


def phases(args) -> None:
    """Where start-up goes: the timeline of one run per way (seconds after the command's process started)."""
    from pipeline import timeline

    small = args.sizes[0]
    folder = datasets.pngs(small, args.cache)
    out = os.path.join(args.cache, "out")
    for name, mode in (("1 worker", ONE_WORKER), ("2 worker processes", TWO_WORKERS)):
        log = os.path.join(out, "timeline.txt")
        if os.path.exists(log):
            os.remove(log)
        os.environ[timeline.TIMELINE_ENV] = log
        try:
            measure(pipeline(["--input", folder], f"{out}/phases", *mode))
        finally:
            del os.environ[timeline.TIMELINE_ENV]
        rows = timeline.read(log)
        launcher, started = rows[0][1], rows[0][0]
        print(f"\nStart-up phases, pipeline with {name}, {small:,} PNGs (one run; s after the command started)")
        for seconds, pid, phase in rows:
            who = "launcher" if pid == launcher else f"worker {pid}"
            print(f"  {seconds - started:6.2f}  {who:14s} {phase}")


def conversion(args) -> None:
    """Reduced-scale photo conversion (preprocessing v2) against full resolution (v1) on both catalogue sets."""
    import io

    import numpy as np

    from model.recipes import preprocessing
    from model.runtimes import model_files
    from model.training import data

    from tests import samples

    test = data.load_split("test")
    count = args.photo_sizes[1]
    model = model_files.load(model_files.DEFAULT_MODEL_PATH, runtime="keras").model

    def small_photo(index):
        buffer = io.BytesIO()
        samples.catalogue_photo(test.images[index], index).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    large_folder = datasets.photos(count, args.cache)
    sets = {"catalogue photos, ~400x350 JPEG": [small_photo(i) for i in range(count)],
            "catalogue photos, 1200x1600 JPEG": [open(os.path.join(large_folder, name), "rb").read()
                                                 for name in sorted(os.listdir(large_folder)) if name.endswith(".jpg")]}
    print(f"\nPhoto conversion at reduced scale (v2) against full resolution (v1), {count:,} photos each")
    for name, payloads in sets.items():
        reduced = np.stack([preprocessing.to_model_input(p) for p in payloads])
        edge, preprocessing.REDUCED_EDGE = preprocessing.REDUCED_EDGE, 10**9
        try:
            full = np.stack([preprocessing.to_model_input(p) for p in payloads])
        finally:
            preprocessing.REDUCED_EDGE = edge
        difference = np.abs(reduced.astype(int) - full.astype(int))
        per_image = difference.reshape(len(difference), -1).mean(axis=1)
        labels = test.labels[:len(payloads)]
        accuracy = {way: float((model.predict(x, batch_size=1024, verbose=0).argmax(1) == labels).mean())
                    for way, x in (("v2", reduced), ("v1", full))}
        print(f"  {name}: accuracy v2 {accuracy['v2']:.3f}, v1 {accuracy['v1']:.3f}; pixel difference mean "
              f"{difference.mean():.2f}, max {difference.max()}; images differing by more than 8 on average "
              f"{(per_image > 8).mean():.1%}, worst image {per_image.max():.1f}")


def _timed_run(command: list, log: str) -> tuple:
    """(seconds, peak RSS, seconds from start to the first scored block) of one run with its timeline in `log`."""
    from pipeline import timeline

    if os.path.exists(log):
        os.remove(log)
    os.environ[timeline.TIMELINE_ENV] = log
    try:
        seconds, rss = measure(command)
    finally:
        del os.environ[timeline.TIMELINE_ENV]
    rows = timeline.read(log)
    first = min((t for t, _, phase in rows if phase == "first block scored"), default=float("nan"))
    return seconds, rss, first - rows[0][0]


def scale(args) -> None:
    """A million files and a long history (`--only scale`; not in the default sections: ~10 minutes)."""
    import json

    from model.runtimes import model_files
    from pipeline.reading import listing

    count, nights, new, year = args.scale_files, args.scale_nights, args.scale_new, args.scale_year_nights
    folder = datasets.linked_pngs(count, args.cache)
    started = time.monotonic()
    listed = sum(1 for _ in listing.walk(folder))
    listing_seconds = time.monotonic() - started
    version = model_files.model_version(model_files.read_card(model_files.DEFAULT_MODEL_PATH))
    histories = {}
    for name, nights_here, spread in (("rescored", nights, False), ("grown", year, True)):
        histories[name] = os.path.join(args.cache, f"history-{name}-{count}-{nights_here}-{new}")
        if not os.path.exists(os.path.join(histories[name], ".complete")):
            shutil.rmtree(histories[name], ignore_errors=True)
            datasets.history(folder, histories[name], nights_here, new, version, spread=spread)
            open(os.path.join(histories[name], ".complete"), "w").close()
    full = os.path.join(args.cache, "out", "scale-full")
    shutil.rmtree(full, ignore_errors=True)
    print(f"\nScale: {count:,} PNG files (hard links, {count // 10_000} folders), 1 worker, one run each")
    print(f"  listing: {listed:,} entries in {listing_seconds:.1f} s ({listed / listing_seconds:,.0f} entries/s, "
          "one thread)")
    for name, output, flags in (
            ("full run", full, ()),
            (f"--skip_scored, {nights} nights x {count:,} fingerprints, {new:,} new", histories["rescored"],
             ("--skip_scored",)),
            (f"--skip_scored, {year} nights sharing {count - new:,}, {new:,} new", histories["grown"],
             ("--skip_scored",))):
        seconds, rss, first = _timed_run(pipeline(["--input", folder], output, *flags, *ONE_WORKER),
                                         os.path.join(args.cache, "out", "scale-timeline.txt"))
        newest = max(entry for entry in os.listdir(output) if entry.startswith("dt="))
        with open(os.path.join(output, newest, "manifest.json"), encoding="utf-8") as stream:
            counts = json.load(stream)["counts"]
        print(f"  {name}: {seconds:.1f} s, first scored block after {first:.1f} s, peak RSS {rss / 2**30:.2f} GiB; "
              f"scored {counts['scored']:,}, skipped {counts['skipped']:,}", flush=True)


def bigtable(args) -> None:
    """Tables of 1 and 10 million rows naming 100,000 PNGs (`--only bigtable`; not in the default sections: ~40
    minutes): two nights each with --skip_scored, 1% of the files touched between them, default workers, one run
    each; peak RSS of the whole process tree."""
    import glob
    import json

    folder = datasets.pngs(args.bigtable_files, args.cache)
    files = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
    print(f"\nBig tables naming {args.bigtable_files:,} PNGs over and over (--skip_scored, default workers, one run "
          "each)")
    for rows in args.bigtable_rows:
        table = datasets.big_png_table(folder, rows, args.cache)
        output = os.path.join(args.cache, "out", f"bigtable-{rows}")
        shutil.rmtree(output, ignore_errors=True)
        for night in ("2026-01-01", "2026-01-02"):
            if night != "2026-01-01":
                for path in files[::100]:  # changed since: scored again, with every row that names them
                    os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 1))
            warm_page_cache([folder])
            seconds, rss, cpu = measure_with_cpu(pipeline(
                ["--input_table", table, "--uri_column", "image", "--keep_columns", "product_id,title,listed_at"],
                output, "--skip_scored", "--run_date", night))
            with open(os.path.join(output, f"dt={night}", "manifest.json"), encoding="utf-8") as stream:
                counts = json.load(stream)["counts"]
            print(f"  {rows:>10,} rows, {night}: {seconds:7.1f} s ({rows / seconds:,.0f} rows/s), CPU {cpu:7.1f} s, "
                  f"peak RSS {rss / 2**30:.2f} GiB; scored {counts['scored']:,}, skipped {counts['skipped']:,}, "
                  f"failed {counts['failed']:,}", flush=True)


def memory(args) -> None:
    out = os.path.join(args.cache, "out")
    print("\nMemory (pipeline, 1 worker, one run each)")
    for size in args.memory_sizes:
        seconds, rss = measure(pipeline(["--input", datasets.pngs(size, args.cache)], f"{out}/memory", *ONE_WORKER))
        print(f"  {size:>9,} PNGs: peak RSS {rss / 2**30:.2f} GiB ({seconds:.1f} s)", flush=True)


def report(args) -> None:
    """Rebuilding report.html for a 100,000-image partition: a fresh `python -m pipeline.report` process each time."""
    import glob

    size = 100_000
    out = os.path.join(args.cache, "out", "report-100k")
    if not glob.glob(os.path.join(out, "dt=*", "_SUCCESS")):
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(pipeline(["--input", datasets.pngs(size, args.cache)], out, *ONE_WORKER), check=True,
                       stdout=subprocess.DEVNULL)
    partition = datasets.partition(out)
    command = [sys.executable, "-m", "pipeline.report", partition, "--to", os.path.join(args.cache, "out",
                                                                                       "report-100k.html")]
    runs = [measure(command) for _ in range(args.repeat)]
    seconds = statistics.median(run[0] for run in runs)
    print(f"\nReport for a {size:,}-image partition (24 images read back): {seconds:.2f} s whole process, median of "
          f"{args.repeat}; peak RSS {max(run[1] for run in runs) / 2**30:.2f} GiB")


SECTIONS = {"native": native, "tfrecords": tfrecords, "table": table, "photos": photos, "conversion": conversion,
            "scaling": scaling, "phases": phases, "memory": memory, "scale": scale, "bigtable": bigtable,
            "report": report}
DEFAULT_SECTIONS = [name for name in SECTIONS if name not in ("scale", "bigtable")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=DEFAULT_SECTIONS)
    parser.add_argument("--sizes", type=int, nargs=2, default=(10_000, 50_000), metavar=("N1", "N2"))
    parser.add_argument("--photo_sizes", type=int, nargs=2, default=(1_000, 3_000), metavar=("N1", "N2"))
    parser.add_argument("--memory_sizes", type=int, nargs="+", default=(10_000, 100_000))
    parser.add_argument("--scale_files", type=int, default=1_000_000)
    parser.add_argument("--scale_nights", type=int, default=30)
    parser.add_argument("--scale_new", type=int, default=10_000)
    parser.add_argument("--scale_year_nights", type=int, default=365)
    parser.add_argument("--bigtable_files", type=int, default=100_000)
    parser.add_argument("--bigtable_rows", type=int, nargs="+", default=(1_000_000, 10_000_000))
    parser.add_argument("--repeat", type=int, default=3, help="runs per way and size, interleaved; median reported")
    parser.add_argument("--cache", default="/tmp/fashion-bench", help="where inputs are generated once and reused")
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(args.cache, "out"), exist_ok=True)
    print(f"{os.cpu_count()} cores; shipped model; every run a fresh process; median of {args.repeat} interleaved runs")
    for name in args.only:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
