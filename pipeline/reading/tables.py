"""Defines table inputs (--input_table): a Parquet or CSV table (a file, a folder of files or a glob, on any Beam
filesystem) that lists one image URI per row (--uri_column) beside columns the caller keeps (--keep_columns).

Each row is one input: its URI is resolved (a relative one against the folder of the table file that holds it),
checked and read as the same file named on the command line would be, and its kept columns and its place in the
table (`table_row`: the file and the row's index) travel with it into its output row in scores/, candidate/ and
errors/. A row whose URI is null or empty, names no file, names a folder or a glob, or (with --uri_root) lies
outside every allowed root is one error row with its kept columns: never dropped, and never opened.

Tables stream: a Parquet file is read a row group at a time, its row groups spread over the workers as tasks of
their own; a CSV file is read by one worker, a block of rows at a time. No process holds a whole table.

With --skip_scored, a row is skipped when its file (resolved URI, size and modification time) is scored as it is now
by this model version in an earlier partition, as a folder's file is (pipeline.outputs.fingerprints): each row's
local file is stat'ed as it is listed, and the run's _inputs index the files its rows named. Only such a run writes
_inputs: without --skip_scored a table's local files are first looked at when they are read.
"""

import dataclasses
import functools
import os
import posixpath
import re
import stat
import typing

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from model.display import shortened, visible
from model.reading import lies_inside
from pipeline import progress, timeline
from pipeline.outputs import counts, fingerprints
from pipeline.reading import matching, sources
from pipeline.reading.inputs import Inputs, InputError, NoInput
from pipeline.reading.listing import key_for
from pipeline.reading.matching import Matched
from pipeline.records import TableRow, error_row, table_row_text

KINDS = {".parquet": "parquet", ".parq": "parquet", ".pq": "parquet", ".csv": "csv"}
# Columns every output row has; a kept column may not take one of these names.
OUTPUT_COLUMNS = ("key", "label", "label_index", "confidence", "probabilities", "model_version", "stage",
                  "error_type", "error_message", "table_row", "dt")
TABLE_ROW = pa.field("table_row", pa.struct([pa.field("file", pa.string()), pa.field("index", pa.int64())]))
_GLOB = re.compile(r"[*?\[]")
CSV_BLOCK_BYTES = 1 << 20  # a CSV file is parsed this much at a time
REMEMBERED_KEYS = 200_000  # with --skip_scored: keys a worker remembers having written fingerprints for


class TableError(InputError):
    """A table that cannot be read as asked (exit 2): one line that says what to change."""


class EmptyTable(TableError, NoInput):
    """The table names no file, or its files hold no row (exit 3)."""


@dataclasses.dataclass(frozen=True)
class Table:
    """A checked table input: its files (sorted), the URI column, the kept columns as Arrow fields (their types in
    the table; a CSV's as Arrow infers them), and the roots its URIs must lie in (none: any)."""

    files: tuple
    uri_column: str
    kept: tuple  # pa.Field per kept column, in --keep_columns order
    roots: tuple = ()

    def output_fields(self) -> list:
        """The columns a table run adds to every output row: table_row, then the kept columns (nullable)."""
        return [TABLE_ROW] + [field.with_nullable(True) for field in self.kept]

    @property
    def kept_names(self) -> tuple:
        return tuple(field.name for field in self.kept)


def kind_of(path: str) -> str:
    """parquet or csv, by the file name's suffix; TableError otherwise."""
    kind = KINDS.get(os.path.splitext(path.rstrip("/"))[1].lower())
    if kind is None:
        raise TableError(f"--input_table: {visible(path)} is neither Parquet (.parquet) nor CSV (.csv); give a table "
                         "in one of those")
    return kind


