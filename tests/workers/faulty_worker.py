"""A real `fraud worker` process with a fault injected, for tests/workers/scoring/test_isolation.py.

    python -m tests.workers.faulty_worker [--encode-poison TEXT] [--score-poison TEXT]
                                          [--decision-poison ID] [--broken]
                                          [--slow-commit SECONDS] worker [FLAGS]

It wraps the detector that `fraud worker` builds (Detector.from_settings), then runs the
real command (workers.cli.main main(["worker", ...]); start_fraud_process passes the
subcommand): the worker's code is untouched, and no test hook lives in production code.
The faults, each like a bug that one input triggers:

- --encode-poison TEXT: the encoder raises InjectedEncodingFault on a batch holding a text
  that contains TEXT (on the encoder thread, as a real encoder fault would);
- --score-poison TEXT: scoring (Detector.score) raises InjectedScoringFault on
  a batch holding such a text;
- --decision-poison ID: building the decision of message ID raises InjectedDecisionFault,
  after its scoring has left it in its recipient's history;
- --broken: every encoding raises InjectedEncodingFault once the worker has started (a
  broken model).
- --slow-commit SECONDS: each batch waits this long after its outputs are sent and before
  its offsets (exactly-once: its transaction) are committed (the checkpoint's step 5), as
  a slow broker would make it: a test that must strike while a transaction is open finds
  one open most of the time.

Each exception's text quotes the message, as a real one could: the worker must not log it.
"""

import argparse
import sys
import time

from fraud.scoring.detector import Detector
from tests.fakes import InjectedFault, PoisonedEncoder
from workers.cli.main import main
from workers.scoring import Checkpoint


class InjectedEncodingFault(InjectedFault):
    pass


class InjectedScoringFault(InjectedFault):
    pass


class InjectedDecisionFault(InjectedFault):
    pass


def inject(detector: Detector, args: argparse.Namespace) -> Detector:
    if args.broken:
        detector.encoder = PoisonedEncoder(
            detector.encoder, lambda text: True, InjectedEncodingFault
        )
    elif args.encode_poison:
        detector.encoder = PoisonedEncoder(
            detector.encoder, args.encode_poison, InjectedEncodingFault
        )
    if args.score_poison:
        score = detector.score

        def scoring(queries, texts=None, *rest, **kwargs):
            for text in texts or ():
                if args.score_poison in text:
                    raise InjectedScoringFault(f"cannot score {text!r}")
            return score(queries, texts, *rest, **kwargs)

        detector.score = scoring
    if args.decision_poison:
        decide = detector.decide

        def decision(message, assessment, **fields):
            if message.id == args.decision_poison:
                raise InjectedDecisionFault(f"cannot build the decision on {message.text!r}")
            return decide(message, assessment, **fields)

        detector.decide = decision
    return detector


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="faulty_worker", allow_abbrev=False)
    parser.add_argument("--encode-poison")
    parser.add_argument("--score-poison")
    parser.add_argument("--decision-poison")
    parser.add_argument("--broken", action="store_true")
    parser.add_argument("--slow-commit", type=float, default=0.0)
    args, command = parser.parse_known_args(argv)
    if args.slow_commit:
        commit_offsets = Checkpoint.commit_offsets

        def slow_commit(self, records):
            time.sleep(args.slow_commit)
            return commit_offsets(self, records)

        Checkpoint.commit_offsets = slow_commit
    build = Detector.from_settings.__func__

    def from_settings(cls, settings, index_dir=None):
        return inject(build(cls, settings, index_dir), args)

    Detector.from_settings = classmethod(from_settings)
    return main(command or ["worker"])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
