"""Defines the run report, report.html in every published partition: the run, tonight's class mix against the
previous nights (with a flag when a class's share moves beyond what they make usual), confidence, the least
confident images as a contact sheet, and the failures. It reads the partition's Parquet, the earlier partitions'
manifests and the contact sheet the run kept (pipeline.outputs.sheet: at most --images pictures, read back from where the
run read them by pipeline.report.pictures, never from a key); pipeline.report.page renders it.

    python -m pipeline.report OUTPUT/dt=YYYY-MM-DD [--history 14] [--images 24] [--to FILE]

A class is flagged when tonight's share lies outside its usual band: the median of its share over the earlier
nights, plus or minus three times the larger of (a) how much it varies from night to night (1.4826 x the median
absolute deviation) and (b) the sampling noise of tonight's count (the binomial standard error), and never less than
one percentage point. Flags need at least MIN_NIGHTS earlier nights with scores.
"""

import datetime
import sys
import typing

from pipeline import console  # first: it quiets Beam before Beam is imported

console.quiet_beam_logging()

import numpy as np  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402

from model import display  # noqa: E402
from model.cards import card_spec  # noqa: E402
from pipeline import options, store_endpoints  # noqa: E402
from pipeline.outputs import errors, labels, partitions, scores_output, sheet  # noqa: E402
from pipeline.reading import kinds  # noqa: E402
from pipeline.report import accuracy, candidate, page, pictures  # noqa: E402

REPORT = "report.html"  # in a partition, written before _SUCCESS
DEFAULT_HISTORY, DEFAULT_IMAGES = options.REPORT_HISTORY, options.REPORT_IMAGES
MIN_NIGHTS = 3
BINS = 20
EXAMPLES = 3  # failed keys shown per kind of failure
SENSITIVE_SHIFT = 0.05  # above this least flaggable shift, the report says tonight is too small to see one


def band(history: list, tonight_count: int) -> tuple:
    """(low, high) of the usual share for a class given its shares on earlier nights and tonight's number of scored
    images, or None with fewer than MIN_NIGHTS nights (see the module's docstring)."""
    if len(history) < MIN_NIGHTS:
        return None
    shares = np.asarray(history, dtype=float)
    centre = float(np.median(shares))
    varies = 1.4826 * float(np.median(np.abs(shares - centre)))
    noise = float(np.sqrt(max(centre * (1 - centre), 0.0) / max(tonight_count, 1)))
    reach = max(3 * max(varies, noise), 0.01)
    return max(centre - reach, 0.0), min(centre + reach, 1.0)


def exit_status(manifest: dict) -> tuple:
    """(exit code, words, css class) the scoring command gave for this run."""
    if not manifest["counts"]["invariant_holds"]:
        return 1, "failed: some inputs are unaccounted for", "bad"
    if manifest["error_rate_exceeded"]:
        return 4, "too many failures (exit 4)", "bad"
    return 0, "succeeded (exit 0)", "ok"


def build(folder: str, manifest: dict, output: str, run_date: str, history: int = DEFAULT_HISTORY,
          images: int = DEFAULT_IMAGES) -> str:
    """The report's HTML for the run whose files are in `folder` (a partition, or its staging folder) and whose
    earlier nights are the complete partitions under `output` before `run_date`."""
    nights = _earlier_nights(output, run_date, history)
    spec = card_spec.spec_described(manifest["model"])
    tonight = Confidence.of(FileSystems.join(folder, scores_output.FOLDER), spec.num_classes,
                            manifest["low_confidence_threshold"])
    earlier = (f"against the {len(nights)} previous night{'s' if len(nights) != 1 else ''}" if nights
               else "(no earlier nights yet)")
    failed = manifest["counts"]["failed"]
    sections = [("Tonight's run", _run_section(manifest)),
                (f"Failures ({failed:,})" if failed else "Failures", _failures_section(folder, manifest))]
    measured = accuracy.read(folder)
    if "candidate" in manifest:
        sections.append(("Candidate model", candidate.section(folder, manifest, measured)))
    if measured:
        sections.append(("Accuracy on labelled inputs",
                         accuracy.section(measured, accuracy.labelled_nights(output, run_date, history))))
    sections += [
                (f"Class mix {earlier}", _mix_section(manifest, nights, history)),
                ("Confidence", _confidence_section(manifest, nights, tonight, spec.class_names)),
                _sheet_section(folder, images, spec)]
    counts = manifest["counts"]
    subtitle = (f"{run_date} · {counts['scored']:,} images scored · model {manifest['model']['version']} · "
                f"run {manifest['run_id']}")
    return page.page(f"Scoring report, {run_date}", subtitle, sections)