def table_files(table: str) -> list:
    """The files of a table: the file itself, a folder's files (not hidden, not starting with `_` as Spark's _SUCCESS
    does), or what a glob matches; sorted."""
    if FileSystems.get_scheme(table) is None:
        path = os.path.abspath(table)
        if os.path.isdir(path):
            return sorted(entry.path for entry in os.scandir(path)
                          if entry.is_file() and not entry.name.startswith((".", "_")))
        if os.path.isfile(path):
            return [path]
        pattern = path
    else:
        pattern = table + "*" if table.endswith("/") else table
    found = FileSystems.match([pattern])[0].metadata_list
    return sorted(metadata.path for metadata in found
                  if not posixpath.basename(metadata.path).startswith((".", "_")))


def check(table: str, uri_column: str, keep: tuple, roots: tuple = ()) -> Table:
    """The table as a run reads it; raises TableError (exit 2) or EmptyTable (exit 3), before any work."""
    files = table_files(table)
    if not files:
        raise EmptyTable(f"--input_table {visible(table)} names no file; give a Parquet or CSV file, a folder of them "
                         "or a glob")
    for name in keep:
        if name in OUTPUT_COLUMNS:
            raise TableError(f"--keep_columns: {visible(name)!r} is the name of an output column; rename it in the "
                             f"table, or leave it out (output columns: {', '.join(OUTPUT_COLUMNS)})")
        if name == uri_column:
            raise TableError(f"--keep_columns: {visible(name)!r} is the URI column; every output row has it as `key`")
    if len(set(keep)) != len(keep):
        raise TableError("--keep_columns names a column twice")
    first, rows = None, 0
    for path in files:
        schema, count = _schema_and_rows(path, uri_column, keep)
        if first is None:
            first = schema
        elif not schema.equals(first):
            raise TableError(f"--input_table: {visible(path)} has other columns or types than {visible(files[0])} "
                             f"({_describe(schema)} against {_describe(first)}); give files of one schema")
        rows += count
    if not rows:
        raise EmptyTable(f"--input_table {visible(table)} holds no row")
    return Table(tuple(files), uri_column, tuple(first.field(name) for name in keep), tuple(roots))


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{visible(field.name)}: {field.type}" for field in schema)


def _schema_and_rows(path: str, uri_column: str, keep: tuple) -> tuple:
    """(the schema of the URI and kept columns, the file's rows: None for a CSV, counted as it streams)."""
    kind = kind_of(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            with FileSystems.open(path, compression_type="uncompressed") as stream:
                metadata = pq.ParquetFile(stream).metadata
                schema, rows = metadata.schema.to_arrow_schema(), metadata.num_rows
        else:
            schema, rows = _csv_schema(path, uri_column, keep)
    except TableError:
        raise
    except Exception as error:  # unreadable, not Parquet inside, not CSV
        raise TableError(f"--input_table: {visible(path)} cannot be read as {kind} ({type(error).__name__}: "
                         f"{visible(str(error).splitlines()[0] if str(error) else '')})") from None
    for name in (uri_column, *keep):
        if schema.get_field_index(name) < 0:
            flag = "--uri_column" if name == uri_column else "--keep_columns"
            raise TableError(f"{flag}: {visible(path)} has no column {visible(name)!r} (its columns: "
                             f"{', '.join(visible(n) for n in schema.names)})")
    uri_type = schema.field(uri_column).type
    if not (pa.types.is_string(uri_type) or pa.types.is_large_string(uri_type) or pa.types.is_binary(uri_type)):
        raise TableError(f"--uri_column: {visible(uri_column)!r} in {visible(path)} holds {uri_type}, not strings; "
                         "name the column that holds each image's path or URI")
    return pa.schema([schema.field(name) for name in (uri_column, *keep)]), rows


def _csv_schema(path: str, uri_column: str, keep: tuple) -> tuple:
    """A CSV file's column types as Arrow infers them from its first block (URI and text columns as bytes, decoded
    row by row, so that a row that is not UTF-8 fails alone), and 1 when it has a row, else 0."""
    import pyarrow.csv as pcsv

    with FileSystems.open(path, compression_type="uncompressed") as stream:
        reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                               convert_options=pcsv.ConvertOptions(column_types={uri_column: pa.binary()},
                                                                   check_utf8=False))
        schema = reader.schema
        has_rows = any(batch.num_rows for batch in reader)
    fields = [pa.field(field.name, pa.string()) if pa.types.is_binary(field.type) else field for field in schema]
    return pa.schema(fields), int(has_rows)


