"""Reads a labels file, the truth for some inputs that usually arrives days after their night was scored, and measures
a model's scores against it: accuracy overall and per class, with how many inputs were labelled and a 95% interval.

A labels file is CSV (a header row naming `key` and `label`, UTF-8) or Parquet (columns `key` and `label`, strings),
on any Beam filesystem, at most MAX_LABELS_BYTES. Keys are as the scores table writes them; labels are class names.
What cannot be used is counted, never fatal: a key given twice (the first label kept when they agree, none when they
do not), a label that is no class of the model, a key that is not in the run. A file that is not a labels file at all
(no such columns, not UTF-8, too large, neither CSV nor Parquet) is a LabelsError, one line saying what to change.
"""

import collections
import csv
import dataclasses
import io
import math

# The largest labels file read: ~5 million labelled keys of 50 characters.
MAX_LABELS_BYTES = 256 << 20
COLUMNS = ("key", "label")
# z for a two-sided 95% interval
_Z = 1.959963984540054


class LabelsError(ValueError):
    """The file cannot be read as labels; the message says why and what to change."""


@dataclasses.dataclass(frozen=True)
class Labels:
    """key -> label name, and what the file held that cannot be used."""

    by_key: dict
    rows: int  # rows read, header not counted
    duplicate_keys: int  # keys given more than once
    conflicting_keys: int  # of those, keys given different labels (left out)


def parse(data: bytes, name: str) -> Labels:
    """A labels file's bytes -> Labels; Parquet when the bytes say so (its magic number), else CSV."""
    if len(data) > MAX_LABELS_BYTES:
        raise LabelsError(f"labels file {name} holds {len(data):,} bytes, over the limit of {MAX_LABELS_BYTES:,}")
    pairs = _parquet_pairs(data, name) if data[:4] == b"PAR1" else _csv_pairs(data, name)
    seen, conflicting, repeated = {}, set(), collections.Counter()
    for key, label in pairs:
        repeated[key] += 1
        if key in seen and seen[key] != label:
            conflicting.add(key)
        seen.setdefault(key, label)
    by_key = {key: label for key, label in seen.items() if key not in conflicting}
    return Labels(by_key=by_key, rows=len(pairs), duplicate_keys=sum(1 for count in repeated.values() if count > 1),
                  conflicting_keys=len(conflicting))


def _csv_pairs(data: bytes, name: str) -> list:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LabelsError(f"labels file {name} is not UTF-8 text (byte {error.start:,} cannot be decoded); save it as "
                          "UTF-8 CSV with a header row key,label, or as Parquet") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [column.strip() for column in next(reader, [])]
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise LabelsError(f"labels file {name} has no {' and no '.join(missing)} column (its header is "
                          f"{header[:6]!r}); give a header row naming key and label")
    key_at, label_at = header.index("key"), header.index("label")
    pairs = []
    try:
        for row in reader:
            if len(row) > max(key_at, label_at) and row[key_at]:
                pairs.append((row[key_at], row[label_at].strip()))
    except csv.Error as error:
        raise LabelsError(f"labels file {name} is not CSV ({error})") from None
    return pairs


def _parquet_pairs(data: bytes, name: str) -> list:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise LabelsError(f"labels file {name} is not a whole Parquet file ({error})") from None
    missing = [column for column in COLUMNS if column not in table.column_names]
    if missing:
        raise LabelsError(f"labels file {name} has no {' and no '.join(missing)} column (it has "
                          f"{table.column_names[:6]!r})")
    keys, labels = (table.column(column).to_pylist() for column in COLUMNS)
    return [(str(key), str(label).strip()) for key, label in zip(keys, labels) if key is not None and label is not None]


FILE = "_labels.json"  # in a partition: the labels given for it and what the model scored against them


def read(uri: str) -> Labels:
    """The labels file at `uri` (any Beam filesystem), at most MAX_LABELS_BYTES read; LabelsError if unusable."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(uri, compression_type="uncompressed") as stream:
            data = stream.read(MAX_LABELS_BYTES + 1)
    except Exception as error:  # missing, unreadable, a folder: the user must point at another file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LabelsError(f"labels file {uri} cannot be read ({reason})") from None
    return parse(data, uri)


def measure(folder: str, uri: str, labels_read: Labels, manifest: dict) -> dict:
    """What a partition's _labels.json holds (written there by `write`): the file, how many rows it held, and the
    accuracy against it of each model the partition scored with (the manifest's model, and its candidate's, whose
    rows are in scores/ and candidate/)."""
    from apache_beam.io.filesystems import FileSystems

    from model.cards import card_spec
    from pipeline.outputs import partitions, scores_output

    measured = {"file": uri, "rows": labels_read.rows, "models": {}}
    for side, table, described in (("model", scores_output.FOLDER, manifest["model"]),
                                   ("candidate", scores_output.CANDIDATE_FOLDER,
                                    manifest.get("candidate", {}).get("model"))):
        if described:
            scores = partitions.read_table(FileSystems.join(folder, table), ["key", "label"])
            predicted = dict(zip(scores.column("key").to_pylist(), scores.column("label").to_pylist()))
            measured["models"][side] = {
                "version": described["version"],
                "accuracy": accuracy(predicted, labels_read, card_spec.spec_described(described).class_names)}
    return measured


def write(folder: str, measured: dict) -> None:
    """Writes `measured` as the partition's FILE."""
    import json

    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(FileSystems.join(folder, FILE)) as stream:
        stream.write(json.dumps(measured, indent=2).encode())


def interval(correct: int, count: int) -> list:
    """The 95% Wilson score interval of a proportion correct/count ([0, 1] when count is 0)."""
    if count == 0:
        return [0.0, 1.0]
    share = correct / count
    centre = (share + _Z ** 2 / (2 * count)) / (1 + _Z ** 2 / count)
    half = _Z * math.sqrt(share * (1 - share) / count + _Z ** 2 / (4 * count ** 2)) / (1 + _Z ** 2 / count)
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def accuracy(predicted: dict, labels: Labels, class_names: tuple) -> dict:
    """A model's accuracy on the labelled inputs of a run: `predicted` is {key: label name} as its scores table has
    them. Overall and per class (by the true label), each with its count and 95% interval, and what was left out."""
    known = set(class_names)
    unknown_class = sum(1 for label in labels.by_key.values() if label not in known)
    pairs = [(label, predicted[key]) for key, label in labels.by_key.items() if label in known and key in predicted]
    not_in_run = sum(1 for key, label in labels.by_key.items() if label in known and key not in predicted)
    correct = sum(1 for truth, guess in pairs if truth == guess)
    per_class = {}
    for name in class_names:
        of_class = [guess for truth, guess in pairs if truth == name]
        if of_class:
            right = sum(1 for guess in of_class if guess == name)
            per_class[name] = {"labelled": len(of_class), "accuracy": round(right / len(of_class), 6),
                               "interval": interval(right, len(of_class))}
    return {"labelled": len(pairs), "correct": correct,
            "accuracy": round(correct / len(pairs), 6) if pairs else None, "interval": interval(correct, len(pairs)),
            "per_class": per_class,
            "left_out": {"label_not_a_class": unknown_class, "key_not_in_run": not_in_run,
                         "duplicate_keys": labels.duplicate_keys, "conflicting_keys": labels.conflicting_keys}}
