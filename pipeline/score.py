"""The scoring command: checks the run, takes the date's lock, runs the graph (pipeline.graph), publishes the
partition and exits with a code the README documents.

    python -m pipeline.score --input sample_inputs/images --output /tmp/scores
"""

import dataclasses
import errno
import logging
import os
import sys
import time

COMMAND_STARTED = time.monotonic()  # before Beam and TensorFlow are imported: the report's duration is the command's

from pipeline import console  # noqa: E402  (first: it quiets Beam before Beam is imported)

if __name__ == "__main__":
    from pipeline import options

    options.answer_help(options.build_parser(), sys.argv[1:])
console.quiet_beam_logging()

import apache_beam as beam  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import (  # noqa: E402
    DirectOptions, PipelineOptions, PortableOptions, StandardOptions)

from model.runtimes import model_files  # noqa: E402
from pipeline import graph, options, preflight, progress, publish, store_watch, timeline  # noqa: E402
from pipeline.outputs import comparison, counts, housekeeping, labels, partitions  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_INPUT, EXIT_ERROR_RATE, EXIT_BUSY = 0, 1, 2, 3, 4, 5
# Runners that hand the Python steps to SDK workers through Beam's job API (Spark, Flink, a job server).
PORTABLE_RUNNERS = ("PortableRunner", "SparkRunner", "FlinkRunner")
ENVIRONMENT_CACHE_MILLIS = 60_000


def pipeline_options(beam_args) -> PipelineOptions:
    """Beam options; without --runner, or with DirectRunner, local runs use the Python FnApiRunner, offline."""
    beam_options = PipelineOptions(beam_args)
    # Every use of Beam's filesystems outside the pipeline (checks, the date's lock, housekeeping, publishing, the
    # report) gets these options too: without them s3:// has no endpoint or credentials, and fails.
    FileSystems.set_options(beam_options)
    standard = beam_options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct"):
        # Beam 2.77's DirectRunner first tries to download the Prism runner; this machine and many CI hosts are
        # offline, and the Python runner gives the same results deterministically.
        standard.runner = "FnApiRunner"
        direct = beam_options.view_as(DirectOptions)
        direct.direct_num_workers = direct.direct_num_workers or 1
    elif standard.runner in PORTABLE_RUNNERS and not any(
            arg.split("=", 1)[0] == "--environment_cache_millis" for arg in beam_args):
        # Without it Spark starts new SDK workers (Python, Beam, TensorFlow) for every stage of every job
        # (docs/cluster.md has the figures). An idle worker goes after this long.
        beam_options.view_as(PortableOptions).environment_cache_millis = ENVIRONMENT_CACHE_MILLIS
    return beam_options


