"""Defines a run's inputs as an object, one class per kind (image files and folders: pipeline.reading.sources;
TFRecord files: pipeline.reading.tfrecords; a table of URIs: pipeline.reading.tables), registered in
pipeline.reading.kinds. Each kind knows what preflight checks of it, how it is matched and read in the graph, the
columns it adds to every output row, how the manifest describes it, and how its counts are kept; graph, preflight and
publishing ask it. The report reads a picture back from the place its sheet row records (pipeline.report.pictures),
whatever kind read it. A new kind (WebDataset tar shards, say) is one class, in a module of its own, added to kinds."""

from pipeline.outputs import fingerprints


class InputError(ValueError):
    """An input that cannot be read as given (exit 2), in one line."""


class NoInput(InputError):
    """An input that holds nothing to score (exit 3)."""


class Inputs:
    """What every kind of input answers; `config` is the run's options.ScoreConfig."""

    flag = ""  # the command-line flag that names it
    option = ""  # the options.ScoreConfig field that holds it
    counted_when_read = False  # matched is counted as the inputs are read (TFRecords: records), not as listed
    keys_may_repeat = False  # two inputs may carry one key (TFRecords: the key is a feature): counted apart
    fingerprinted = False  # the run writes _inputs/ (what --skip_scored reads)
    manifest_key = ""  # its entry in the manifest's `inputs`, filled for a run of this kind

    def __init__(self, config):
        self.config = config

    def patterns(self) -> tuple:
        """What preflight lists, each under `flag`, to see that it names something to score."""
        return ()

    def check(self) -> None:
        """Checks of its own before any work; raises InputError or NoInput."""

    def named(self) -> list:
        """Every path it reads by name (where its stores are)."""
        return list(self.patterns())

    def match(self, pipeline, version: str, folder: str):
        """Adds its matching to the graph; returns pipeline.reading.matching.Matched (fingerprints written under
        `folder`, the staging folder, where the kind keeps them)."""
        raise NotImplementedError

    def reader(self):
        """unit, pool -> (key, payload, records.Source) per input and the unit's error rows (the blocks' `read`)."""
        raise NotImplementedError

    def output_fields(self) -> list:
        """Columns it adds to every row of scores/, candidate/ and errors/ (pyarrow fields)."""
        return []

    def identity(self) -> dict:
        """What an earlier manifest's `inputs` holds when its run read these same inputs (so that its _inputs index
        them: pipeline.outputs.fingerprints); a fingerprinted kind's."""
        return {}

    def already_scored(self, version: str):
        """With --skip_scored, the lookup of what earlier partitions scored of these inputs under `version`; else
        None."""
        config = self.config
        if not config.skip_scored or version is None:
            return None
        return fingerprints.AlreadyScored(config.output, config.run_date, version, self.identity())

    def manifest(self) -> dict:
        """The manifest's `inputs`: every kind's key, this one's filled."""
        return {"images": [], "tfrecords": []}

    # What a published partition's report asks, of the manifest's `inputs` (pipeline.reading.kinds.in_manifest).

    @classmethod
    def in_manifest(cls, inputs: dict) -> bool:
        """Whether a manifest's `inputs` describe a run of this kind."""
        return bool(cls.manifest_key and inputs.get(cls.manifest_key))

    @classmethod
    def manifest_words(cls, inputs: dict) -> str:
        """What the run read, as the report's run section says it."""
        return ", ".join(inputs.get(cls.manifest_key) or [])

    @classmethod
    def error_columns(cls, inputs: dict) -> list:
        """Columns of errors/, beyond the key and the error, that the report lists with a failed input."""
        return []

    @classmethod
    def listed_lines(cls, row: dict, inputs: dict) -> list:
        """A failed input as the report lists it, in lines (`row`: its errors/ row, error_columns included): its key,
        then anything shown under it; each escaped there."""
        return [row["key"]]
