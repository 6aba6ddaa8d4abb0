"""`fraud score`: one message, scored as the worker would, printed for a person or as JSON.

fraud score "some text" [--json]
"""

# The handler imports the detector (torch, FAISS) inside itself, so that `fraud --help`
# stays fast: the one deliberate kind of function-local import.

import argparse

from fraud.config import Settings
from workers.cli.common import COMMON, SCORER


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.scoring import Detector, format_assessment

    detector = Detector.from_settings(settings)
    texts = [args.text]
    assessment = detector.score(detector.encode(texts), texts).assessments[0]
    if args.json:
        print(assessment.model_dump_json(indent=2))
        return 0
    print(format_assessment(assessment, detector))
    return 0


def register(subparsers) -> None:
    """`fraud score`."""
    p = subparsers.add_parser("score", parents=[COMMON, SCORER], help="score one message")
    p.add_argument("text")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=cmd_score)