def write(folder: str, manifest: dict, output: str, run_date: str, to: str = None, **options) -> str:
    """Writes the report (into `folder` unless `to` names a file); returns where."""
    path = to or FileSystems.join(folder, REPORT)
    html = build(folder, manifest, output, run_date, **options).encode()  # first: a failed build writes nothing
    with FileSystems.create(path) as stream:
        stream.write(html)
    return path


def _earlier_nights(output: str, run_date: str, count: int) -> list:
    """(date, counts) of the newest `count` complete partitions before `run_date` that scored something."""
    nights = []
    for date, folder in sorted(partitions.complete_partitions(output).items(), reverse=True):
        if date >= run_date:
            continue
        try:
            counts = partitions.read_manifest(folder)["counts"]
        except Exception:  # an unreadable manifest: that night is left out of the history
            continue
        if counts.get("scored"):
            nights.append((date, counts))
        if len(nights) == count:
            break
    return nights[::-1]


def _run_section(manifest: dict) -> str:
    counts = manifest["counts"]
    code, words, css = exit_status(manifest)
    rate_css = "bad" if manifest["error_rate_exceeded"] else "ok"
    inputs = kinds.in_manifest(manifest["inputs"]).manifest_words(manifest["inputs"])
    facts = [("inputs", inputs), ("model", f"{manifest['model']['version']} ({manifest['model']['path']})"),
             ("runner", manifest["runner"]["name"]), ("started", manifest["started_at"]),
             ("finished", manifest["finished_at"]), ("skip already scored", "yes" if manifest["skip_scored"] else "no")]
    if counts.get("scored_on"):
        facts.append(("scored on", ", ".join(f"{device} ({amount:,})"
                                             for device, amount in sorted(counts["scored_on"].items()))))
    if counts["skipped_by_reason"]:
        facts.append(("skipped", ", ".join(f"{amount:,} {reason}"
                                           for reason, amount in sorted(counts["skipped_by_reason"].items()))))
    return (f"<p><span class='status {css}'>{page.esc(words)}</span></p>"
            + page.tiles([(f"{counts['scored']:,}", "scored", ""), (f"{counts['failed']:,}", "failed",
                                                                              "bad" if counts["failed"] else ""),
                                 (f"{counts['skipped']:,}", "skipped", ""), (f"{counts['matched']:,}", "matched", ""),
                                 (f"{manifest['error_rate']:.2%}",
                                  f"error rate (limit {manifest['max_error_rate']:.0%})", rate_css),
                                 (f"{manifest.get('command_seconds', manifest['seconds']):,.1f} s",
                                  f"duration (scoring {manifest['seconds']:,.1f} s)", ""),
                                 (f"{manifest['images_per_second']:,.0f}", "images a second while scoring", "")])
            + page.table(["", ""], facts))