class Task(typing.NamedTuple):
    file: str
    group: int  # a Parquet row group, or -1: the whole (CSV) file
    first: int  # the index of the task's first row in its file


class _PlanTasks(beam.DoFn):
    """A table file -> one task per Parquet row group (read by whichever worker gets it), or one per CSV file."""

    def process(self, path: str):
        for task in self._plan(path):
            progress.tasks_planned(1)
            yield task

    def finish_bundle(self):
        progress.tasks_planned(0, finished=True)

    def _plan(self, path: str):
        if kind_of(path) == "csv":
            yield Task(path, -1, 0)
            return
        import pyarrow.parquet as pq

        with FileSystems.open(path, compression_type="uncompressed") as stream:
            metadata = pq.ParquetFile(stream).metadata
        first = 0
        for group in range(metadata.num_row_groups):
            yield Task(path, group, first)
            first += metadata.row_group(group).num_rows


def task_rows(task: Task, table: Table):
    """(index, URI or None, kept (name, value) pairs, None or (error type, message)) for each row of a task,
    streamed."""
    names = (table.uri_column, *table.kept_names)
    if task.group < 0:
        yield from _csv_rows(task, table, names)
        return
    import pyarrow.parquet as pq

    with FileSystems.open(task.file, compression_type="uncompressed") as stream:
        index = task.first
        for batch in pq.ParquetFile(stream).iter_batches(row_groups=[task.group], columns=list(names)):
            columns = [batch.column(name).to_pylist() for name in names]
            for uri, *kept in zip(*columns):  # Parquet: text arrives decoded, values typed
                yield index, uri, tuple(zip(names[1:], kept)), None
                index += 1


def _csv_rows(task: Task, table: Table, names: tuple):
    """A CSV file's rows, its text read as bytes and decoded row by row. Its kept columns take the types Arrow
    inferred from its first block; where a later block holds a value that is not of its column's type, the file is
    read again from that block's first row with every kept column as text, and each value converted alone, so that
    only the rows with such a value fail (`bad value`), not the rest of the file."""
    import pyarrow.csv as pcsv

    typed = {field.name: field.type for field in table.kept if not pa.types.is_string(field.type)}
    index, by_value = 0, False
    while True:
        types = {name: pa.binary() for name in names} if by_value else {
            **{name: typed.get(name, pa.binary()) for name in names[1:]}, names[0]: pa.binary()}
        try:
            with FileSystems.open(task.file, compression_type="uncompressed") as stream:
                batches = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                        convert_options=pcsv.ConvertOptions(include_columns=list(names),
                                                                            column_types=types, check_utf8=False))
                seen = 0  # rows of the file passed, this reading
                for batch in batches:
                    rows = list(zip(*(batch.column(name).to_pylist() for name in names)))
                    for values in rows[max(index - seen, 0):]:
                        yield (index, *_decoded_row(values, names, typed if by_value else {}))
                        index += 1
                    seen += len(rows)
            return
        except pa.ArrowInvalid as error:
            if by_value or "conversion error" not in str(error):
                raise
            by_value = True


# What Arrow's CSV reader reads as null (pyarrow.csv.ConvertOptions().null_values).
_CSV_NULLS = frozenset(("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "N/A",
                        "NA", "NULL", "NaN", "n/a", "nan", "null"))


