"""Defines the comparison of a candidate model with the run's model (--candidate_model): what each scored block adds
to the run's counts (and so to the runner's counters), the inputs the two disagree on most, written to
DISAGREEMENTS in the partition, and the manifest's `candidate` section made of both.

The two models are compared on the inputs both scored, by label name (their classes may differ): agreement, the flip
matrix (the model's label x the candidate's, counts), each model's class mix and mean confidence. The inputs they
disagree on most are those where both are surest of different labels (the larger the smaller of the two
confidences), kept with where each was read, so the report shows them as each model saw them.
"""

import collections
import json
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from model.input_hashes import shape_dtype_and_pixels_sha256
from pipeline import records
from pipeline.outputs import sheet

DISAGREEMENTS = "_disagreements.parquet"  # in a partition, beside _sheet.parquet
KEPT = 12  # inputs the two models disagree on most, kept for the manifest and the report
MICROS = 1_000_000  # confidences are summed in millionths: counters hold integers

# Counter groups (pipeline.outputs.counts names them group/member); all start with counts.CANDIDATE_GROUPS.
GROUP, CLASS, FLIPS = "candidate", "candidate_class", "candidate_flips"
FAILED_BY_STAGE, SCORED_ON = "candidate_failed_by_stage", "candidate_scored_on"

SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("strength", pa.float32(), nullable=False),
    *[pa.field(f"{side}_{name}", kind, nullable=False) for side in ("model", "candidate") for name, kind in (
        ("label", pa.string()), ("confidence", pa.float32()), ("probabilities", pa.list_(pa.float32())),
        ("input_sha256", pa.string()))],
    *sheet.SOURCE_COLUMNS,
])


class _Paired(typing.NamedTuple):
    """A block's inputs that both models scored: each model's rows of them, its probabilities and its label names."""

    model_rows: np.ndarray
    candidate_rows: np.ndarray
    model: np.ndarray
    candidate: np.ndarray
    model_labels: np.ndarray
    candidate_labels: np.ndarray


def _paired(scored, model_classes: tuple, candidate_classes: tuple) -> _Paired:
    """The inputs of a scored block (with the candidate's results) that both models scored, in the model's order; a
    key given twice (TFRecords) is paired in the order its inputs were read."""
    rows = collections.defaultdict(collections.deque)
    for row, key in enumerate(scored.candidate.keys):
        rows[key].append(row)
    pairs = [(mine, rows[key].popleft()) for mine, key in enumerate(scored.keys) if rows.get(key)]
    model_rows = np.array([mine for mine, _ in pairs], dtype=np.int64)
    candidate_rows = np.array([theirs for _, theirs in pairs], dtype=np.int64)
    model, candidate = scored.probabilities[model_rows], scored.candidate.probabilities[candidate_rows]
    return _Paired(model_rows, candidate_rows, model, candidate,
                   np.asarray(model_classes, dtype=object)[model.argmax(axis=1)] if pairs else np.array([], object),
                   np.asarray(candidate_classes, dtype=object)[candidate.argmax(axis=1)] if pairs
                   else np.array([], object))


def block_counts(scored, model_classes: tuple, candidate_classes: tuple):
    """Yields the (name, amount) pairs a scored block adds to the comparison."""
    theirs = scored.candidate
    failed = [stage for model, candidate, stage in map(records.failed_by, scored.errors) if candidate]
    yield f"{GROUP}/scored", len(theirs.keys)
    yield f"{GROUP}/failed", len(failed)
    for stage, amount in collections.Counter(failed).items():
        yield f"{FAILED_BY_STAGE}/{stage}", amount
    if theirs.keys and theirs.device:
        yield f"{SCORED_ON}/{theirs.device}", len(theirs.keys)
    for label, amount in zip(*np.unique(theirs.probabilities.argmax(axis=1), return_counts=True)):
        yield f"{CLASS}/{candidate_classes[label]}", int(amount)
    paired = _paired(scored, model_classes, candidate_classes)
    yield f"{GROUP}/compared", len(paired.model_rows)
    if not len(paired.model_rows):
        return
    yield f"{GROUP}/agreed", int((paired.model_labels == paired.candidate_labels).sum())
    for pair, amount in collections.Counter(zip(paired.model_labels, paired.candidate_labels)).items():
        yield f"{FLIPS}/{json.dumps(list(pair), ensure_ascii=False)}", amount
    for side, probabilities in (("model", paired.model), ("candidate", paired.candidate)):
        yield f"{GROUP}/{side}_confidence_micros", int(np.rint(probabilities.max(axis=1) * MICROS).sum())