def _mix_section(manifest: dict, nights: list, history: int) -> str:
    counts = manifest["counts"]
    scored = max(counts["scored"], 1)
    panels, flagged = [], []
    for name in counts["per_class"]:  # the model's classes, in its card's order
        tonight = counts["per_class"][name] / scored
        shares = [night["per_class"].get(name, 0) / night["scored"] for _, night in nights]
        usual = band(shares, counts["scored"])
        outside = usual is not None and not usual[0] <= tonight <= usual[1]
        if outside:
            flagged.append(name)
        usual_text = f"usual {usual[0]:.1%} – {usual[1]:.1%}" if usual else "no usual range yet"
        flag = (f"<div class=flagline>{'more' if tonight > usual[1] else 'fewer'} than usual</div>" if outside
                else "")
        panels.append(f"<div class='panel{' flag' if outside else ''}'><div class=name>{page.esc(name)}</div>"
                      f"<div class=value>tonight {tonight:.1%} ({counts['per_class'][name]:,}) · {usual_text}</div>"
                      f"{page.share_chart(shares, tonight, usual)}{flag}</div>")
    if len(nights) < MIN_NIGHTS:
        verdict = (f"<p class=note>{len(nights)} earlier night{'s' if len(nights) != 1 else ''} found; flags need "
                   f"at least {MIN_NIGHTS}. The charts fill in as nights are scored.</p>")
    elif flagged:
        verdict = (f"<p class=bad><b>Flagged: {page.esc(', '.join(flagged))}</b> — tonight's share lies "
                   "outside what the previous nights make usual.</p>")
    else:
        verdict = "<p class=ok>Every class's share is within its usual range.</p>"
    span = f"{nights[0][0]} to {nights[-1][0]}" if nights else "none"
    explain = (f"<p class=note>Share of tonight's scored images per predicted class; grey: the previous "
               f"{len(nights)} of up to {history} nights ({span}); blue dot: tonight (red when flagged); shaded: the "
               "usual band — the median of the earlier nights ± 3 × the larger of their night-to-night spread "
               "(1.4826 × median absolute deviation) and tonight's sampling noise, at least ± 1 point.</p>")
    return verdict + _sensitivity_note(counts["scored"], len(counts["per_class"])) + (
        "<div class=grid>" + "".join(panels) + "</div>" + explain)


def smallest_flagged_shift(share: float, tonight_count: int) -> float:
    """The least change of a class's share the flag can see tonight, for a class whose share is steady from night to
    night: the band's reach from tonight's sampling noise alone (band)."""
    return max(3 * float(np.sqrt(share * (1 - share) / max(tonight_count, 1))), 0.01)


def _sensitivity_note(scored: int, classes: int) -> str:
    """Says, when tonight is too small for the flag to see a moderate shift, the smallest one it could flag."""
    share = 1 / max(classes, 1)
    shift = smallest_flagged_shift(share, scored)
    if shift <= SENSITIVE_SHIFT:
        return ""
    return (f"<p class=note><b>Tonight's {scored:,} images are too few to flag a small shift:</b> a class at "
            f"{share:.0%} of the images is flagged only if it moves by more than {shift:.1%} (points), however steady "
            f"it was. About {int(np.ceil(9 * share * (1 - share) / SENSITIVE_SHIFT ** 2)):,} images a night bring that "
            f"to {SENSITIVE_SHIFT:.0%}.</p>")


class Confidence(typing.NamedTuple):
    """Tonight's confidences as the report shows them, gathered a batch of rows at a time (a night may hold tens of
    millions): per predicted class, how many, how many below the threshold and a histogram of BINS bins over [0, 1];
    and the median confidence."""

    predicted: np.ndarray  # (classes,)
    below: np.ndarray  # (classes,)
    histograms: np.ndarray  # (classes, BINS)
    median: float

    @classmethod
    def of(cls, scores: str, classes: int, threshold: float) -> "Confidence":
        edges = np.linspace(0.0, 1.0, BINS + 1)
        predicted, below = np.zeros(classes, np.int64), np.zeros(classes, np.int64)
        histograms, fine = np.zeros((classes, BINS), np.int64), np.zeros(_MEDIAN_BINS, np.int64)
        for labels, confidence in _confidences(scores):
            predicted += np.bincount(labels, minlength=classes)[:classes]
            below += np.bincount(labels[confidence < threshold], minlength=classes)[:classes]
            for index in np.unique(labels[labels < classes]):
                histograms[index] += np.histogram(confidence[labels == index], bins=edges)[0]
            fine += np.bincount(_fine_bin(confidence), minlength=_MEDIAN_BINS)
        return cls(predicted, below, histograms, _median(scores, fine))


_MEDIAN_BINS = 1 << 16  # the median's first pass counts confidences in this many bins; its second reads one or two


def _confidences(scores: str):
    for batch in partitions.iter_batches(scores, ["label_index", "confidence"]):
        yield (batch.column("label_index").to_numpy(zero_copy_only=False).astype(np.int64),
               batch.column("confidence").to_numpy(zero_copy_only=False))


