"""Defines the scorer's typed configuration: argparse for our flags, the rest goes to Beam's PipelineOptions."""

import argparse
import dataclasses
import datetime
import os

from model.cli_types import count_or_auto, positive_int, probability, seconds, yes_no
from model.reading import DEFAULT_MAX_FILE_BYTES
from model.recipes import preprocessing
from model.runtimes import registry
from model.runtimes.model_files import DEFAULT_MODEL_PATH
from model.vocabulary import RECORD_KEY_FILENAME, RECORD_KEY_IMAGE, RECORD_KEY_RAW_PIXELS

# Defaults the readers share with the flags. They live here, not beside the readers, so that building the parser
# (and answering --help) imports no Beam.
READS_IN_FLIGHT = 64  # reads in flight per worker process (its read threads), and the connections each client keeps
COMPRESSIONS = ("auto", "none", "gzip", "zlib")  # of TFRecord files
REPORT_HISTORY = 14  # earlier nights the report compares tonight with
REPORT_IMAGES = 24  # least confident inputs a run keeps for the report's contact sheet


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """What one scoring run reads, writes and how it batches."""

    output: str
    run_date: str = ""
    skip_scored: bool = False
    max_error_rate: float = 0.05
    inputs: tuple = ()
    input_tfrecords: tuple = ()
    input_table: str = ""  # a Parquet or CSV table of image URIs (pipeline.reading.tables)
    uri_column: str = ""
    keep_columns: tuple = ()
    uri_roots: tuple = ()  # --uri_root: the prefixes a table's URIs must lie under (none: anywhere)
    model: str = DEFAULT_MODEL_PATH
    candidate_model: str = ""  # scored beside the model into candidate/, and compared with it
    labels: str = ""  # the truth for some inputs: each model's accuracy on them
    image_feature: str = RECORD_KEY_IMAGE
    raw_feature: str = RECORD_KEY_RAW_PIXELS
    key_feature: str = RECORD_KEY_FILENAME
    compression: str = "auto"
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    refuse_outside_links: bool = False
    max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS
    low_confidence: float = 0.5
    files_per_chunk: int = 256
    progress_seconds: float = 10.0
    share_model: bool = False
    require_gpu: bool = False
    runtime: str = None  # what serves --model; None: the first its card lists that is installed
    model_copies: int = 0
    model_threads: int = 0
    decode_threads: int = 0
    reads_in_flight: int = READS_IN_FLIGHT
    verbose: bool = False


# A switch: `--skip_scored` alone turns it on, and `--skip_scored=true|false` says either way, as a Dataflow Flex
# Template passes every parameter (deploy/dataflow/metadata.json).
SWITCH = {"nargs": "?", "const": True, "default": False, "type": yes_no}

