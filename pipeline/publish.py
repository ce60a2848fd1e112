"""Publishes a run: the staging folder, the manifest with its counts and invariant, the move into place, _SUCCESS."""

import dataclasses
import datetime
import json
import uuid

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from model.vocabulary import CLASS_NAMES
from pipeline import sinks

COUNTS = "_counts.json"
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
PUBLISHED = ("scores", "errors", MANIFEST)


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: str
    output: str
    staging: str
    manifest_base: dict


def start_run(config, beam_options, checked) -> RunInfo:
    """Names the run and its staging folder (inside the output, hidden) and records what the manifest will say."""
    now = datetime.datetime.now(datetime.timezone.utc)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    staging = FileSystems.join(config.output, f".staging-{run_id}")
    runner = {"name": str(beam_options.view_as(StandardOptions).runner)}
    if runner["name"] == "FnApiRunner":  # Only the local runner has these; elsewhere they would mislead.
        direct = beam_options.view_as(DirectOptions)
        runner.update(direct_num_workers=direct.direct_num_workers, direct_running_mode=direct.direct_running_mode)
    base = {
        "run_id": run_id,
        "started_at": now.isoformat(),
        "inputs": {"images": list(config.inputs), "tfrecords": list(config.input_tfrecords)},
        "runner": runner,
        "model": {"path": config.model, "sha256": checked.model_sha256, "version": checked.version},
        "low_confidence_threshold": config.low_confidence,
        "output": {"scores": FileSystems.join(config.output, "scores"),
                   "errors": FileSystems.join(config.output, "errors")},
    }
    return RunInfo(run_id, base["started_at"], config.output, staging, base)


def finish_run(run: RunInfo, seconds: float) -> dict:
    """Writes the manifest, moves the staged outputs into place (replacing an earlier run's whole), then _SUCCESS."""
    with FileSystems.open(FileSystems.join(run.staging, COUNTS), compression_type="uncompressed") as stream:
        counts = sinks.nest_counts(json.loads(stream.read() or b"{}"))
    manifest = dict(run.manifest_base, finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    seconds=round(seconds, 3), counts=_complete(counts))
    manifest["images_per_second"] = round(manifest["counts"]["matched"] / max(seconds, 1e-9), 1)
    with FileSystems.create(FileSystems.join(run.staging, MANIFEST)) as stream:
        stream.write(json.dumps(manifest, indent=2).encode())
    FileSystems.delete([FileSystems.join(run.staging, COUNTS)])
    _replace(run.staging, run.output)
    with FileSystems.create(FileSystems.join(run.output, SUCCESS)) as stream:
        stream.write(run.run_id.encode())
    return manifest


def _complete(counts: dict) -> dict:
    """Fills in zeros for what did not happen, and checks that every matched input was scored or failed."""
    complete = {"matched": counts.get("matched", 0), "scored": counts.get("scored", 0), "failed": counts.get("failed", 0)}
    complete["invariant_holds"] = complete["matched"] == complete["scored"] + complete["failed"]
    complete["per_class"] = {name: counts.get("class", {}).get(name, 0) for name in CLASS_NAMES}
    complete["low_confidence_per_class"] = {name: counts.get("low_confidence", {}).get(name, 0) for name in CLASS_NAMES}
    complete["low_confidence"] = sum(complete["low_confidence_per_class"].values())
    complete["failed_by_stage"] = counts.get("failed_by_stage", {})
    complete["failed_by_type"] = counts.get("failed_by_type", {})
    return complete


def _replace(staging: str, output: str) -> None:
    """Removes the earlier run's outputs, then renames every staged file into the output folder."""
    old = [FileSystems.join(output, name) for name in (SUCCESS,) + PUBLISHED]
    FileSystems.delete([path for path in old if FileSystems.exists(path)])
    staged = sorted(m.path for m in FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list)
    targets = [output + path[len(staging):] for path in staged]
    for folder in sorted({target.rsplit("/", 1)[0] for target in targets}):
        if not FileSystems.exists(folder):
            FileSystems.mkdirs(folder)
    FileSystems.rename(staged, targets)
    FileSystems.delete([staging])


def summary(manifest: dict) -> str:
    """The lines printed at the end of a run."""
    counts = manifest["counts"]
    lines = [f"scored {counts['scored']:,} of {counts['matched']:,} inputs, {counts['failed']:,} failed "
             f"in {manifest['seconds']:.1f} s ({manifest['images_per_second']:,.0f} img/s)"]
    width = max(len(name) for name in CLASS_NAMES)
    for name in CLASS_NAMES:
        low = counts["low_confidence_per_class"][name]
        lines.append(f"  {name:<{width}}  {counts['per_class'][name]:>8,}" + (f"  ({low:,} low confidence)" if low else ""))
    for error_type, amount in sorted(counts["failed_by_type"].items()):
        lines.append(f"  failed: {error_type}: {amount:,}")
    if not counts["invariant_holds"]:
        lines.append("ERROR: matched != scored + failed; some inputs are unaccounted for")
    lines.append(f"wrote {manifest['output']['scores']}, {manifest['output']['errors']} and {MANIFEST}")
    return "\n".join(lines)