def _fine_bin(confidence: np.ndarray) -> np.ndarray:
    return np.clip((confidence.astype(np.float64) * _MEDIAN_BINS).astype(np.int64), 0, _MEDIAN_BINS - 1)


def _median(scores: str, fine: np.ndarray) -> float:
    """The exact median (numpy's: the mean of the two middle values of an even count), in two passes: the bins that
    hold the middle ranks are found from `fine`, and only their values are kept on the second pass."""
    count = int(fine.sum())
    if not count:
        return 0.0
    ranks = sorted({(count - 1) // 2, count // 2})
    before = np.concatenate([[0], np.cumsum(fine)])
    wanted = sorted({int(np.searchsorted(before, rank, side="right")) - 1 for rank in ranks})
    kept = [confidence[np.isin(_fine_bin(confidence), wanted)] for _, confidence in _confidences(scores)]
    values = np.sort(np.concatenate(kept))
    first = int(before[wanted[0]])
    return float(np.mean([values[rank - first] for rank in ranks], dtype=np.float32))


def _confidence_section(manifest: dict, nights: list, tonight_confidence: Confidence, class_names: tuple) -> str:
    counts = manifest["counts"]
    threshold = manifest["low_confidence_threshold"]
    tonight = counts["low_confidence"] / max(counts["scored"], 1)
    shares = [night.get("low_confidence", 0) / night["scored"] for _, night in nights]
    usual = band(shares, counts["scored"])
    outside = usual is not None and tonight > usual[1]  # fewer doubtful predictions than usual is no alarm
    usual_text = f"usual {usual[0]:.1%} – {usual[1]:.1%}" if usual else "no usual range yet"
    head = (page.tiles([(f"{tonight:.1%}", f"below {threshold:.0%} confidence tonight ({usual_text})",
                                "bad" if outside else ""),
                               (f"{tonight_confidence.median:.1%}", "median confidence", "")])
            + f"<div class='panel{' flag' if outside else ''}' style='max-width:260px'><div class=value>share below "
              f"{threshold:.0%}, previous nights and tonight</div>{page.share_chart(shares, tonight, usual)}"
              "</div>")
    panels = []
    for index, name in enumerate(class_names):
        panels.append(f"<div class=panel><div class=name>{page.esc(name)}</div><div class=value>"
                      f"{int(tonight_confidence.predicted[index]):,} predicted · "
                      f"{int(tonight_confidence.below[index]):,} below {threshold:.0%}</div>"
                      f"{page.histogram(tonight_confidence.histograms[index].tolist(), marker=threshold)}</div>")
    return (head + "<p class=note>Confidence (the top probability) per predicted class; the dashed line is "
            f"--low_confidence {threshold}.</p><div class=grid>" + "".join(panels) + "</div>")


def _sheet_section(folder: str, count: int, spec: card_spec.ModelSpec) -> tuple:
    """(heading, HTML) of the least confident predictions, from the candidates the run kept (pipeline.outputs.sheet)."""
    try:
        rows = partitions.read_table(FileSystems.join(folder, sheet.FILE)).to_pylist()
    except Exception:  # noqa: BLE001 - a partition written before the run kept candidates
        return "The least confident predictions", ("<p class=note>This partition holds no contact sheet (it was "
                                                   "written by an older version); rescoring it adds one.</p>")
    rows = sorted(rows, key=sheet.order)[:count]
    if not rows:
        return "The least confident predictions", "<p class=note>Nothing was scored.</p>"
    cards = []
    for row in rows:
        seen, original = pictures.pictures(row, spec)
        label = spec.class_names[row["label_index"]]
        cards.append(f"<div class=card><div class=pics>{seen}{original}</div>{page.keyed_card_head(row)}"
                     f"<div class=pred>{page.esc(label)} · {row['confidence']:.1%}</div>"
                     f"{page.probability_bars(row['probabilities'], spec.class_names)}</div>")
    height, width, _ = spec.input_shape
    bars = (f"the {spec.num_classes} probabilities" if spec.num_classes <= page.MAX_BARS
            else f"the {page.MAX_BARS} largest of the {spec.num_classes} probabilities")
    note = (f"<p class=note>Left: the image as the model saw it ({height} × {width}, scaled); right: the original, "
            f"read back from where the run read it. The bars are {bars}, the predicted class in blue.</p>")
    return f"The {len(rows)} least confident predictions", note + "<div class=sheet>" + "".join(cards) + "</div>"


def _failures_section(folder: str, manifest: dict) -> str:
    counts = manifest["counts"]
    if not counts["failed"]:
        return "<p class=ok>No input failed.</p>"
    inputs = manifest.get("inputs", {})
    kind = kinds.in_manifest(inputs)  # e.g. a table run lists each failed row's place and kept columns too
    columns = ["key", "stage", "error_type", "error_message", *kind.error_columns(inputs)]
    examples = _failure_examples(partitions.read_table(FileSystems.join(folder, errors.FOLDER), columns))
    examples = {group: (amount, [kind.listed_lines(row, inputs) for row in rows], rows[0]["error_message"])
                for group, (amount, rows) in examples.items()}
    ordered = sorted(examples.items(), key=lambda item: (-item[1][0], item[0]))
    table = [(stage, error_type, f"{amount:,}") for (stage, error_type), (amount, _, _) in ordered]
    shown = [f"<div class=message>{page.esc(display.shortened(display.visible(message), 300))}</div>"
             + "".join(page.key_text(key, "example") + "".join(page.key_text(line, "example-row") for line in under)
                       for key, *under in listed) for _, (_, listed, message) in ordered]
    by_stage = ", ".join(f"{amount:,} at {stage}" for stage, amount in sorted(counts["failed_by_stage"].items()))
    return (f"<p class=bad>{counts['failed']:,} inputs failed ({by_stage}); every one is a row in errors/ with its "
            "reason.</p>"
            + page.table(["stage", "type", "count", f"message (of the first) and examples (up to {EXAMPLES})"],
                         table, numeric={2}, html_column=shown))


def _failure_examples(found) -> dict:
    """{(stage, error_type): (rows, the first EXAMPLES rows by key and table row, as dicts)} of the errors/ table
    `found`, counted and sorted by Arrow: a night may fail millions of inputs (a table whose every URI is wrong), and
    only a few become Python rows."""
    import pyarrow.compute as pc

    order = [("key", "ascending")]
    if "table_row" in found.column_names:
        found = found.append_column("_index", pc.fill_null(pc.struct_field(found["table_row"], "index"), -1))
        order.append(("_index", "ascending"))
    examples = {}
    for group in found.group_by(["stage", "error_type"]).aggregate([([], "count_all")]).to_pylist():
        rows = found.filter(pc.and_(pc.equal(found["stage"], group["stage"]),
                                    pc.equal(found["error_type"], group["error_type"])))
        first = rows.take(pc.sort_indices(rows, sort_keys=order)[:EXAMPLES])
        examples[(group["stage"], group["error_type"])] = (group["count_all"], first.to_pylist())
    return examples


def main(argv=None) -> int:
    parser = options.report_parser()
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    unknown = options.unknown_beam_flags(beam_args)
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(beam_args))
    try:
        store_endpoints.check([args.partition, args.to])
    except store_endpoints.StoreUnreachable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    partition = args.partition.rstrip("/")
    name = partition.rsplit("/", 1)[-1]
    try:
        run_date = datetime.date.fromisoformat(name[3:]).isoformat() if name.startswith("dt=") else None
    except ValueError:
        run_date = None
    if run_date is None or not FileSystems.exists(FileSystems.join(partition, partitions.SUCCESS)):
        print(f"error: {args.partition} is not a published partition (a dt=YYYY-MM-DD folder with _SUCCESS)",
              file=sys.stderr)
        return 2
    if args.history < 0 or args.images < 0:
        print("error: --history and --images take 0 or more", file=sys.stderr)
        return 2
    output = partition[: -len(name) - 1] or "."
    manifest = partitions.read_manifest(partition)
    if args.labels:
        try:
            measured = accuracy.measure_published(partition, manifest, args.labels)
        except labels.LabelsError as error:
            print(f"error: {display.visible(str(error))}", file=sys.stderr)
            return 2
        print(accuracy.summary(measured))
    path = write(partition, manifest, output, run_date, to=args.to, history=args.history, images=args.images)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

