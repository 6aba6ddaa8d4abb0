"""`fraud demo`: the whole pipeline on a local broker, start to finish (workers/demo.py).

fraud demo [--bootstrap-servers HOST:PORT] [--rate R] [--console]
"""

# The handler imports the demo (Kafka, torch, FAISS) inside itself, so that `fraud --help`
# stays fast: the one deliberate kind of function-local import.

import argparse
import os

from fraud.config import Settings
from workers.cli.common import COMMON, SCORER


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.demo import run_demo

    # The one place outside Settings that reads the environment: the test-suite's and
    # users' convention for "use this cluster instead of starting one".
    external = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    return run_demo(settings, external_bootstrap=external, rate=args.rate, console=args.console)


def register(subparsers) -> None:
    """`fraud demo`."""
    p = subparsers.add_parser("demo", parents=[COMMON, SCORER], help="the whole pipeline, locally")
    p.add_argument("--bootstrap-servers", help="use this cluster instead of starting a broker")
    p.add_argument("--rate", type=float, default=20.0, help="demo messages per second")
    p.add_argument(
        "--console",
        action="store_true",
        help="also run the feedback processor and the analysts' console (fraud console), "
        "with a demo account, until Ctrl-C",
    )
    p.set_defaults(func=cmd_demo)
