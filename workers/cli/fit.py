"""`fraud calibrate` and `fraud train`: fit the scorer on an index's own references.

fraud calibrate [--index DIR] [--target-precision P | --target-fpr F] [--no-ngram]
fraud train [--index DIR] [--epochs N] [--target-precision P | --target-fpr F]
"""

# Handlers import the library's fitting (torch, FAISS) inside themselves, so that
# `fraud --help` stays fast: the one deliberate kind of function-local import.

import argparse

from fraud.config import Settings
from workers.cli.common import COMMON, TARGET, load_index, threshold_rule

# `fraud calibrate` and `fraud train` fit the key similarity's character n-gram term
# unless told not to (--no-ngram): in `fraud evaluate` it lifted the learned head on
# Chinese SMS and kept it on UCI English (README, Languages).
FIT_NGRAM_TERM = True


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.fitting.commands import calibrate

    index = load_index(settings)
    fitted = calibrate(
        index, settings.index_dir, settings.scorer.top_k, threshold_rule(args), args.ngram
    )
    head = fitted["head_threshold"]
    print(
        f"calibrated {settings.index_dir}: T {fitted['temperature']:.4f}, "
        f"tau {fitted['null_similarity']:.4f}, n-gram term weight {fitted['ngram_weight']:g} "
        f"range {tuple(fitted['ngram_range'])} (log-loss {fitted['log_loss']:.4f}), "
        f"threshold {fitted['threshold']:.4f}"
        + (f"; the trained head's threshold {head:.4f}" if head is not None else "")
    )
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.fitting.commands import train
    from fraud.scoring.head import HeadConfig

    index = load_index(settings)
    config = HeadConfig(dim=index.dim, n_categories=len(index.categories), epochs=args.epochs)
    fitted = train(index, settings.index_dir, config, threshold_rule(args), args.ngram)
    print(
        f"trained the attention head of {settings.index_dir} on {len(index)} references: "
        f"T {fitted['temperature']}, tau {fitted['null_similarity']}, "
        f"n-gram term weight {fitted['ngram_weight']:g} range {tuple(fitted['ngram_range'])}, "
        f"threshold {fitted['threshold']:.4f}"
    )
    return 0


def register(subparsers) -> None:
    """`fraud calibrate` and `fraud train`."""
    fit_ngram = argparse.ArgumentParser(add_help=False)
    fit_ngram.add_argument(
        "--ngram",
        action=argparse.BooleanOptionalAction,
        default=FIT_NGRAM_TERM,
        help="also fit the character n-gram term of the key similarity (its weight, 0 "
        "among the candidates, and n-gram lengths) on the references",
    )
    p = subparsers.add_parser(
        "calibrate",
        parents=[COMMON, TARGET, fit_ngram],
        help="fit T, tau and the threshold on an index's references",
    )
    p.set_defaults(func=cmd_calibrate)
    p = subparsers.add_parser(
        "train",
        parents=[COMMON, TARGET, fit_ngram],
        help="train the attention head on an index's references",
    )
    p.add_argument("--epochs", type=int, default=80)
    p.set_defaults(func=cmd_train)