def worker_threads(config: options.ScoreConfig, beam_options: PipelineOptions) -> options.ScoreConfig:
    """Fills in the threads each worker process uses for the model and for decoding, where the user left them 0.

    Local worker processes share this machine's cores: each gets cores / workers of them (left at all cores, they
    slow each other down). A single local worker decodes on every core and leaves TensorFlow its default. Remote
    runners usually start one worker process per core, so each decodes on one thread.
    """
    direct = beam_options.view_as(DirectOptions)
    cores = os.cpu_count() or 1
    if beam_options.view_as(StandardOptions).runner != "FnApiRunner":
        model, decode = 0, 1
    elif direct.direct_running_mode == "multi_processing":
        model = decode = max(1, cores // (direct.direct_num_workers or cores))
    else:
        model, decode = 0, cores
    return dataclasses.replace(config, model_threads=config.model_threads or model,
                               decode_threads=config.decode_threads or decode)


def run(argv=None) -> int:
    """The CLI: checks everything it can before starting, runs the pipeline, publishes, prints a summary."""
    timeline.mark("command started")
    config, beam_args = options.parse(sys.argv[1:] if argv is None else argv)
    if config.verbose:  # inherited by local worker processes
        os.environ[console.VERBOSE_ENV] = "1"
    try:
        config, beam_options, model, labels_read = _checked(config, beam_args)
    except preflight.PreflightError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_INPUT if isinstance(error, preflight.NoInputError) else EXIT_USAGE
    try:
        watch = store_watch.StoreWatch(preflight.named_paths(config), stuck=lambda gone: _store_gone(config, gone,
                                                                                                   leave=True))
        with watch, housekeeping.date_lock(config.output, config.run_date):
            housekeeping.clear_leftovers(config.output, config.run_date)
            return _score_and_publish(config, beam_options, model, labels_read)
    except housekeeping.DateLocked as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BUSY
    except store_watch.StoreGone as gone:
        return _store_gone(config, str(gone))


def _store_gone(config: options.ScoreConfig, gone: str, leave: bool = False) -> int:
    """Says in one line that the store went away during the run; with `leave`, ends the process there and then (the
    run could not be interrupted: its threads wait on a store that will not answer)."""
    print(f"error: the store stopped answering during the run ({gone}); nothing of this run was published, "
          f"and {partitions.partition_path(config.output, config.run_date)} is as it was or, where the "
          "publish was cut short, is put back by the next run; run again once the store answers",
          file=sys.stderr, flush=True)
    if leave:
        os._exit(EXIT_FAILED)
    return EXIT_FAILED


def _checked(config: options.ScoreConfig, beam_args: list) -> tuple:
    """(config with its thread counts filled in, Beam's options, the checked model, the labels read or None); raises
    PreflightError."""
    beam_options = pipeline_options(beam_args)
    preflight.check_beam_options(beam_options)
    model = preflight.check(config)
    labels_read = preflight.read_labels(config)
    config = worker_threads(config, beam_options)
    if _worker_is_this_process(beam_options):
        preflight.load_model_here(config.model, config.model_threads, config.require_gpu, runtime=config.runtime)
        if config.candidate_model:
            preflight.load_model_here(config.candidate_model, config.model_threads, config.require_gpu,
                                      "--candidate_model")
    timeline.mark("checks done")
    return config, beam_options, model, labels_read


def _worker_is_this_process(beam_options: PipelineOptions) -> bool:
    direct = beam_options.view_as(DirectOptions)
    return (beam_options.view_as(StandardOptions).runner == "FnApiRunner"
            and (direct.direct_running_mode == "in_memory" or direct.direct_num_workers == 1))


def _score_and_publish(config: options.ScoreConfig, beam_options: PipelineOptions, model: preflight.CheckedModel,
                       labels_read=None) -> int:
    run_info = publish.start_run(config, beam_options, model)
    candidate = model.candidate
    started = time.monotonic()
    try:
        progress.reset()  # this process's tallies, for a run whose worker is this process
        with beam.Pipeline(options=beam_options) as pipeline:
            graph.build(pipeline, config, model.card, model.version, run_info.staging,
                        (candidate.card, candidate.version) if candidate else None)
            timeline.mark("graph built")
        timeline.mark("pipeline done")
        run_counts = counts.read(run_info.staging, model.spec.class_names)
        # Nothing was tried: an empty run must not replace a good one.
        if run_counts[counts.SCORED] + run_counts[counts.FAILED] == 0:
            publish.discard(run_info)
            print(f"nothing to score: {publish.skipped_text(run_counts)}; {run_info.partition} was left as it was",
                  file=sys.stderr)
            return EXIT_NO_INPUT
        sections = {}
        if candidate:
            sections["candidate"] = dict(run_info.manifest_base["candidate"], **comparison.section(
                run_counts, model.spec.class_names, candidate.spec.class_names,
                comparison.read_disagreements(run_info.staging)))
        if labels_read:
            sections["labels"] = labels.measure(run_info.staging, config.labels, labels_read,
                                                dict(run_info.manifest_base, **sections))
            labels.write(run_info.staging, sections["labels"])
        manifest = publish.finish_run(run_info, run_counts, time.monotonic() - started,
                                      time.monotonic() - COMMAND_STARTED, sections)
    except Exception as error:  # The partition in place stays untouched; say so rather than only dumping a trace.
        try:  # An object store that stopped answering would have Beam retry each call for minutes: ask it first.
            preflight.check_store_endpoints(preflight.named_paths(config), timeout=2.0)
        except preflight.PreflightError as gone:
            raise store_watch.StoreGone(str(gone)) from None
        publish.discard(run_info)
        return _failed(error, run_info.partition)
    timeline.mark("published")
    print(publish.summary(manifest))
    if not manifest["counts"]["invariant_holds"]:
        return EXIT_FAILED
    return EXIT_ERROR_RATE if manifest["error_rate_exceeded"] else EXIT_OK


def _failed(error: Exception, partition: str) -> int:
    """Says in one line why a run failed; a traceback only for what is not a known cause."""
    text = str(error)
    untouched = f"{partition} was left as it was and nothing was published"
    if "ModelFileError: " in text or isinstance(error, model_files.ModelFileError):  # raised in a worker's load
        detail = text.split("ModelFileError: ", 1)[-1].splitlines()[0]
        print(f"error: {detail}; {preflight.MODEL_HINT}; {untouched}", file=sys.stderr)
        return EXIT_USAGE
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in text:
        print(f"error: the disk is full (no space left on device) while writing the run; {untouched}; free some "
              "space and run again", file=sys.stderr)
        return EXIT_FAILED
    logging.exception("the pipeline failed")
    print(f"error: the pipeline failed ({type(error).__name__}: {text.splitlines()[0] if text else ''}); {untouched}",
          file=sys.stderr)
    return EXIT_FAILED


def main() -> None:
    code = run()
    # Every output is written, closed and published by now. What is left is the interpreter taking TensorFlow's and
    # Beam's modules apart, which takes ~1 s here and does nothing for the user; flush what is buffered and leave.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
