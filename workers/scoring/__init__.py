"""The scoring worker: input topic -> decisions -> alert and scores topics."""

from workers.scoring.worker import ScoringWorker, run_worker

__all__ = ["ScoringWorker", "run_worker"]