def disagreements(scored, inputs, model_classes: tuple, candidate_classes: tuple, count: int = KEPT) -> list:
    """Rows (SCHEMA) for the `count` inputs of a scored block (with the candidate's results) the models disagree on
    most, with each model's input hash (`inputs` is the decoded block: the model's pixels, and the candidate's as
    `inputs.candidate`)."""
    paired = _paired(scored, model_classes, candidate_classes)
    differ = np.flatnonzero(paired.model_labels != paired.candidate_labels)
    if not len(differ):
        return []
    strength = np.minimum(paired.model.max(axis=1), paired.candidate.max(axis=1))
    chosen = differ[np.argsort(-strength[differ], kind="stable")[:count]]
    model_at = {key: row for row, key in enumerate(inputs.keys)}
    candidate_at = {key: row for row, key in enumerate(inputs.candidate.keys)}
    found = []
    for pair in chosen:
        key = scored.keys[paired.model_rows[pair]]
        source = inputs.sources[model_at[key]] if model_at[key] < len(inputs.sources) else None
        if source is None:
            continue
        row = {"key": key, "strength": float(strength[pair])}
        for side, probabilities, label, pixels in (
                ("model", paired.model[pair], paired.model_labels[pair], inputs.pixels[model_at[key]]),
                ("candidate", paired.candidate[pair], paired.candidate_labels[pair],
                 inputs.candidate.pixels[candidate_at[key]])):
            row.update({f"{side}_label": label, f"{side}_confidence": float(probabilities.max()),
                        f"{side}_probabilities": [float(value) for value in probabilities],
                        f"{side}_input_sha256": shape_dtype_and_pixels_sha256(pixels)})
        found.append(dict(row, **sheet.source_fields(source)))
    return found


def order(row: dict) -> tuple:
    """Most sure of different labels first, then by key: the same rows whatever the bundles were."""
    return -row["strength"], row["key"]


def _write(rows: list, path: str) -> None:
    import pyarrow.parquet as pq

    with FileSystems.create(path) as stream:
        pq.write_table(pa.Table.from_pylist(sorted(rows, key=order), schema=SCHEMA), stream)


class WriteDisagreements(beam.PTransform):
    """Scored blocks (with the candidate's results) -> the run's KEPT strongest disagreements, as DISAGREEMENTS in the
    given folder, written by one worker."""

    def __init__(self, folder: str):
        super().__init__()
        self.path = FileSystems.join(folder, DISAGREEMENTS)

    def expand(self, scored):
        return (scored
                | "Disagreements" >> beam.FlatMap(lambda block: block.disagreements)
                | "Strongest" >> beam.combiners.Top.Smallest(KEPT, key=order)
                | "WriteParquet" >> beam.Map(_write, self.path))


def read_disagreements(folder: str) -> list:
    """The rows a run kept (strongest first), [] where there are none."""
    import pyarrow.parquet as pq

    path = FileSystems.join(folder, DISAGREEMENTS)
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path, compression_type="uncompressed") as stream:
        return sorted(pq.read_table(pa.BufferReader(stream.read())).to_pylist(), key=order)


def section(counts: dict, model_classes: tuple, candidate_classes: tuple, kept: list) -> dict:
    """The manifest's `candidate` section (without the model's description) from the run's counts, whose candidate
    groups it takes out, and the disagreements kept."""
    found = {name: counts.pop(name, {}) for name in (GROUP, CLASS, FLIPS, FAILED_BY_STAGE, SCORED_ON)}
    totals = found[GROUP]
    compared, agreed = totals.get("compared", 0), totals.get("agreed", 0)
    flips = {}
    for pair, amount in sorted(found[FLIPS].items()):
        model_label, candidate_label = json.loads(pair)
        flips.setdefault(model_label, {})[candidate_label] = amount
    return {
        "scored": totals.get("scored", 0), "failed": totals.get("failed", 0),
        "failed_by_stage": found[FAILED_BY_STAGE], "scored_on": found[SCORED_ON],
        "compared": compared, "agreed": agreed, "agreement": round(agreed / compared, 6) if compared else None,
        "flips": flips,
        "class_mix": {"model": {name: counts["per_class"].get(name, 0) for name in model_classes},
                      "candidate": {name: found[CLASS].get(name, 0) for name in candidate_classes}},
        "mean_confidence": {side: round(totals.get(f"{side}_confidence_micros", 0) / MICROS / compared, 6)
                            if compared else None for side in ("model", "candidate")},
        "disagreements": [{"key": row["key"], "model_label": row["model_label"],
                           "model_confidence": round(row["model_confidence"], 6),
                           "candidate_label": row["candidate_label"],
                           "candidate_confidence": round(row["candidate_confidence"], 6)} for row in kept],
    }
