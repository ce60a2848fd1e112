"""Defines the scoring graph: inputs matched (pipeline.reading.matching) -> read and decoded into blocks, scored by
RunInference (pipeline.scoring.inference) -> scores/, errors/, _inputs/ (fingerprints), _sheet.parquet (the report's
contact sheet) and the run's counts, in one folder; with a candidate model, also candidate/ and _disagreements.parquet
(pipeline.scoring.candidate, pipeline.outputs.comparison).

    with beam.Pipeline(options=...) as pipeline:
        graph.build(pipeline, config, card, version, staging_folder)
"""

import apache_beam as beam

from model.cards import card_spec

from pipeline import options
from pipeline.outputs import comparison, counts, errors, scores_output, sheet
from pipeline.reading import kinds
from pipeline.scoring.candidate import CandidateModelHandler
from pipeline.scoring.inference import ScoreImages
from pipeline.scoring.model_handler import KerasModelHandler


def build(pipeline: beam.Pipeline, config: options.ScoreConfig, card: dict, version: str, folder: str,
          candidate: tuple = None) -> None:
    """Adds the scoring graph to `pipeline`, writing scores/, errors/, _inputs/ and the counts file under `folder`
    (the run's staging folder); with a `candidate` (its card and version), also candidate/ and the disagreements."""
    inputs = kinds.of(config)  # what the run reads: image files, TFRecords or a table's rows
    matched = inputs.match(pipeline, version, folder)
    read = inputs.reader()
    table_fields = inputs.output_fields()  # a table's table_row and kept columns, in every output row
    spec = card_spec.spec_from_card(card)
    settings = dict(share_across_processes=config.share_model, threads=config.model_threads,
                    copies=config.model_copies, require_gpu=config.require_gpu)
    handler = KerasModelHandler(config.model, spec.num_classes, **settings, runtime=config.runtime)
    scoring_candidate = None
    if candidate:
        candidate_card, candidate_version = candidate
        candidate_spec = card_spec.spec_from_card(candidate_card)
        scoring_candidate = (CandidateModelHandler(config.candidate_model, spec.class_names,
                                                   candidate_spec.class_names, **settings), candidate_spec)
    scored = matched.units | "Score" >> ScoreImages(handler, read, spec, config.max_pixels, config.decode_threads,
                                                   config.progress_seconds, config.reads_in_flight, scoring_candidate)
    _ = scored | "WriteScores" >> scores_output.WriteScores(folder, card, version, table_fields=table_fields)
    pairs = [matched.counts, scored | "CountScored" >> beam.FlatMap(
        counts.block_counts, config.low_confidence, spec.class_names, count_matched=inputs.counted_when_read)]
    if candidate:
        _ = (scored
             | "CandidateRows" >> beam.Map(lambda block: block.candidate)
             | "WriteCandidate" >> scores_output.WriteScores(folder, candidate_card, candidate_version,
                                                            scores_output.CANDIDATE_FOLDER, table_fields))
        _ = scored | "WriteDisagreements" >> comparison.WriteDisagreements(folder)
        pairs.append(scored | "CountCompared" >> beam.FlatMap(comparison.block_counts, spec.class_names,
                                                              candidate_spec.class_names))
    _ = scored | "WriteSheet" >> sheet.WriteSheet(folder)
    _ = (scored
         | "ErrorRows" >> beam.FlatMap(lambda block: block.errors)
         | "WriteErrors" >> errors.WriteErrors(folder, table_fields))
    if inputs.keys_may_repeat:  # e.g. TFRecords: a record's key is a feature, so several may carry the same one
        pairs.append(scored | "CountDuplicateKeys" >> counts.CountDuplicateKeys())
    _ = (pairs
         | "AllCounts" >> beam.Flatten()
         | "RunnerCounters" >> beam.Map(counts.counted)
         | "WriteCounts" >> counts.WriteCounts(folder))
