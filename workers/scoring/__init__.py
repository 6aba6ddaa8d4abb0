"""The scoring worker: input topic -> decisions -> alert and scores topics.

worker.py is the loop, batch.py one micro-batch, decide.py its scoring with failures
isolated, checkpoint.py the commit protocol, main.py the process; workers/runtime.py is
what every process that scores shares (the worker, `fraud serve`, the feedback processor)."""

from workers.scoring.checkpoint import Checkpoint, TransactionLost
from workers.scoring.main import readiness, run_worker
from workers.scoring.worker import ScoringWorker

__all__ = [
    "Checkpoint",
    "ScoringWorker",
    "TransactionLost",
    "readiness",
    "run_worker",
]
