"""The Kafka commands: the topics, the processes of the pipeline, and what feeds them.

fraud setup [--partitions N]                    every topic, and an index linked to the bank
fraud worker                                    the Kafka scoring worker
fraud serve [--port P] [--publish]              inline scoring over HTTP
fraud feedback MESSAGE_ID fraud|legit           an analyst verdict
fraud feedback-processor                        verdicts -> reference-bank changes
fraud produce FILE [--topic T] [--rate R]       send messages to a topic
"""

# Handlers import the application (Kafka, torch, FAISS, FastAPI through workers.*) inside
# themselves, so that `fraud --help` stays fast: the one deliberate kind of function-local
# import.

import argparse
from pathlib import Path

from fraud.config import Settings
from fraud.errors import DataError
from workers.cli.common import (
    COMMON,
    FORCE_HELP,
    KAFKA,
    SCORER,
    load_encoder,
    print_index_info,
)


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    """Topics, then an index directory linked to the bank: the index in --index published
    when the bank is empty (the seed set when there is none), else a snapshot of the bank
    (workers/state/bank.py setup_index says when a directory is refused)."""
    from workers.kafka import create_topics
    from workers.state import setup_index

    if args.partitions < 1:
        raise DataError(f"--partitions must be >= 1, got {args.partitions}")
    kafka = settings.kafka
    create_topics(kafka, args.partitions)
    print(f"topics ready ({kafka.input_topic}: {args.partitions} partitions)")
    index, done = setup_index(settings, lambda: load_encoder(settings), force=args.force)
    print(done)
    print_index_info(index.manifest(), settings.index_dir)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.scoring import run_worker

    run_worker(settings)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from workers.serve import run_serve

    run_serve(settings)
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.scoring.verdicts import AnalystVerdict
    from workers.feedback import send_verdict
    from workers.kafka import ensure_topics, make_producer

    verdict = AnalystVerdict(
        message_id=args.message_id,
        verdict=args.verdict,
        category=args.category,
        reason=args.reason,
        analyst=args.analyst,
        text=args.text,
    )
    kafka = settings.kafka
    ensure_topics(kafka, [kafka.feedback_topic])
    producer = make_producer(kafka)
    try:
        send_verdict(producer, kafka, verdict).get(30)
    finally:
        producer.close(timeout=10)
    print(f"verdict {args.verdict} on {args.message_id} sent to {kafka.feedback_topic}")
    return 0


def cmd_feedback_processor(args: argparse.Namespace, settings: Settings) -> int:
    from workers.feedback import run_feedback_processor

    run_feedback_processor(settings)
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from workers.producer import produce, read_messages

    messages = read_messages(Path(args.file))
    topic = args.topic or settings.kafka.input_topic
    sent = produce(settings.kafka, topic, messages, args.rate)
    print(f"sent {sent} messages to {topic} at {settings.kafka.bootstrap_servers}")
    return 0


# -- parsers -----------------------------------------------------------------------------


def _add_processes(subparsers) -> None:
    """setup, worker and serve: what a deployment runs."""
    p = subparsers.add_parser(
        "setup",
        parents=[COMMON, KAFKA],
        help="create every topic; publish --index (or the seed set) to an empty bank, or "
        "snapshot the bank into --index",
    )
    p.add_argument("--partitions", type=int, default=2, help="input and history partitions")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_setup)
    p = subparsers.add_parser(
        "worker", parents=[COMMON, SCORER, KAFKA], help="run the scoring worker"
    )
    p.add_argument("--publish-scores", action="store_true", default=None)
    p.add_argument("--metrics-port", type=int, help="FRAUD_METRICS_PORT (0: any free port)")
    p.set_defaults(func=cmd_worker)
    p = subparsers.add_parser(
        "serve",
        parents=[COMMON, SCORER, KAFKA],
        help="inline scoring over HTTP: POST /v1/score answers the worker's decision",
    )
    p.add_argument("--host", help="address to bind (FRAUD_SERVE__HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (FRAUD_SERVE__PORT, default 8000; 0: any)")
    p.add_argument(
        "--publish",
        action="store_true",
        default=None,
        help="also write decisions to the scores topic, alerts to the alert topic",
    )
    p.add_argument("--token-file", type=Path, help="bearer tokens, one a line")
    p.set_defaults(func=cmd_serve)


def _add_feedback(subparsers) -> None:
    """feedback and feedback-processor: analysts' verdicts and what they change."""
    p = subparsers.add_parser("feedback", parents=[COMMON, KAFKA], help="send an analyst verdict")
    p.add_argument("message_id")
    p.add_argument("verdict", choices=["fraud", "legit"])
    p.add_argument("--category", help="the fraud category (for a fraud verdict)")
    p.add_argument("--reason", help="why: recorded with the reference")
    p.add_argument("--analyst", help="who: recorded with the reference")
    p.add_argument("--text", help="the message text, if the processor may not have seen it")
    p.set_defaults(func=cmd_feedback)
    p = subparsers.add_parser(
        "feedback-processor",
        parents=[COMMON, KAFKA],
        help="turn verdicts into reference-bank changes",
    )
    p.set_defaults(func=cmd_feedback_processor)


def register(subparsers) -> None:
    """setup, worker, serve, feedback, feedback-processor and produce."""
    _add_processes(subparsers)
    _add_feedback(subparsers)
    p = subparsers.add_parser("produce", parents=[COMMON, KAFKA], help="send messages to a topic")
    p.add_argument("file", help=".jsonl or .csv (a text column) of messages")
    p.add_argument("--topic", help="default: the input topic")
    p.add_argument("--rate", type=float, help="messages per second (default: unthrottled)")
    p.set_defaults(func=cmd_produce)
