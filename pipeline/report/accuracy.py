"""Defines the report's "Accuracy on labelled inputs" section, from the partition's _labels.json
(pipeline.outputs.labels): each model's accuracy overall and per class with 95% intervals, what of the labels file was
left out, and the earlier nights with labels; and measuring a published night against labels that arrive later.

    python -m pipeline.report OUTPUT/dt=YYYY-MM-DD --labels labels.csv
"""

import json

from apache_beam.io.filesystems import FileSystems

from model import display
from pipeline.outputs import labels, partitions
from pipeline.report import page

SIDES = ("model", "candidate")  # the models a night may be measured for, in the page's order
# Below this many labelled inputs a model's accuracy is too uncertain to compare (its 95% interval is ~±18 points).
MIN_LABELLED = 30


def read(folder: str):
    """The partition's _labels.json, or None where labels were never given or it is unreadable."""
    try:
        with FileSystems.open(FileSystems.join(folder, labels.FILE), compression_type="uncompressed") as stream:
            found = json.loads(stream.read())
        return found if isinstance(found, dict) and isinstance(found.get("models"), dict) else None
    except Exception:  # noqa: BLE001 - no labels yet (the usual case on the night itself)
        return None


def measure_published(partition: str, manifest: dict, uri: str) -> dict:
    """Reads the labels file, measures the night's models against it and writes the partition's _labels.json (the
    only file of the night this changes, with the report). Raises labels.LabelsError for an unusable file."""
    measured = labels.measure(partition, uri, labels.read(uri), manifest)
    labels.write(partition, measured)
    return measured


def labelled_nights(output: str, run_date: str, count: int) -> list:
    """(date, accuracy, labelled) of the run's model on the newest `count` complete partitions before `run_date` that
    have labels."""
    found = []
    for date, folder in sorted(partitions.complete_partitions(output).items(), reverse=True):
        measured = read(folder) if date < run_date else None
        model = (measured or {}).get("models", {}).get("model", {}).get("accuracy", {})
        if model.get("labelled"):
            found.append((date, model["accuracy"], model["labelled"]))
        if len(found) == count:
            break
    return found[::-1]


def _interval_text(found: dict) -> str:
    low, high = found["interval"]
    return f"{low:.1%}-{high:.1%}"


def section(measured: dict, nights: list) -> str:
    """The section's HTML: a tile per model, a table per class, what was left out, earlier nights."""
    models = measured["models"]
    tiles, left = [], []
    for side, found in ((side, models[side]["accuracy"]) for side in SIDES if side in models):
        if found["labelled"]:
            tiles.append((f"{found['accuracy']:.1%}", f"{side} {models[side]['version']}: accuracy on "
                          f"{found['labelled']:,} labelled inputs (95% interval {_interval_text(found)})", ""))
        else:
            tiles.append(("–", f"{side} {models[side]['version']}: no labelled input of this night", ""))
        left += [(side, reason.replace("_", " "), f"{amount:,}")
                 for reason, amount in found["left_out"].items() if amount]
    html = page.tiles(tiles)
    sides = [side for side in SIDES if side in models and models[side]["accuracy"]["labelled"]]
    classes = list(dict.fromkeys(name for side in sides for name in models[side]["accuracy"]["per_class"]))
    if classes:
        header = ["class (true label)"] + [f"{side} {what}" for side in sides
                                           for what in ("labelled", "accuracy", "95% interval")]
        rows = []
        for name in classes:
            row = [name]
            for side in sides:
                per_class = models[side]["accuracy"]["per_class"].get(name)
                row += ([f"{per_class['labelled']:,}", f"{per_class['accuracy']:.1%}", _interval_text(per_class)]
                        if per_class else ["0", "–", "–"])
            rows.append(row)
        html += page.table(header, rows, numeric={at for at in range(1, len(header)) if (at - 1) % 3 < 2})
    if left:
        html += "<p>Left out of the file's rows:</p>" + page.table(["model", "why", "rows"], left, numeric={2})
    if nights:
        html += "<p>Earlier nights with labels (the run's model):</p>" + page.table(
            ["night", "accuracy", "labelled"], [(date, f"{share:.1%}", f"{count:,}") for date, share, count in nights],
            numeric={1, 2})
    return html + f"<p class=note>From {page.esc(display.visible(measured['file']))} ({measured['rows']:,} rows).</p>"


def summary(measured: dict) -> str:
    """The lines printed when labels are measured."""
    lines = []
    for side, described in measured["models"].items():
        found, left = described["accuracy"], described["accuracy"]["left_out"]
        said = (f"accuracy {found['accuracy']:.4f} on {found['labelled']:,} labelled inputs (95% interval "
                f"{found['interval'][0]:.4f}-{found['interval'][1]:.4f})" if found["labelled"]
                else "no labelled input of this night")
        unused = ", ".join(f"{amount:,} {reason.replace('_', ' ')}" for reason, amount in left.items() if amount)
        lines.append(f"labels, {side} {described['version']}: {said}" + (f"; left out: {unused}" if unused else ""))
    return "\n".join(lines)
