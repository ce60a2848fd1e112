"""Publishes a run: names it, writes its manifest with the counts and checks, swaps the partition into place, writes
its report. Above both the outputs it publishes and the report it writes (pipeline/outputs, pipeline/report)."""

import dataclasses
import datetime
import html
import json
import sys
import uuid

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from model.cards import card_spec
from model.display import visible
from pipeline.outputs import fingerprints, partitions
from pipeline.reading import kinds
from pipeline.report import accuracy, report


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run_id: str
    output: str
    partition: str
    staging: str
    trash: str
    max_error_rate: float
    manifest_base: dict


def start_run(config, beam_options, model) -> RunInfo:
    """Names the run and records what the manifest will say (call it holding the date's lock)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    final = partitions.partition_path(config.output, config.run_date)
    inputs = kinds.of(config)
    runner = {"name": str(beam_options.view_as(StandardOptions).runner)}
    if runner["name"] == "FnApiRunner":  # Only the local runner has these; elsewhere they would mislead.
        direct = beam_options.view_as(DirectOptions)
        runner.update(direct_num_workers=direct.direct_num_workers, direct_running_mode=direct.direct_running_mode)
    base = {
        "run_id": run_id,
        "run_date": config.run_date,
        "started_at": now.isoformat(),
        "inputs": inputs.manifest(),
        "skip_scored": config.skip_scored,
        "refuse_outside_links": config.refuse_outside_links,
        fingerprints.INDEX_FLAG: inputs.fingerprinted,  # _inputs: every file of the inputs scored tonight or before
        "runner": runner,
        "model_threads": config.model_threads or "the runtime's default",
        "model": _described(config.model, model),
        **({"candidate": {"model": _described(config.candidate_model, model.candidate)}} if model.candidate else {}),
        "low_confidence_threshold": config.low_confidence,
        "max_error_rate": config.max_error_rate,
        "partition": final,
    }
    return RunInfo(run_id, config.output, final, partitions.staging_path(config.output, config.run_date, run_id),
                   partitions.trash_path(config.output, config.run_date, run_id), config.max_error_rate, base)


def _described(path: str, model) -> dict:
    """A model as the manifest describes it: where, its file's hash, its version and its card's facts."""
    return {"path": path, "sha256": model.model_sha256, "version": model.version, **card_spec.described(model.spec)}


def discard(run: RunInfo) -> None:
    """Removes what a run that will not be published wrote; the partition in place is not touched."""
    partitions.remove(run.staging)


def finish_run(run: RunInfo, counts: dict, seconds: float, command_seconds: float = None,
               sections: dict = None) -> dict:
    """Writes the manifest and _SUCCESS into the staging folder, then swaps it into place as the partition. `seconds`
    is the pipeline's run, `command_seconds` the whole command's so far (start-up, checks and model load too);
    `sections` are the manifest's further sections (candidate, labels)."""
    attempted = counts["scored"] + counts["failed"]
    error_rate = counts["failed"] / attempted if attempted else 0.0
    manifest = dict(run.manifest_base, finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    seconds=round(seconds, 3), command_seconds=round(command_seconds or seconds, 3), counts=counts,
                    error_rate=round(error_rate, 6),
                    error_rate_exceeded=error_rate > run.max_error_rate,
                    images_per_second=round(attempted / max(seconds, 1e-9), 1), **(sections or {}))
    _write(FileSystems.join(run.staging, partitions.MANIFEST), json.dumps(manifest, indent=2).encode())
    report_failure = _write_report(run, manifest)
    _write(FileSystems.join(run.staging, partitions.SUCCESS), run.run_id.encode())  # last file of the partition
    partitions.swap_into_place(run.staging, run.partition, run.trash)
    if report_failure:  # Only now is there a partition to rebuild the report of; had publishing failed, none.
        print(f"WARNING: the report could not be built ({report_failure}); rebuild it with "
              f"`python -m pipeline.report {run.partition}`", file=sys.stderr)
    return manifest