def _decoded_row(values: tuple, names: tuple, convert: dict) -> tuple:
    """(URI or None, kept pairs, None or (error type, message)) of one CSV row: text arrives as bytes and is decoded
    here; a kept column named in `convert` is converted to its type here too."""
    decoded, problem = [], None
    for name, value in zip(names, values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                problem = problem or ("not UTF-8", f"the column {visible(name)!r} is not UTF-8 in this row")
                value = value.decode("utf-8", "backslashreplace")
            else:
                if name in convert:
                    value, bad = _converted(value, convert[name])
                    if bad:
                        problem = problem or ("bad value", f"the column {visible(name)!r} holds "
                                              f"{visible(shortened(bad, 60))!r}, not {convert[name]} as the "
                                              "table's first rows do")
        decoded.append(value)
    return decoded[0], tuple(zip(names[1:], decoded[1:])), problem


def _converted(text: str, kind: pa.DataType) -> tuple:
    """(the CSV value `text` as a value of `kind`, or None with the text when it is not one)."""
    if text in _CSV_NULLS:
        return None, None
    try:
        return pa.array([text], pa.string()).cast(kind)[0].as_py(), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None, text


def resolve(uri: str, table_file: str) -> str:
    """The path or URI a row names: a relative one against the folder of the table file that holds it, `file://`
    as a local path, `..` resolved."""
    if uri.startswith("/") and "/." not in uri and "//" not in uri and not uri.endswith("/"):
        return uri  # already absolute and normal: most rows of a big local table
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if FileSystems.get_scheme(uri) is not None:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{posixpath.normpath(rest)}" if rest else uri
    if uri.startswith("/"):  # a local path, whichever filesystem holds the table
        return os.path.abspath(uri)
    if FileSystems.get_scheme(table_file) is not None:
        scheme, rest = table_file.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), uri))}"
    return os.path.abspath(os.path.join(os.path.dirname(table_file), uri))


def local_roots(roots: tuple) -> tuple:
    """The real paths of the local --uri_root prefixes (a file a row names must lie in one of them)."""
    return tuple(os.path.realpath(root) for root in roots if FileSystems.get_scheme(root) is None)


def entry_for(uri, table_row: TableRow, table_file: str, roots: tuple, real_roots: tuple):
    """What one row names, as a listing entry: (path, size, modified, table_row) for a file to read, else its error
    row (kept columns and table_row included)."""
    if uri is None or not uri.strip():
        return error_row("", "read", "no uri", "the row's URI is empty", table_row)
    path = resolve(uri, table_file)
    key = key_for(path)
    if _GLOB.search(uri):
        return error_row(key, "read", "not a file", "the URI is a glob; a table names one file a row", table_row)
    remote = not path.startswith("/") and FileSystems.get_scheme(path) is not None
    if roots and not (_remote_inside(path, roots) if remote else lies_inside(os.path.realpath(path), real_roots)):
        return error_row(key, "read", "outside the allowed roots", "the URI lies outside every --uri_root; it was "
                         "not opened", table_row)
    if remote:
        found = [metadata for metadata in FileSystems.match([path])[0].metadata_list if metadata.path == path]
        if not found:
            return error_row(key, "read", "missing", "no file has this URI (a folder or prefix is not a file)",
                             table_row)
        return path, found[0].size_in_bytes, found[0].last_updated_in_seconds, table_row
    # A local file is checked as it is opened (pipeline.reading.sources: a regular file, its size capped, a folder or
    # a missing file one error row), not listed first: a table names its files one a row, and a stat each was 10% of
    # a table run of small PNGs.
    return path, None, None, table_row


def _remote_inside(uri: str, roots: tuple) -> bool:
    return any(uri.startswith(root if root.endswith("/") else root + "/") for root in roots
               if FileSystems.get_scheme(root) is not None)


