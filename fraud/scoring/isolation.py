"""Finding the inputs that fail a batch, so that one bad input never fails the rest.

Messages are encoded and scored in batches because that is fast (the encoder embeds 64
texts in about the time of a few). When a batch's call raises, the fault could be any of
its inputs. Stopping would not help: the batch is replayed and stops the next worker too.
So the batch is split in two and each half tried again, recursively, until the inputs
that fail alone are found; every other input gets its result. One bad input among n
costs about 2·log2(n) more calls.

Halves are tried left to right, depth first: every input is worked on after all the
inputs before it, which is what state that follows input order (a recipient's history,
fraud/scoring/history.py) needs. The scoring worker, `fraud serve` and the feedback processor
all isolate failures with `isolate`.

Splitting helps only when some inputs work. When the model itself is broken, every input
fails, and a worker that isolated them would empty its input into the dead-letter topic.
`check_model` tells the two apart with a known-good probe: the worker and the feedback
processor stop instead (ModelBrokenError, one line), without committing.
"""

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fraud.errors import ModelBrokenError

T = TypeVar("T")
R = TypeVar("R")

# Texts any working model and index score: one for each encoder of a routed pair
# (fraud/encoding/routed.py), Latin script and not.
PROBE_TEXTS = (
    "Your parcel is waiting at the depot: pay the redelivery fee today",
    "您的包裹在仓库等待派送，请今天支付运费",
)


@dataclass(frozen=True)
class Failure:
    """An input that failed alone: the exception it raised."""

    error: Exception

    @property
    def error_class(self) -> str:
        return type(self.error).__name__

    @property
    def where(self) -> str:
        return raised_at(self.error)


def isolate(
    items: Sequence[T],
    attempt: Callable[[Sequence[T]], Sequence[R]],
    error: Exception,
) -> list[R | Failure]:
    """One result per item, in order: attempt's, or the Failure of an item that fails alone.

    `items` have just failed together with `error` (the caller tried them as one batch
    first, which is the fast path). `attempt(group)` returns one result per item of
    `group`, or raises; it must leave nothing behind when it raises, since the items of
    a failed group are tried again in smaller groups.
    """
    items = list(items)
    if len(items) <= 1:
        return [Failure(error)] * len(items)
    middle = len(items) // 2
    return _attempt(items[:middle], attempt) + _attempt(items[middle:], attempt)


def _attempt(group: list[T], attempt: Callable[[Sequence[T]], Sequence[R]]) -> list[R | Failure]:
    try:
        results = list(attempt(group))
    except Exception as e:  # noqa: BLE001 (any fault of one input: isolated, not fatal)
        return isolate(group, attempt, e)
    if len(results) != len(group):
        raise ValueError(f"{len(results)} results for {len(group)} inputs")
    return results


def check_model(run: Callable[[list[str]], object], error: Exception, what: str) -> None:
    """After `what` failed with `error`: raise ModelBrokenError if `run(PROBE_TEXTS)` (the
    caller's encoding and scoring of known-good texts) fails too."""
    try:
        run(list(PROBE_TEXTS))
    except Exception as e:  # noqa: BLE001 (whatever it is, the model is broken)
        raise ModelBrokenError(
            f"{what} failed ({type(error).__name__} at {raised_at(error)}) and so did a "
            f"known-good probe ({type(e).__name__} at {raised_at(e)}): the model or index "
            "is broken; stopping without committing"
        ) from None


def raised_at(error: BaseException) -> str:
    """Where `error` was raised, as `file.py:line in function`: said in logs and dead-letter
    headers instead of the exception's text, which could quote the message."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"
