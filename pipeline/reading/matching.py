"""Defines matching as Beam steps: the run's inputs -> listing tasks spread over the workers -> units of files that
flow straight on to scoring, with --skip_scored's already-scored files left out on the way.

Planning looks at the top of each input only: every sub-folder (of a glob's: one that could hold a match) becomes a
task of its own, and the files at the top are classified there and handed on in ready-made tasks of up to PLAN_CHUNK
entries; an object store's input (no folders there to split on) is one task, listed by Beam's filesystem on the
worker that gets it. The tasks are reshuffled, so the workers share them; each walks its folder and emits units as it
goes, in the same step as the scoring that follows (no shuffle between them), so the first block is scored while the
rest is still being listed, and no worker holds more than a batch of a local listing (Beam lists an object store's
prefix into one list). A file that an earlier input already lists is skipped as listed twice, by asking that input
(`listing.lists`), not by remembering every name.
"""

import os
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import progress, timeline
from pipeline.outputs import counts, fingerprints
from pipeline.reading import listing
from pipeline.reading.listing import FOLDER, key_for

_COUNTS, _FINGERPRINTS = "counts", "fingerprints"  # output tags of the listing step
# Top-level entries planning hands on in one task; and files looked up in the history at a time (sorted, a batch is
# one key range, and one row group of the fingerprints this run writes).
PLAN_CHUNK = 4096
LOOKUP_BATCH = 8192


class Task(typing.NamedTuple):
    spec: int  # which input it comes from
    folder: str  # a local folder to walk, an object store's input to list, or "" when the entries are here
    entries: tuple = ()  # (path, entry) pairs, for the top of an input


class Matched(typing.NamedTuple):
    units: beam.PCollection  # lists of (path, size, modification time) and error rows
    counts: beam.PCollection  # (name, amount) pairs of pipeline.outputs.counts: matched, skipped, skipped by reason
    fingerprints: beam.PCollection  # fingerprint tables of the files this run reads


class _PlanTasks(beam.DoFn):
    def __init__(self, rules: listing.Rules):
        self.rules = rules

    def process(self, numbered):
        for task in self._plan(numbered):
            progress.tasks_planned(1)
            yield task

    def finish_bundle(self):
        progress.tasks_planned(0, finished=True)

    def _plan(self, numbered):
        index, spec = numbered
        if spec.kind != "file" and FileSystems.get_scheme(spec.path) is None:
            root, matches = listing.walk_root(spec)
            top = listing.level(root, self.rules) if os.path.isdir(root) else ()
            ready = []
            for path, entry in top:
                if entry == FOLDER:
                    if matches.may_hold(path):  # a glob's folder that can hold no match is never listed
                        yield Task(index, path)
                elif path is None or matches(path):
                    ready.append((path, entry))
                    if len(ready) == PLAN_CHUNK:
                        yield Task(index, "", tuple(ready))
                        ready = []
            if ready:
                yield Task(index, "", tuple(ready))
            return
        if spec.kind == "file":
            yield Task(index, "", tuple(listing.spec_entries(spec, self.rules)))
        else:  # an object store's folder or pattern: listed by whichever worker gets the task
            yield Task(index, spec.path)


