"""Defines a run's counts: their names, the pairs each step emits, the one combine that sums them, the file it writes
into the staging folder, and reading that file back, completed and checked, for the manifest.

Every step that counts emits (name, amount) pairs; a name is a counter ("scored") or a group and a member
("class/Bag"). The sums are written once, by one worker, as COUNTS_FILE; publishing reads it and removes it.
"""

import json

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.records import (CANDIDATE_GROUPS, CLASS, DUPLICATE_KEYS, FAILED, FAILED_BY_STAGE,  # noqa: F401
                              FAILED_BY_TYPE, LOW_CONFIDENCE, MATCHED, NAMESPACE, SCORED, SCORED_ON, SKIPPED,
                              SKIPPED_BY_REASON, failed_by, member)

COUNTS_FILE = "_counts.json"


def listing_counts(met: int, skipped: dict, count_files: bool = True, repeated_keys: int = 0):
    """Yields the pairs for a batch of listed entries: `met` entries, `skipped` {reason: amount}, and
    `repeated_keys` files whose key another file of the batch also has (each is still read, so the key has more than
    one row). With count_files False (TFRecords, whose records are counted once read) only the skipped entries count
    as matched."""
    total = sum(skipped.values())
    yield MATCHED, met if count_files else total
    yield SKIPPED, total
    for reason, amount in sorted(skipped.items()):
        yield member(SKIPPED_BY_REASON, reason), amount
    if repeated_keys:
        yield DUPLICATE_KEYS, repeated_keys


def block_counts(block, low_confidence: float, class_names: tuple, count_matched: bool = False):
    """Yields the pairs for a ScoredBlock: scored, per class, low-confidence per class, failed by stage and type; and
    matched, for inputs only known once read (TFRecords)."""
    index = block.probabilities.argmax(axis=1)
    confident = block.probabilities.max(axis=1) >= low_confidence
    if count_matched:
        yield MATCHED, len(block.keys) + sum(1 for row in block.errors if failed_by(row)[0])
    yield SCORED, len(block.keys)
    if block.keys and block.device:
        yield member(SCORED_ON, block.device), len(block.keys)
    for label, amount in zip(*np.unique(index, return_counts=True)):
        yield member(CLASS, class_names[label]), int(amount)
    for label, amount in zip(*np.unique(index[~confident], return_counts=True)):
        yield member(LOW_CONFIDENCE, class_names[label]), int(amount)
    failed = [row for row in block.errors if failed_by(row)[0]]  # not those the candidate alone failed on
    yield FAILED, len(failed)
    for row in failed:
        yield member(FAILED_BY_STAGE, row["stage"]), 1
        yield member(FAILED_BY_TYPE, row["error_type"]), 1


def counted(pair: tuple) -> tuple:
    """Adds a (name, amount) pair to the runner's counter of that name and passes it on. The runner's UI (Dataflow,
    Flink, Spark) shows the counters while the job runs; they are the very pairs the counts file sums, so they end
    equal to the manifest's counts."""
    name, amount = pair
    if amount:  # Spark's portable runner keeps one stage's value of a counter several fused stages add to: a
        # zero from the listing stage replaced a TFRecord run's `matched`
        Metrics.counter(NAMESPACE, name).inc(int(amount))
    return pair


class CountDuplicateKeys(beam.PTransform):
    """ScoredBlocks -> (DUPLICATE_KEYS, n) for every key scored n + 1 times (TFRecord keys come from a feature; image
    files' equal keys are counted as they are listed, see listing_counts)."""

    def expand(self, blocks):
        return (blocks
                | "Keys" >> beam.FlatMap(lambda block: block.keys)
                | "CountEach" >> beam.combiners.Count.PerElement()
                | "Repeats" >> beam.FlatMap(lambda counted: [(DUPLICATE_KEYS, counted[1] - 1)] if counted[1] > 1
                                            else []))


class SumCounts(beam.CombineFn):
    """Sums (name, amount) pairs into one dict, in a single combine (cheaper than per-key sums here)."""

    def create_accumulator(self):
        return {}

    def add_input(self, sums, pair):
        name, amount = pair
        sums[name] = sums.get(name, 0) + amount
        return sums

    def merge_accumulators(self, accumulators):
        merged = {}
        for sums in accumulators:
            for name, amount in sums.items():
                merged[name] = merged.get(name, 0) + amount
        return merged

    def extract_output(self, sums):
        return sums


def _write_json(sums: dict, path: str) -> None:
    with FileSystems.create(path) as stream:
        stream.write(json.dumps(sums, sort_keys=True).encode())


class WriteCounts(beam.PTransform):
    """(name, amount) pairs -> COUNTS_FILE in the given folder: one JSON object of sums, written by one worker."""

    def __init__(self, folder: str):
        super().__init__()
        self.path = FileSystems.join(folder, COUNTS_FILE)

    def expand(self, pairs):
        return (pairs
                | "Sum" >> beam.CombineGlobally(SumCounts())
                | "WriteJson" >> beam.Map(_write_json, self.path))


def read(folder: str, class_names: tuple) -> dict:
    """The counts a run wrote into `folder` (then removed), completed: zeros for what did not happen, every class of
    the model (in its card's order), and whether every matched input was scored, failed or skipped."""
    path = FileSystems.join(folder, COUNTS_FILE)
    with FileSystems.open(path, compression_type="uncompressed") as stream:
        counts = complete(nest(json.loads(stream.read() or b"{}")), class_names)
    FileSystems.delete([path])
    return counts


def nest(flat: dict) -> dict:
    """{'class/Bag': 3, 'scored': 9} -> {'class': {'Bag': 3}, 'scored': 9}."""
    nested = {}
    for name, amount in sorted(flat.items()):
        group, _, name_in_group = name.partition("/")
        if name_in_group:
            nested.setdefault(group, {})[name_in_group] = amount
        else:
            nested[name] = amount
    return nested


def complete(counts: dict, class_names: tuple) -> dict:
    """Nested counts as the manifest holds them: zeros for what did not happen, and the invariant checked."""
    done = {name: counts.get(name, 0) for name in (MATCHED, SKIPPED, SCORED, FAILED)}
    done["invariant_holds"] = done[MATCHED] == done[SCORED] + done[FAILED] + done[SKIPPED]
    done["per_class"] = {name: counts.get(CLASS, {}).get(name, 0) for name in class_names}
    done["low_confidence_per_class"] = {name: counts.get(LOW_CONFIDENCE, {}).get(name, 0) for name in class_names}
    done["low_confidence"] = sum(done["low_confidence_per_class"].values())
    for group in (FAILED_BY_STAGE, FAILED_BY_TYPE, SKIPPED_BY_REASON, SCORED_ON):
        done[group] = counts.get(group, {})
    done[DUPLICATE_KEYS] = counts.get(DUPLICATE_KEYS, 0)
    done.update({name: value for name, value in counts.items() if name.startswith(CANDIDATE_GROUPS)})
    return done
