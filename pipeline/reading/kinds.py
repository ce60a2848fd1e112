"""The kinds of input a run may name, each a class (pipeline.reading.inputs.Inputs), and the one a run names."""

from pipeline.reading.inputs import Inputs
from pipeline.reading.sources import ImageFiles
from pipeline.reading.tables import TableInputs
from pipeline.reading.tfrecords import TFRecordFiles

KINDS = (ImageFiles, TFRecordFiles, TableInputs)


def of(config):
    """The Inputs of the one kind `config` names (options.parse makes sure there is exactly one)."""
    return next(kind for kind in KINDS if getattr(config, kind.option))(config)


def in_manifest(inputs: dict) -> type:
    """The kind a published run read, from its manifest's `inputs` (the report asks it), or Inputs if none says."""
    return next((kind for kind in KINDS if kind.in_manifest(inputs)), Inputs)
