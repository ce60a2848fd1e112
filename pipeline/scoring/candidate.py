"""Defines how a candidate model scores beside the run's model (--candidate_model): a second RunInference step that
takes the model's scored blocks, scores the candidate's images of the same inputs (decoded once, by its own card's
recipe: pipeline.scoring.blocks), and leaves one error row per input that failed.

An input that failed for both models, or could not be read, keeps its one row as a run without a candidate writes
it. One that failed for one model only is still one row, its stage saying which model: `candidate:decode` (the input
is in scores/, not in candidate/) or `model:predict` (it is in candidate/, not in scores/).
"""

from typing import Optional, Sequence

from pipeline.outputs import comparison
from pipeline.records import CANDIDATE_ONLY, MODEL_ONLY, ScoredBlock
from pipeline.scoring.model_handler import KerasModelHandler, score_block
from pipeline.scoring.served_model import ServedModel


class CandidateModelHandler(KerasModelHandler):
    """Takes the model's ScoredBlocks, returns them with the candidate's results and their comparison."""

    def __init__(self, model_uri: str, model_classes: tuple, candidate_classes: tuple, **settings):
        super().__init__(model_uri, len(candidate_classes), **settings)
        self.model_classes = model_classes
        self.candidate_classes = candidate_classes
        self._batch_bytes = 0

    def run_inference(self, batch: Sequence[ScoredBlock], model: ServedModel, inference_args: Optional[dict] = None):
        if self._device is None:
            self._device = model.device()
        self._batch_bytes = sum(scored.inputs.candidate.pixels.nbytes for scored in batch)
        return [self._with_candidate(scored, model) for scored in batch]

    def _with_candidate(self, scored: ScoredBlock, model: ServedModel) -> ScoredBlock:
        inputs = scored.inputs
        mine = score_block(inputs.candidate, model.predict_rows, self.num_classes, self._device, for_sheet=False)
        scored.errors = merged_errors(scored.errors, mine.errors, mine.keys)
        mine.errors = []  # the block's rows say what the candidate failed on
        scored.candidate = mine
        scored.disagreements = comparison.disagreements(scored, inputs, self.model_classes, self.candidate_classes)
        scored.inputs = None  # the pixels are not needed past this point
        return scored

    def get_num_bytes(self, batch: Sequence[ScoredBlock]) -> int:
        return self._batch_bytes  # Beam asks once the batch is scored, when its pixels are let go


def merged_errors(model_errors: list, candidate_errors: list, candidate_scored: list) -> list:
    """One error row per input that failed: the model's rows (marked MODEL_ONLY where the candidate scored the
    input), then the candidate's rows for inputs the model scored (marked CANDIDATE_ONLY)."""
    scored = set(candidate_scored)
    model_failed = {row["key"] for row in model_errors}
    rows = [dict(row, stage=MODEL_ONLY + row["stage"]) if row["key"] in scored else row for row in model_errors]
    return rows + [dict(row, stage=CANDIDATE_ONLY + row["stage"]) for row in candidate_errors
                   if row["key"] not in model_failed]
