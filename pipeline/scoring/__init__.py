"""Scoring: units decoded into fixed-size blocks by the model card's recipe, the RunInference model handler, the model
as workers serve it, and how a worker process exits."""