class _ReadTasks(beam.DoFn):
    """Tasks -> units of up to unit_size entries (a file to read with its table row, or an error row), the counts
    (every row is matched) and, with --skip_scored, fingerprint tables: rows whose file an earlier partition scored
    as it is now (`already_scored`) are counted as skipped and carried forward, as a folder's files are."""

    def __init__(self, table: Table, unit_size: int, already_scored=None, version: str = None):
        self.table, self.unit_size = table, unit_size
        self.already_scored, self.version = already_scored, version
        self.real_roots = None

    def setup(self):
        self.real_roots = local_roots(self.table.roots)
        self.written = set()  # keys this worker has written fingerprints for (up to REMEMBERED_KEYS)

    def process(self, task: Task):
        timeline.mark("listing files")
        # Rows are looked up in the history a sorted batch at a time, as a folder's files are.
        batch_size = matching.LOOKUP_BATCH if self.already_scored is not None else self.unit_size
        batch, rows = [], 0
        try:
            for index, uri, kept, problem in task_rows(task, self.table):
                table_row = TableRow(task.file, index, kept)
                if problem:
                    batch.append(error_row(key_for(uri or ""), "read", *problem, table_row))
                else:
                    batch.append(entry_for(uri, table_row, task.file, self.table.roots, self.real_roots))
                rows += 1
                if len(batch) == batch_size:
                    yield from self._flush(batch)
                    batch = []
        except Exception as error:  # a file that stops parsing part way: the rest of it is one error row
            rows += 1
            batch.append(error_row(key_for(task.file), "read", "unreadable table", f"the table's rows from "
                                   f"{task.first + rows - 1} on cannot be read ({type(error).__name__}: "
                                   f"{str(error).splitlines()[0] if str(error) else ''})",
                                   TableRow(task.file, task.first + rows - 1, tuple((f.name, None)
                                                                                    for f in self.table.kept))))
        yield from self._flush(batch)
        progress.listed(0, task_done=True)

    def _flush(self, batch: list):
        if not batch:
            return
        skipped = {}
        if self.already_scored is not None:
            batch, fingerprint_table, carried = self._look_up(batch)
            if carried:
                skipped["already scored"] = carried
            if fingerprint_table is not None:
                yield beam.pvalue.TaggedOutput("fingerprints", fingerprint_table)
        for pair in counts.listing_counts(len(batch) + sum(skipped.values()), skipped):
            yield beam.pvalue.TaggedOutput("counts", pair)
        progress.listed(len(batch))
        for start in range(0, len(batch), self.unit_size):
            yield batch[start:start + self.unit_size]

    def _look_up(self, batch: list) -> tuple:
        """(the batch less the rows whose file is scored as it is now, the fingerprints of its files, how many rows
        were left out). A local file is stat'ed here (a table run without --skip_scored leaves that to the read); one
        that cannot be is left for the read to fail on, with its reason."""
        files = {}  # key -> (size, modified) of each file the batch names, once however many rows name it
        keyed = {}  # position in the batch -> key, for each row whose file was looked at
        for at, entry in enumerate(batch):
            if isinstance(entry, dict):
                continue
            path, size, modified, table_row = entry
            if size is None:
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(status.st_mode):
                    continue
                size, modified = status.st_size, status.st_mtime
                batch[at] = (path, size, modified, table_row)
            keyed[at] = key_for(path)
            files.setdefault(keyed[at], (size, modified))
        if not files:
            return batch, None, 0
        keys = sorted(files)
        sizes, modified = [files[key][0] for key in keys], [files[key][1] for key in keys]
        scored_by = self.already_scored.scored_by(keys, sizes, modified)
        carried = {key for key, run in zip(keys, scored_by) if run is not None}
        skipped = {at for at, key in keyed.items() if key in carried}
        kept = [entry for at, entry in enumerate(batch) if at not in skipped]
        return kept, self._fingerprints(keys, sizes, modified, scored_by), len(skipped)

    def _fingerprints(self, keys: list, sizes: list, modified: list, scored_by) -> pa.Table:
        """The fingerprints of the files this worker has not written yet (a table may name one file in many rows:
        its index keeps one row for it, not one per table row), or None."""
        new = [at for at, key in enumerate(keys) if key not in self.written]
        if len(self.written) + len(new) > REMEMBERED_KEYS:
            self.written.clear()  # memory stays bounded; a file named again later is written again, harmlessly
        self.written.update(keys[at] for at in new)
        if not new:
            return None
        return fingerprints.table([keys[at] for at in new], [sizes[at] for at in new],
                                  [modified[at] for at in new], self.version, [scored_by[at] for at in new])