class _ListTasks(beam.DoFn):
    """Tasks -> units of up to unit_size entries (main), counts (_COUNTS) and fingerprint tables (_FINGERPRINTS)."""

    def __init__(self, specs: list, unit_size: int, count_files: bool, already_scored, version: str,
                 rules: listing.Rules):
        self.specs, self.unit_size, self.count_files = specs, unit_size, count_files
        self.already_scored, self.version, self.rules = already_scored, version, rules

    def process(self, task: Task):
        timeline.mark("listing files")
        entries = task.entries
        if task.folder and FileSystems.get_scheme(task.folder) is not None:
            entries = listing.spec_entries(self.specs[task.spec], self.rules)
        elif task.folder:
            _, matches = listing.walk_root(self.specs[task.spec])
            entries = listing.walk_matching(task.folder, matches, self.rules)
        batch = _Batch()
        for path, entry in entries:
            if path is not None and not isinstance(entry, str) and self._listed_before(task.spec, path):
                entry = "listed twice"
            batch.add(entry)
            if len(batch.files) >= LOOKUP_BATCH:
                yield from self._flush(batch)
                batch = _Batch()
        last = list(self._flush(batch))  # one batch at most; the task's count is complete before it is scored
        progress.listed(0, task_done=True)
        yield from last

    def _listed_before(self, index: int, path: str) -> bool:
        return any(listing.lists(spec, path, self.rules) for spec in self.specs[:index])

    def _flush(self, batch: "_Batch"):
        # Each key made once; sorted by key alone, since entries (text or bytes paths) cannot be compared.
        keyed = sorted(((key_for(entry[0]), entry) for entry in batch.files), key=lambda pair: pair[0])
        batch.files = [entry for _, entry in keyed]
        keys = [key for key, _ in keyed]
        # Equal keys are counted within the batch, where sorting makes them neighbours, not over the whole run: that
        # would shuffle every key of every image run. Keys are one-to-one with paths and a path two inputs name is
        # skipped as listed twice, so equal keys can only come from one listing that names a file twice (an object
        # store's), and a listing's repeats come together. (TFRecords: their records' keys are counted once read.)
        repeats = sum(before == after for before, after in zip(keys, keys[1:])) if self.count_files else 0
        sizes = [size for _, size, _ in batch.files]
        modified = [when for _, _, when in batch.files]
        carried = {}  # position in the batch -> the run that scored the file as it is
        if self.already_scored is not None and batch.files:
            scored_by = self.already_scored.scored_by(keys, sizes, modified)
            carried = {at: run for at, run in enumerate(scored_by) if run is not None}
            if carried:
                batch.skipped["already scored"] = batch.skipped.get("already scored", 0) + len(carried)
        for pair in counts.listing_counts(batch.met, batch.skipped, self.count_files, repeats):
            yield beam.pvalue.TaggedOutput(_COUNTS, pair)
        if batch.files and self.version is not None:  # read tonight, or carried forward with the run that scored it
            yield beam.pvalue.TaggedOutput(_FINGERPRINTS, fingerprints.table(
                keys, sizes, modified, self.version, [carried.get(at) for at in range(len(keys))]))
        found = [entry for at, entry in enumerate(batch.files) if at not in carried] + batch.errors
        if self.count_files:  # (TFRecords: records are only known once read)
            progress.listed(len(found))
        for start in range(0, len(found), self.unit_size):
            yield found[start:start + self.unit_size]


class _Batch:
    def __init__(self):
        self.files, self.errors, self.met = [], [], 0
        self.skipped = {}

    def add(self, entry) -> None:
        self.met += 1
        if isinstance(entry, str):
            self.skipped[entry] = self.skipped.get(entry, 0) + 1
        elif isinstance(entry, dict):
            self.errors.append(entry)
        else:
            self.files.append(entry)


class MatchInputs(beam.PTransform):
    """Command-line inputs -> Matched(units, counts, fingerprints).

    Image files: units go straight on to scoring in the step that lists them. TFRecord files (spread=True): each file
    is a unit, and the units are reshuffled, so that the files, not only the folders, spread over the workers.
    `version` is the model version fingerprints are written for (None: no fingerprints). With
    `refuse_outside_links`, links to files outside every input are error rows (--refuse_outside_links).
    """

    def __init__(self, inputs, unit_size: int = 256, count_files: bool = True, already_scored=None,
                 output: str = None, version: str = None, spread: bool = False, refuse_outside_links: bool = False):
        super().__init__()
        self.specs = [listing.input_spec(text) for text in inputs]
        self.unit_size, self.count_files, self.already_scored = unit_size, count_files, already_scored
        output = os.path.abspath(output) if output and FileSystems.get_scheme(output) is None else output
        self.rules = listing.Rules(output, listing.link_roots(self.specs) if refuse_outside_links else None)
        self.version, self.spread = version, spread

    def expand(self, pipeline):
        listed = (pipeline
                  | "Inputs" >> beam.Create(list(enumerate(self.specs)))
                  | "PlanTasks" >> beam.ParDo(_PlanTasks(self.rules))
                  | "SpreadTasks" >> beam.Reshuffle()
                  | "ListTasks" >> beam.ParDo(_ListTasks(self.specs, self.unit_size, self.count_files,
                                                         self.already_scored, self.version, self.rules))
                  .with_outputs(_COUNTS, _FINGERPRINTS, main="units"))
        units = listed.units | "SpreadUnits" >> beam.Reshuffle() if self.spread else listed.units
        return Matched(units, listed[_COUNTS], listed[_FINGERPRINTS])