# The numeric flags: (name, type, help); each defaults to the ScoreConfig field of its name.
_NUMBERS = (
    ("max_error_rate", probability, "above this share of failed inputs the run still writes everything, then exits 4"),
    ("max_pixels", positive_int, "largest source image (width x height) decoded; larger ones are errors"),
    ("max_file_bytes", positive_int, "larger files are error rows, refused before they are read (and the largest "
                                     "TFRecord record read from a compressed file)"),
    ("low_confidence", probability, "predictions below this confidence are counted per class in the manifest"),
    ("files_per_chunk", positive_int, "matched files handed to a worker at a time"),
    ("progress_seconds", seconds, "seconds between progress lines per worker (0: none)"),
    ("model_threads", count_or_auto, "the model's threads per worker process, TensorFlow's or onnxruntime's (0: "
                                     "cores / local worker processes for multi_processing runs, else the runtime's "
                                     "default)"),
    ("decode_threads", count_or_auto, "threads per worker process that decode photos (0: cores / local worker "
                                      "processes for local runs, 1 on remote runners)"),
    ("model_copies", count_or_auto, "with --share_model: how many shared copies per machine (0: one)"),
    ("reads_in_flight", positive_int, "reads of files on object stores (s3://, gs://, ...) in flight at once per "
                                      "worker process: more for a store far away"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-score",
        description="Score images with a Keras classifier and its model card (by default the shipped Fashion-MNIST "
                    "model) on Apache Beam; writes Parquet scores, errors, a manifest and a report. Flags not listed "
                    "here (--runner, --direct_num_workers, ...) go to Beam.")
    inputs = parser.add_argument_group("input (exactly one kind)")
    inputs.add_argument("--input", nargs="+", action="extend", default=[], metavar="GLOB_OR_DIR",
                        help="image files: globs or folders (recursive) on any Beam filesystem; "
                             "--input given again adds to the list")
    inputs.add_argument("--input_tfrecords", nargs="+", action="extend", default=[], metavar="GLOB",
                        help="TFRecord files of tf.train.Example")
    inputs.add_argument("--input_table", default="", metavar="TABLE",
                        help="a Parquet or CSV table (a file, a folder of files or a glob, any filesystem) that lists "
                             "one image URI a row in --uri_column; each row is one input, its --keep_columns carried "
                             "into its output row")
    inputs.add_argument("--uri_column", default="", metavar="COLUMN",
                        help="--input_table's column of image paths or URIs (relative ones: to the table file's "
                             "folder)")
    inputs.add_argument("--keep_columns", default="", metavar="A,B,C",
                        help="--input_table's columns to carry into every output row (their types kept)")
    inputs.add_argument("--uri_root", action="append", default=[], metavar="PREFIX",
                        help="a folder or URI prefix --input_table's URIs must lie under (repeatable); a URI outside "
                             "every root is an error row, never opened: give it for any table you did not write")
    inputs.add_argument("--image_feature", default=RECORD_KEY_IMAGE,
                        help="Example feature with the encoded image (PNG, JPEG, ...)")
    inputs.add_argument("--raw_feature", default=RECORD_KEY_RAW_PIXELS,
                        help="Example feature with 784 raw grey pixels (bytes, or integers 0-255), used when present")
    inputs.add_argument("--compression", choices=COMPRESSIONS, default="auto",
                        help="TFRecord compression; auto: gzip for .gz/.gzip, zlib for .zlib/.zz, else none")
    inputs.add_argument("--key_feature", default=RECORD_KEY_FILENAME,
                        help="Example feature used as the key; records without it get PATH:INDEX")
    parser.add_argument("--output", required=True,
                        help="root folder; the run writes OUTPUT/dt=RUN_DATE/ (scores/, errors/, manifest.json, "
                             "report.html, _SUCCESS)")
    # The default is resolved when the flags are parsed, never when the parser is built: the parser's text (--help,
    # the Flex Template's metadata) is the same on every day.
    parser.add_argument("--run_date", type=_date, default=None,
                        help="the partition this run writes, YYYY-MM-DD (default: today, by this machine's clock "
                             "in its time zone); a rerun replaces it whole")
    parser.add_argument("--skip_scored", **SWITCH,
                        help="skip image files (and table rows naming them) that this model version scored, with "
                             "the same path, size and modification time, in earlier complete partitions")
    parser.add_argument("--refuse_outside_links", **SWITCH,
                        help="a link to a file outside every local input is an error row (`link outside the "
                             "inputs`), never read; by default links to files are followed wherever they point")
    parser.add_argument("--model", default=DEFAULT_MODEL_PATH, help="a .keras or .onnx file with its .json card beside "
                        "it, on any Beam filesystem (default: the shipped model)")
    parser.add_argument("--runtime", default=None, choices=registry.NAMES,
                        help="serve --model on this runtime (the model's own file, or a copy its card lists; still "
                             "checked against the card's known answers); default: the first runtime its card lists "
                             "that is installed (a candidate always follows its own card)")
    parser.add_argument("--candidate_model", default="", metavar="MODEL",
                        help="a second carded model (.keras or .onnx) scored beside --model on the same inputs, read "
                             "and decoded once: its rows go to candidate/, and the manifest and report compare the "
                             "two (scores/ is as without it)")
    parser.add_argument("--labels", default="", metavar="FILE",
                        help="the truth for some inputs (CSV or Parquet with key and label columns): each model's "
                             "accuracy on them goes into the manifest and the report")
    parser.add_argument("--share_model", **SWITCH,
                        help="one model copy per machine, served to all its worker processes (large models)")
    parser.add_argument("--require_gpu", **SWITCH,
                        help="a worker that sees no GPU refuses to score (exit 2, one line) instead of scoring on CPU")
    parser.add_argument("--verbose", **SWITCH,
                        help="also show TensorFlow's start-up lines (hidden by default)")
    for name, kind, text in _NUMBERS:
        parser.add_argument(f"--{name}", type=kind, default=getattr(ScoreConfig, name), help=text)
    return parser


def report_parser() -> argparse.ArgumentParser:
    """The flags of `python -m pipeline.report`, which rebuilds a published partition's report.html."""
    parser = argparse.ArgumentParser(prog="fashion-report", description="(Re)builds report.html for a partition.")
    parser.add_argument("partition", help="a published partition: OUTPUT/dt=YYYY-MM-DD")
    parser.add_argument("--history", type=int, default=REPORT_HISTORY, help="earlier nights to compare with")
    parser.add_argument("--images", type=int, default=REPORT_IMAGES, help="least confident images to show")
    parser.add_argument("--to", default=None, help="write here instead of PARTITION/report.html")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="the truth for some of the night's inputs (CSV or Parquet with key and label columns): "
                             "the model's accuracy on them goes into the partition's _labels.json and its report")
    parser.epilog = ("Beam's filesystem options reach the buckets, as for the scorer: e.g. --s3_endpoint_url, "
                     "--s3_access_key_id, --s3_secret_access_key, --s3_region_name for an S3-compatible store.")
    return parser


