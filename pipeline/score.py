"""The scoring job: `build(pipeline, config, ...)` wires the graph; `run(argv)` is the CLI around it.

    python -m pipeline.score --input sample_inputs/images --output /tmp/scores
"""

import dataclasses
import logging
import os
import sys
import time


class _KnownNoise(logging.Filter):
    """Drops two warnings Beam 2.77 logs on every run here that say nothing about the user's job."""

    MESSAGES = ("apitools not found", "Resource module is not available")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.MESSAGES)


# Installed before Beam is imported: the first of those warnings is logged while `import apache_beam` runs.
logging.getLogger().addFilter(_KnownNoise())

import apache_beam as beam  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions  # noqa: E402

from pipeline import options, partitions, preflight, publish, sinks, sources  # noqa: E402
from pipeline.model_handler import KerasModelHandler  # noqa: E402
from pipeline.scoring import ScoreImages  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_INPUT, EXIT_ERROR_RATE = 0, 1, 2, 3, 4


def build(pipeline: beam.Pipeline, config: options.ScoreConfig, card: dict, version: str, folder: str) -> None:
    """Adds the scoring graph to `pipeline`, writing scores/, errors/, _inputs/ and the counts file under `folder`."""
    records, read_errors, matched, files = _read(pipeline, config, version)
    handler = KerasModelHandler(config.model, config.min_batch_size, config.max_batch_size, config.share_model,
                                config.model_threads, config.model_copies)
    batches, score_errors = records | "Score" >> ScoreImages(handler, config.max_pixels, config.progress_seconds)
    errors = (read_errors, score_errors) | "AllErrors" >> beam.Flatten()
    _ = batches | "WriteScores" >> sinks.WriteScores(FileSystems.join(folder, "scores"), card, version)
    _ = errors | "WriteErrors" >> sinks.WriteErrors(FileSystems.join(folder, "errors"))
    if files is not None:
        _ = files | "WriteFingerprints" >> sinks.WriteFingerprints(FileSystems.join(folder, partitions.INPUTS), version)
    counts = (
        matched,
        batches | "CountScored" >> beam.FlatMap(sinks.batch_counts, config.low_confidence),
        errors | "CountFailed" >> beam.FlatMap(sinks.error_counts),
    ) | "AllCounts" >> beam.Flatten()
    _ = counts | "WriteCounts" >> sinks.WriteCounts(FileSystems.join(folder, publish.COUNTS))


def _read(pipeline, config, version: str):
    """Returns (records, read error rows, counts, chunks of matched files or None) for the configured input."""
    if config.inputs:
        skip = partitions.AlreadyScored(config.output, config.run_date, version) if config.skip_scored else None
        return pipeline | "ReadImages" >> sources.ReadImageFiles(config.inputs, config.files_per_chunk, skip)
    return pipeline | "ReadTFRecords" >> sources.ReadTFRecords(
        config.input_tfrecords, config.image_feature, config.key_feature)


def pipeline_options(beam_args) -> PipelineOptions:
    """Beam options; without --runner, or with DirectRunner, local runs use the Python FnApiRunner, offline."""
    beam_options = PipelineOptions(beam_args)
    standard = beam_options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct"):
        # Beam 2.77's DirectRunner first tries to download the Prism runner; this machine and many CI hosts are
        # offline, and the Python runner gives the same results deterministically.
        standard.runner = "FnApiRunner"
        direct = beam_options.view_as(DirectOptions)
        direct.direct_num_workers = direct.direct_num_workers or 1
    return beam_options


def model_threads(config: options.ScoreConfig, beam_options: PipelineOptions) -> int:
    """TensorFlow threads per worker: the user's choice, else the machine's cores shared out among the local worker
    processes (each would otherwise start one thread per core, and they slow each other down), else TF's default."""
    direct = beam_options.view_as(DirectOptions)
    local = beam_options.view_as(StandardOptions).runner == "FnApiRunner"
    if config.model_threads or not local or direct.direct_running_mode != "multi_processing":
        return config.model_threads
    workers = direct.direct_num_workers or os.cpu_count()
    return max(1, (os.cpu_count() or 1) // workers)


def run(argv=None) -> int:
    """The CLI: checks everything it can before starting, runs the pipeline, publishes, prints a summary."""
    config, beam_args = options.parse(sys.argv[1:] if argv is None else argv)
    try:
        checked = preflight.check(config)
    except preflight.NoInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_INPUT
    except preflight.PreflightError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    beam_options = pipeline_options(beam_args)
    config = dataclasses.replace(config, model_threads=model_threads(config, beam_options))
    run_info = publish.start_run(config, beam_options, checked)
    started = time.monotonic()
    try:
        with beam.Pipeline(options=beam_options) as pipeline:
            build(pipeline, config, checked.card, checked.version, run_info.staging)
    except Exception as error:  # The partition in place stays untouched; say so rather than only dumping a trace.
        logging.exception("the pipeline failed")
        print(f"error: the pipeline failed ({type(error).__name__}: {error}); {run_info.partition} was left as it "
              f"was and nothing was published", file=sys.stderr)
        return EXIT_FAILED
    manifest = publish.finish_run(run_info, time.monotonic() - started)
    print(publish.summary(manifest))
    if not manifest["counts"]["invariant_holds"]:
        return EXIT_FAILED
    return EXIT_ERROR_RATE if manifest["error_rate_exceeded"] else EXIT_OK


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