def _candidate_lines(found: dict) -> list:
    """What the summary says of a candidate model."""
    agreement = f"{found['agreement']:.1%}" if found["agreement"] is not None else "–"
    lines = [f"candidate {found['model']['version']}: scored {found['scored']:,}, {found['failed']:,} failed; agrees "
             f"with the model on {agreement} of the {found['compared']:,} inputs both scored"]
    flips = sorted(((amount, model_label, candidate_label) for model_label, row in found["flips"].items()
                    for candidate_label, amount in row.items() if model_label != candidate_label), reverse=True)
    for amount, model_label, candidate_label in flips[:5]:
        lines.append(f"  {visible(model_label)} -> {visible(candidate_label)}: {amount:,}")
    return lines


def _write_report(run: RunInfo, manifest: dict) -> str:
    """Writes report.html into the staging folder; returns why it could not be built, or ''. A report that cannot be
    built does not cost the run its outputs: the page then says why, and so does a warning once published."""
    try:
        report.write(run.staging, manifest, run.output, manifest["run_date"])
        return ""
    except Exception as error:  # noqa: BLE001 - any failure here must leave the scores published
        _write(FileSystems.join(run.staging, report.REPORT),
               f"<!doctype html><title>report</title><p>The report could not be built: {html.escape(str(error))}"
               .encode())
        return f"{type(error).__name__}: {error}"


def _write(path: str, content: bytes) -> None:
    with FileSystems.create(path) as stream:
        stream.write(content)


def skipped_text(counts: dict) -> str:
    """'3 matched, all skipped (2 hidden, 1 already scored)', or what was matched when nothing was."""
    reasons = ", ".join(f"{amount:,} {reason}" for reason, amount in sorted(counts["skipped_by_reason"].items()))
    return f"{counts['matched']:,} matched, all skipped ({reasons})" if reasons else f"{counts['matched']:,} matched"


def summary(manifest: dict) -> str:
    """The lines printed at the end of a run."""
    counts = manifest["counts"]
    skipped = f", {counts['skipped']:,} skipped" if counts["skipped"] else ""
    lines = [f"scored {counts['scored']:,} of {counts['matched']:,} inputs, {counts['failed']:,} failed{skipped} "
             f"in {manifest['seconds']:.1f} s ({manifest['images_per_second']:,.0f} img/s)"
             + "".join(f" on {device}" if len(counts.get("scored_on", {})) == 1 else ""
                       for device in counts.get("scored_on", {}))]
    if len(counts.get("scored_on", {})) > 1:
        lines.append("  scored on " + ", ".join(f"{device}: {amount:,}"
                                               for device, amount in sorted(counts["scored_on"].items())))
    names = list(counts["per_class"])  # the model's classes, in its card's order
    width = max(len(visible(name)) for name in names)
    for name in names:
        low = counts["low_confidence_per_class"][name]
        doubtful = f"  ({low:,} low confidence)" if low else ""
        lines.append(f"  {visible(name):<{width}}  {counts['per_class'][name]:>8,}{doubtful}")
    for error_type, amount in sorted(counts["failed_by_type"].items()):
        lines.append(f"  failed: {error_type}: {amount:,}")
    for reason, amount in sorted(counts["skipped_by_reason"].items()):
        lines.append(f"  skipped: {reason}: {amount:,}")
    if counts["duplicate_keys"]:
        what = ("records carry a key another record also carries (--key_feature)" if manifest["inputs"]["tfrecords"]
                else "files carry a key another file also carries (listed twice by their filesystem)")
        lines.append(f"WARNING: {counts['duplicate_keys']:,} {what}; each was scored, so those keys have more "
                     "than one row")
    if manifest["error_rate_exceeded"]:
        lines.append(f"ERROR: {manifest['error_rate']:.1%} of inputs failed, above --max_error_rate "
                     f"{manifest['max_error_rate']:.1%}; every output was still written")
    if not counts["invariant_holds"]:
        lines.append("ERROR: matched != scored + failed + skipped; some inputs are unaccounted for")
    if "candidate" in manifest:
        lines += _candidate_lines(manifest["candidate"])
    if "labels" in manifest:
        lines.append(accuracy.summary(manifest["labels"]))
    tables = "scores/, candidate/" if "candidate" in manifest else "scores/"
    lines.append(f"wrote {manifest['partition']} ({tables}, errors/, manifest.json, report.html, _SUCCESS)")
    lines.append(f"report: {manifest['partition'].rstrip('/')}/{report.REPORT}")
    return "\n".join(lines)