def answer_help(parser: argparse.ArgumentParser, argv) -> None:
    """Prints the command's help and exits when argv asks for it: before the command imports Beam, which takes a
    second or more."""
    if {"-h", "--help"} & set(argv):
        parser.print_help()
        raise SystemExit(0)


def parse(argv, today=datetime.date.today) -> tuple:
    """Returns (ScoreConfig, the arguments left for Beam). Flag mistakes exit with status 2 and a message. `today`
    gives the date a run without --run_date writes."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if sum(map(bool, (args.input, args.input_tfrecords, args.input_table))) != 1:
        parser.error("give exactly one kind of input: --input (image files or folders), --input_tfrecords or "
                     "--input_table")
    if bool(args.input_table) != bool(args.uri_column):
        parser.error("--input_table and --uri_column go together: name the table and its column of image URIs")
    if (args.keep_columns or args.uri_root) and not args.input_table:
        parser.error("--keep_columns and --uri_root apply to --input_table only")
    if args.skip_scored and args.input_tfrecords:
        parser.error("--skip_scored works with --input image files and --input_table only (TFRecords have no "
                     "per-image fingerprint)")
    if args.model_copies and not args.share_model:
        parser.error("--model_copies only applies with --share_model")
    unknown = unknown_beam_flags(beam_args)
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)} (neither the scorer's nor Beam's; see --help)")
    fields = {f.name for f in dataclasses.fields(ScoreConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    config = ScoreConfig(**{**values, "run_date": args.run_date or today().isoformat(), "inputs": tuple(args.input),
                            "input_tfrecords": tuple(args.input_tfrecords), "model": _worker_path(args.model),
                            "keep_columns": tuple(name.strip() for name in args.keep_columns.split(",") if name.strip()),
                            "uri_roots": tuple(_worker_path(root) for root in args.uri_root),
                            "input_table": _worker_path(args.input_table),
                            "candidate_model": _worker_path(args.candidate_model)})
    return config, beam_args


def _worker_path(path: str) -> str:
    """A local path made absolute: the workers load the model, and a cluster's workers start in folders of their
    own."""
    from apache_beam.io.filesystems import FileSystems

    return os.path.abspath(path) if path and FileSystems.get_scheme(path) is None else path


def _date(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-22") from None


def unknown_beam_flags(beam_args) -> list:
    """The arguments no Beam PipelineOptions class defines; Beam itself would only log and drop them."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    for options_class in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        options_class._add_argparse_args(parser)  # The same registry PipelineOptions.get_all_options reads.
    _, unknown = parser.parse_known_args(beam_args)
    return unknown
