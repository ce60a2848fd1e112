"""Defines the scoring graph: inputs matched (pipeline.reading.matching) -> read and decoded into blocks, scored by
RunInference (pipeline.scoring.inference) -> scores/, errors/, _inputs/ (fingerprints), _sheet.parquet (the report's
contact sheet) and the run's counts, in one folder.

    with beam.Pipeline(options=...) as pipeline:
        graph.build(pipeline, config, card, version, staging_folder)
"""

import apache_beam as beam

from model.cards import card_spec

from pipeline import options
from pipeline.outputs import counts, errors, fingerprints, scores_output
from pipeline.reading import matching, sources, tfrecords
from pipeline.report import sheet
from pipeline.scoring.inference import ScoreImages
from pipeline.scoring.model_handler import KerasModelHandler


def build(pipeline: beam.Pipeline, config: options.ScoreConfig, card: dict, version: str, folder: str) -> None:
    """Adds the scoring graph to `pipeline`, writing scores/, errors/, _inputs/ and the counts file under `folder`
    (the run's staging folder)."""
    if config.inputs:
        skip = (fingerprints.AlreadyScored(config.output, config.run_date, version, config.inputs)
                if config.skip_scored else None)
        match = matching.MatchInputs(config.inputs, config.files_per_chunk, True, skip, config.output, version,
                                     refuse_outside_links=config.refuse_outside_links)
        matched = pipeline | "MatchImages" >> match
        # links checked again when read
        read = sources.ReadImageFiles(config.max_file_bytes, match.rules.inside, config.reads_in_flight)
        _ = matched.fingerprints | "WriteFingerprints" >> fingerprints.WriteFingerprints(folder)
    else:  # One unit per TFRecord file, spread over the workers; its records are only counted once read.
        matched = pipeline | "MatchTFRecords" >> matching.MatchInputs(
            config.input_tfrecords, 1, False, output=config.output, spread=True,
            refuse_outside_links=config.refuse_outside_links)
        read = tfrecords.ReadTFRecordFiles(config.image_feature, config.key_feature, config.raw_feature,
                                           config.compression, config.max_file_bytes)
    spec = card_spec.spec_from_card(card)
    handler = KerasModelHandler(config.model, spec.num_classes, config.share_model, config.model_threads,
                                config.model_copies, config.require_gpu)
    scored = matched.units | "Score" >> ScoreImages(handler, read, spec, config.max_pixels, config.decode_threads,
                                                   config.progress_seconds, config.reads_in_flight)
    _ = scored | "WriteScores" >> scores_output.WriteScores(folder, card, version)
    _ = scored | "WriteSheet" >> sheet.WriteSheet(folder)
    _ = (scored
         | "ErrorRows" >> beam.FlatMap(lambda block: block.errors)
         | "WriteErrors" >> errors.WriteErrors(folder))
    pairs = [matched.counts, scored | "CountScored" >> beam.FlatMap(
        counts.block_counts, config.low_confidence, spec.class_names, count_matched=not config.inputs)]
    if not config.inputs:  # Record keys come from a feature, so several records may carry the same one.
        pairs.append(scored | "CountDuplicateKeys" >> counts.CountDuplicateKeys())
    _ = (pairs
         | "AllCounts" >> beam.Flatten()
         | "RunnerCounters" >> beam.Map(counts.counted)
         | "WriteCounts" >> counts.WriteCounts(folder))
