"""The scoring worker: input topic -> decisions -> alert and scores topics.

worker.py is the loop, batch.py one micro-batch, decide.py its scoring with failures
isolated, checkpoint.py the commit protocol, main.py the process; runtime.py is what every
process that scores shares (the worker, `fraud serve`, the feedback processor)."""

from workers.scoring.batch import StageClock
from workers.scoring.checkpoint import Checkpoint, TransactionLost
from workers.scoring.main import readiness, run_worker
from workers.scoring.runtime import (
    DeadLetter,
    Runtime,
    load_runtime,
    on_bad_record,
    on_bank_change,
    on_publish_failed,
    publish_dead_letters,
    publish_decisions,
)
from workers.scoring.worker import ScoringWorker

__all__ = [
    "Checkpoint",
    "DeadLetter",
    "Runtime",
    "ScoringWorker",
    "StageClock",
    "TransactionLost",
    "load_runtime",
    "on_bad_record",
    "on_bank_change",
    "on_publish_failed",
    "publish_dead_letters",
    "publish_decisions",
    "readiness",
    "run_worker",
]