class MatchTable(beam.PTransform):
    """A checked Table -> Matched(units, counts, fingerprints): its files' tasks spread over the workers, each read
    as it streams into units that flow straight on to scoring. With `already_scored` (--skip_scored), rows whose file
    is scored as it is now are left out and every file's fingerprint is kept (under `version`)."""

    def __init__(self, table: Table, unit_size: int = 256, already_scored=None, version: str = None):
        super().__init__()
        self.table, self.unit_size = table, unit_size
        self.already_scored, self.version = already_scored, version

    def expand(self, pipeline):
        read = (pipeline
                | "TableFiles" >> beam.Create(list(self.table.files))
                | "PlanTableTasks" >> beam.ParDo(_PlanTasks())
                | "SpreadTableTasks" >> beam.Reshuffle()
                | "ReadTableTasks" >> beam.ParDo(_ReadTasks(self.table, self.unit_size, self.already_scored,
                                                            self.version))
                .with_outputs("counts", "fingerprints", main="units"))
        return Matched(read.units, read.counts, read.fingerprints)


class TableInputs(Inputs):
    """--input_table: each row of a Parquet or CSV table one input, its kept columns carried (see above)."""

    flag, option = "--input_table", "input_table"
    manifest_key = "table"

    def named(self) -> list:
        return [self.config.input_table]

    @functools.cached_property
    def _checked(self) -> Table:
        config = self.config
        return check(config.input_table, config.uri_column, config.keep_columns, config.uri_roots)

    def table(self) -> Table:
        """The table checked (once: its files' metadata read)."""
        return self._checked

    def check(self) -> None:
        self.table()

    @property
    def fingerprinted(self) -> bool:  # only with --skip_scored are the rows' files stat'ed as they are listed
        return self.config.skip_scored

    def identity(self) -> dict:  # the same table file(s) and URI column: its kept columns and roots may change
        return {"table": {"table": self.config.input_table, "uri_column": self.config.uri_column}}

    def match(self, pipeline, version: str, folder: str):
        config = self.config
        skip = self.already_scored(version)
        matched = pipeline | "MatchTable" >> MatchTable(self.table(), config.files_per_chunk, skip, version)
        if skip is not None:
            _ = matched.fingerprints | "WriteFingerprints" >> fingerprints.WriteFingerprints(folder)
        return matched

    def reader(self):
        config = self.config
        return sources.ReadImageFiles(config.max_file_bytes, local_roots(config.uri_roots) or None,
                                      config.reads_in_flight)

    def output_fields(self) -> list:
        return self.table().output_fields()

    @classmethod
    def manifest_words(cls, inputs: dict) -> str:
        table = inputs["table"]
        kept = f"; kept: {', '.join(table['keep_columns'])}" if table["keep_columns"] else ""
        return f"{table['table']} (column {table['uri_column']}{kept})"

    @classmethod
    def error_columns(cls, inputs: dict) -> list:
        return ["table_row", *inputs["table"]["keep_columns"]]

    @classmethod
    def listed_lines(cls, row: dict, inputs: dict) -> list:  # with its table row and kept columns under the key
        where = row.get("table_row")
        if where is None:
            return [row["key"]]
        kept = [(name, row.get(name)) for name in inputs["table"]["keep_columns"]]
        return [row["key"] or "(no URI)", table_row_text(where, kept)]

    def manifest(self) -> dict:
        config = self.config
        return {**super().manifest(), "table": {"table": config.input_table, "uri_column": config.uri_column,
                                                "keep_columns": list(config.keep_columns),
                                                "uri_roots": list(config.uri_roots)}}
