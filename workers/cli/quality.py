"""`fraud evaluate` and `fraud evaluate-replay`: offline quality on labeled CSVs, and the
tables they print (rich is the application's; the library returns plain reports).

    fraud evaluate --csv FILE [--csv FILE ...] [--models english,multilingual,routed]
    fraud evaluate --train FILE[,FILE|seed|seed-en ...] --test FILE \
        [--test-fraud-labels smishing,spam --test-fraud-labels smishing]
    fraud evaluate-replay --csv FILE [--novel-campaigns]
"""

# Handlers import the application (torch, FAISS, scikit-learn, matplotlib, rich) inside
# themselves, so that `fraud --help` stays fast: the one deliberate kind of function-local
# import.

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from fraud.config import Settings
from fraud.datasets import LabeledText, parse_label_list, read_labeled_csv
from fraud.errors import DataError
from workers.cli.common import (
    COMMON,
    LABEL_MAPS,
    LABELS,
    TARGET,
    load_encoder,
    read_csv_arg,
    threshold_rule,
    write_json,
)

EVALUATION_MODELS = ("english", "multilingual", "routed")


# Environment settings that change what an evaluation measures, recorded before the command
# when set (the encoder variant: the same model's embeddings in int8 or bf16).
RECORDED_ENVIRONMENT = ("FRAUD_ENCODER_VARIANT",)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (workers/cli/main.py keeps it in args.argv), with the settings of
    RECORDED_ENVIRONMENT that were set before it, recorded in each report so that a page
    showing its figures can show how to produce them again."""
    env = [f"{k}={os.environ[k]}" for k in RECORDED_ENVIRONMENT if k in os.environ]
    return shlex.join([*env, "fraud", *args.argv])


def _evaluation_encoders(settings: Settings, models: list[str]) -> dict[str, Any]:
    """The encoders `fraud evaluate --models` compares, by name: english (FRAUD_MODEL_PATH;
    default all-MiniLM-L6-v2, adapted unless FRAUD_ENGLISH_MODEL=base), multilingual
    (FRAUD_MULTILINGUAL_MODEL_PATH), routed (both, by script: fraud/encoding/routed.py).
    Each model is loaded once."""
    from fraud.encoding.encoder import (
        Encoder,
        encoder_options,
        english_model_path,
        multilingual_model_dir,
    )
    from fraud.encoding.routed import RoutedEncoder

    unknown = sorted(set(models) - set(EVALUATION_MODELS))
    if unknown:
        raise DataError(f"unknown models {unknown}: choose from {', '.join(EVALUATION_MODELS)}")
    options = encoder_options(settings)
    loaded: dict[str, Any] = {}
    if {"english", "routed"} & set(models):
        loaded["english"] = Encoder(english_model_path(settings), **options)
    if {"multilingual", "routed"} & set(models):
        path = multilingual_model_dir(settings.multilingual_model_path)
        loaded["multilingual"] = Encoder(path, **options)
    if "routed" in models:
        loaded["routed"] = RoutedEncoder(loaded["english"], loaded["multilingual"])
    return {m: loaded[m] for m in models}


def _cached(encoders: dict[str, Any], cache_dir: Path) -> dict[str, Any]:
    """The same encoders behind the embedding cache (the routed one over its cached parts,
    so it never embeds a text twice)."""
    from fraud.encoding.cache import CachedEncoder
    from fraud.encoding.routed import RoutedEncoder

    out: dict[str, Any] = {}
    parts: dict[int, Any] = {}

    def cached(encoder):
        if id(encoder) not in parts:
            parts[id(encoder)] = CachedEncoder(encoder, cache_dir)
        return parts[id(encoder)]

    for name, encoder in encoders.items():
        if isinstance(encoder, RoutedEncoder):
            out[name] = RoutedEncoder(cached(encoder.latin), cached(encoder.other))
        else:
            out[name] = cached(encoder)
    return out


def _evaluation_datasets(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(name, Dataset) for every --csv: deduplicated, then sampled as --sample says."""
    from fraud.fitting import Dataset

    if not args.csv:
        raise DataError("evaluate needs a labeled CSV: --csv PATH")
    samples = args.sample or [0]
    if len(samples) == 1:
        samples = samples * len(args.csv)
    if len(samples) != len(args.csv):
        raise DataError(
            f"{len(samples)} --sample values for {len(args.csv)} --csv files: give one for all, "
            "or one per file in the same order (0: every message)"
        )
    out = []
    for path, n in zip(args.csv, samples, strict=True):
        dataset = Dataset.from_labeled(
            read_labeled_csv(Path(path), args.fraud_labels, args.legit_labels)
        )
        distinct = len(dataset.y)
        if n or args.sample_skip:
            dataset = dataset.stratified_sample(n or distinct, args.seed, args.sample_skip)
        if dataset.y.sum() < args.folds or (~dataset.y).sum() < args.folds:
            raise DataError(f"{path}: too few fraud or legit messages for {args.folds} folds")
        print(
            f"{path}: {distinct} distinct messages after removing {dataset.duplicates_removed} "
            f"duplicates; {len(dataset.y)} used ({int(dataset.y.sum())} fraud)"
            + (f", a stratified sample (seed {args.seed}, skip {args.sample_skip})" if n else "")
            + f"; {args.folds}-fold CV, seed {args.seed}",
            file=sys.stderr,
        )
        out.append((Path(path).stem, dataset))
    return out


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.index import encode_with_progress
    from fraud.quality import SHIPPED, encoder_timing, evaluate, evaluation_variants, plot_report

    if args.train or args.test:
        return cmd_evaluate_train_test(args, settings)
    datasets = _evaluation_datasets(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else []
    encoders = _evaluation_encoders(settings, models) if models else {"": load_encoder(settings)}
    cached = _cached(encoders, args.cache_dir)
    names = [v.strip() for v in args.variants.split(",")] if args.variants else None
    reports = {}
    for dataset_name, dataset in datasets:
        X = {
            model: encode_with_progress(encoder, dataset.texts, progress=not args.quiet)
            for model, encoder in cached.items()
        }
        report, results = evaluate(
            dataset,
            X if models else X[""],
            variants=evaluation_variants(),
            folds=args.folds,
            seed=args.seed,
            threshold_rule=threshold_rule(args),
            variant_names=names,
            on_fold=None
            if args.quiet
            else lambda f, n: print(f"  fold {f + 1}: {n}", file=sys.stderr),
            inner_folds=args.inner_folds,
        )
        report["dataset"]["name"] = dataset_name
        report["command"] = command_line(args)
        report["encoders"] = {
            model or "configured": {"model": e.name, **encoder_timing(e, dataset.texts)}
            for model, e in encoders.items()
        }
        if not models:  # the single-encoder report, as before
            report["encoder"] = report["encoders"]["configured"]
        out = args.out / dataset_name if len(datasets) > 1 else args.out
        write_json(out / "report.json", report)
        shipped = next(
            (n for n in (f"{SHIPPED} [routed]", SHIPPED) if n in results), next(iter(results))
        )
        plots = plot_report(results, dataset, shipped, out)
        print(f"\n{dataset_name}")
        print_report(report)
        print(f"\nreport {out / 'report.json'}; plots " + ", ".join(p.name for p in plots))
        reports[dataset_name] = report
    if len(datasets) > 1 or models:
        print_languages_table(reports)
    return 0


# -- evaluate --train --test ----------------------------------------------------------------

SEED_SETS = ("seed", "seed-en")  # --train names for the packaged seed set (all, or English)


def _training_rows(args: argparse.Namespace) -> list[LabeledText]:
    """The rows of every --train item: a CSV (read with --fraud-labels/--legit-labels), or
    `seed` (the packaged seed set) or `seed-en` (its rows not in another script)."""
    from fraud.data import seed_references_path
    from fraud.encoding.routed import is_other_script

    rows: list[LabeledText] = []
    for item in (s.strip() for s in args.train.split(",")):
        if item in SEED_SETS:
            seed = read_labeled_csv(seed_references_path())
            rows += [r for r in seed if item == "seed" or not is_other_script(r.text)]
        elif item:
            rows += read_labeled_csv(Path(item), args.fraud_labels, args.legit_labels)
    return rows


def _test_mappings(args: argparse.Namespace) -> tuple[list[str], list[Any]]:
    """The test file's texts (its rows as given) and one LabelMapping per
    --test-fraud-labels: rows with one of those labels are frauds, rows with a
    --test-legit-labels label legit, rows with another mapping's fraud label left out.

    The file is read once with every mapping's fraud labels (which checks that each row
    has a known label), then once per mapping with the other mappings' fraud labels read
    as legit: the rows that read as fraud in the first and legit in the second are the
    ones this mapping leaves out."""
    import numpy as np

    from fraud.quality import LabelMapping

    path = Path(args.test)
    maps = [parse_label_list(m) for m in (args.test_fraud_labels or [args.fraud_labels])]
    legit = parse_label_list(args.test_legit_labels or args.legit_labels)
    every = tuple(dict.fromkeys(label for m in maps for label in m))
    rows = read_labeled_csv(path, every, legit)
    fraud_somewhere = np.array([r.label == "fraud" for r in rows])
    mappings = []
    for fraud in maps:
        others = tuple(label for label in every if label not in fraud)
        y = np.array([r.label == "fraud" for r in read_labeled_csv(path, fraud, legit + others)])
        keep = np.flatnonzero(~(fraud_somewhere & ~y))
        name = f"{'+'.join(fraud)} vs {'+'.join(legit)}"
        if y[keep].all() or not y[keep].any():
            raise DataError(f"{path}: {name} needs both fraud and legit rows")
        mappings.append(LabelMapping(name, y[keep], keep))
    return [r.text for r in rows], mappings


def cmd_evaluate_train_test(args: argparse.Namespace, settings: Settings) -> int:
    """Fit every variant on the --train files only, score the --test file once
    (fraud/quality/train_test.py)."""
    from fraud.fitting import Dataset, Split
    from fraud.index import encode_with_progress
    from fraud.quality import evaluation_variants, select_variants, train_test_evaluate
    from fraud.quality.train_test import unlabeled

    if not (args.train and args.test) or args.csv:
        raise DataError("evaluate takes --train FILE[,FILE] with --test FILE, or --csv alone")
    train = Dataset.from_labeled(_training_rows(args))
    if train.y.sum() < args.folds or (~train.y).sum() < args.folds:
        raise DataError(f"--train: too few fraud or legit messages for {args.folds} folds")
    test_texts, mappings = _test_mappings(args)
    print(
        f"train {args.train}: {len(train.y)} distinct messages ({int(train.y.sum())} fraud) "
        f"after removing {train.duplicates_removed} duplicates, "
        f"{len(set(train.groups.tolist()))} near-duplicate groups; test {args.test}: "
        f"{len(test_texts)} rows; {args.folds} grouped folds, seed {args.seed}",
        file=sys.stderr,
    )
    encoder = _cached({"": load_encoder(settings)}, args.cache_dir)[""]
    progress = not args.quiet
    X_train = encode_with_progress(encoder, train.texts, progress=progress)
    X_test = encode_with_progress(encoder, test_texts, progress=progress)
    names = [v.strip() for v in args.variants.split(",")] if args.variants else None
    report, _ = train_test_evaluate(
        Split(train, X_train),
        unlabeled(test_texts, X_test),
        mappings,
        select_variants(evaluation_variants(), names),
        folds=args.folds,
        seed=args.seed,
        threshold_rule=threshold_rule(args),
        on_variant=None if args.quiet else lambda n: print(f"  {n}", file=sys.stderr),
    )
    report["files"] = {"train": args.train, "test": args.test}
    report["encoder"] = encoder.name
    report["command"] = command_line(args)
    write_json(args.out / "report.json", report)
    print_train_test_report(report)
    print(f"\nreport {args.out / 'report.json'}")
    return 0


def cmd_evaluate_replay(args: argparse.Namespace, settings: Settings) -> int:
    """History off vs on over a simulated time-ordered stream (fraud/quality/replay.py)."""
    from fraud.encoding.cache import CachedEncoder
    from fraud.fitting import Dataset
    from fraud.index import encode_with_progress
    from fraud.quality import TUNING_FOLDS, replay_evaluate

    dataset = Dataset.from_labeled(
        read_csv_arg(args, "evaluate-replay needs a labeled CSV: --csv PATH")
    )
    if args.folds <= TUNING_FOLDS:
        raise DataError(f"--folds must be more than the {TUNING_FOLDS} tuning folds")
    if dataset.y.sum() < args.folds or (~dataset.y).sum() < args.folds:
        raise DataError(f"{args.csv}: too few fraud or legit messages for {args.folds} folds")
    print(
        f"{len(dataset.y)} distinct messages ({int(dataset.y.sum())} fraud) after removing "
        f"{dataset.duplicates_removed} duplicates; {args.folds} folds, seed {args.seed}; "
        "the stream of recipients and times is simulated",
        file=sys.stderr,
    )
    cached = CachedEncoder(load_encoder(settings), args.cache_dir)
    X = encode_with_progress(cached, dataset.texts, progress=not args.quiet)
    report = replay_evaluate(
        dataset,
        X,
        cached,
        folds=args.folds,
        seed=args.seed,
        novel_campaigns=args.novel_campaigns,
        on_progress=None if args.quiet else lambda line: print(f"  {line}", file=sys.stderr),
    )
    write_json(args.out / "replay.json", report)
    print_replay_report(report)
    print(f"\nreport {args.out / 'replay.json'} ({report['seconds']} s)")
    return 0


def print_replay_report(report: dict[str, Any]) -> None:
    """The replay report's lines and tables (fraud/quality/replay.py) on the terminal."""
    from rich.console import Console
    from rich.table import Table

    from fraud.quality import replay_report_text

    text = replay_report_text(report)
    console = Console(width=None if sys.stdout.isatty() else 160)
    for line in text.folds:
        console.print(line)
    for t in text.tables:
        table = Table(title=t.title)
        for column in t.columns:
            table.add_column(column, justify="left" if column == t.columns[0] else "right")
        for row in t.rows:
            table.add_row(*row)
        console.print(table)
    console.print(text.changes)


# -- the tables --------------------------------------------------------------------------


def _console():
    """A rich console that wraps on a terminal and not in a report file."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


def print_report(report: dict[str, Any]) -> None:
    """One dataset's evaluation: a row per scorer, then the encoders' cost and the
    confusion counts."""
    from rich.markup import escape
    from rich.table import Table

    fitted = report.get("protocol", {}).get("inner_folds", 3)
    table = Table(
        title="held-out folds pooled; "
        + ("threshold fitted on each training fold" if fitted else "decisions at 0.5")
    )
    columns = ["variant", "precision", "recall", "F1", "ROC-AUC", "PR-AUC", "R@1%FPR"]
    for column in [*columns, "F1 sd", "ms/msg", "p99 ms"]:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, v in report["variants"].items():
        table.add_row(
            escape(name),  # "attention [english]" is not markup
            *(
                f"{v[k]:.4f}"
                for k in ("precision", "recall", "f1", "roc_auc", "pr_auc", "recall_at_1pct_fpr")
            ),
            f"{v['fold_std']['f1']:.4f}",
            f"{v['score_ms_mean']:.2f}",
            f"{v['score_ms_p99']:.2f}",
        )
    console = _console()
    console.print(table)
    for enc in report.get("encoders", {}).values():
        console.print(
            f"ms/msg excludes encoding: {enc['model']} takes {enc['encode_ms_mean']:.1f} ms "
            f"per message (p99 {enc['encode_ms_p99']:.1f} ms) one at a time; tfidf needs none."
        )
    for name, v in report["variants"].items():
        c = v["confusion"]
        console.print(
            f"{escape(name)}: tp {c['tp']} fp {c['fp']} fn {c['fn']} tn {c['tn']}"
            + (f"; recall by category {v['recall_by_category']}" if v["recall_by_category"] else "")
        )


def print_train_test_report(report: dict[str, Any]) -> None:
    """A row per variant and test mapping: the threshold fitted on the training rows and
    what it gives on the test file."""
    from rich.markup import escape
    from rich.table import Table

    rule = report["protocol"]["threshold_rule"]
    table = Table(
        title=f"fitted on {report['files']['train']}, threshold for {rule}; "
        f"scored on {report['files']['test']}"
    )
    columns = [
        "variant",
        "test labels",
        "threshold",
        "precision",
        "recall",
        "F1",
        "false alerts",
        "PR-AUC",
        "R@1%FPR",
        "train OOF PR-AUC",
    ]
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:2] else "right")
    for name, v in report["variants"].items():
        for mapping, m in v["test"].items():
            table.add_row(
                escape(name),
                escape(mapping),
                f"{v['threshold']:.4f}",
                *(f"{m[k]:.4f}" for k in ("precision", "recall", "f1")),
                f"{m['false_alert_rate']:.2%}",
                f"{m['pr_auc']:.4f}",
                f"{m['recall_at_1pct_fpr']:.4f}",
                f"{v['train_out_of_fold']['pr_auc']:.4f}",
            )
    _console().print(table)


def print_languages_table(reports: dict[str, dict[str, Any]]) -> None:
    """PR-AUC and recall at 1% FPR of every scorer, one column pair per dataset."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="held-out folds pooled: PR-AUC / recall at 1% FPR")
    table.add_column("scorer")
    for name, report in reports.items():
        d = report["dataset"]
        table.add_column(f"{name} ({d['messages']}, {d['fraud']} fraud)", justify="right")
    rows = list(dict.fromkeys(v for r in reports.values() for v in r["variants"]))
    for row in rows:
        cells = []
        for report in reports.values():
            v = report["variants"].get(row)
            cells.append(f"{v['pr_auc']:.4f} / {v['recall_at_1pct_fpr']:.4f}" if v else "")
        table.add_row(escape(row), *cells)
    _console().print(table)


# -- parsers -----------------------------------------------------------------------------


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        parents=[COMMON, LABEL_MAPS, TARGET],
        help="cross-validated quality on labeled CSVs, with baselines (and encoders compared)",
    )
    p.add_argument(
        "--csv",
        action="append",
        help="CSV with columns text,label[,category]; repeat it to evaluate several in one run",
    )
    p.add_argument(
        "--train",
        help="instead of --csv: fit on these, comma-separated (CSV paths; `seed`: the packaged "
        "seed set, `seed-en`: its rows not in another script), and score --test",
    )
    p.add_argument("--test", help="with --train: the CSV scored once, never fitted on")
    p.add_argument(
        "--test-fraud-labels",
        action="append",
        help="labels of --test meaning fraud (default: --fraud-labels); repeat it for several "
        "mappings measured on one scoring, e.g. smishing,spam and smishing",
    )
    p.add_argument("--test-legit-labels", help="labels of --test meaning legit (--legit-labels)")
    p.add_argument("--folds", type=int, default=5, help="outer folds (grouped)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/evaluation"),
        help="report and plots (one subdirectory per CSV when there are several)",
    )
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/embeddings"))
    p.add_argument("--variants", help="comma-separated subset (default: all)")
    p.add_argument(
        "--models",
        help="compare encoders in one run: comma-separated from "
        f"{', '.join(EVALUATION_MODELS)} (default: the configured encoder alone)",
    )
    p.add_argument(
        "--sample",
        type=int,
        action="append",
        help="a stratified sample of N messages (after deduplication); once for every --csv, "
        "or once per --csv in the same order (0: all)",
    )
    p.add_argument(
        "--inner-folds",
        type=int,
        default=3,
        help="inner folds that choose each fold's alert threshold; 0: none, decide at 0.5 "
        "(precision, recall and F1 then mean that; PR-AUC and recall at 1%% FPR do not use "
        "a threshold), four times faster",
    )
    p.add_argument(
        "--sample-skip",
        type=int,
        default=0,
        help="draw the sample from what is left after setting aside a first sample of this "
        "size (a sample disjoint from the reported one, for choosing settings)",
    )
    p.set_defaults(func=cmd_evaluate)


def _add_evaluate_replay(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-replay",
        parents=[COMMON, LABELS],
        help="recipient history off vs on, over a simulated stream of a labeled CSV",
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/replay"), help="replay.json")
    p.add_argument(
        "--novel-campaigns",
        action="store_true",
        help="drop the held-out campaigns' near-duplicates from each training part",
    )
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/embeddings"))
    p.set_defaults(func=cmd_evaluate_replay)


def register(subparsers) -> None:
    """`fraud evaluate` and `fraud evaluate-replay`."""
    _add_evaluate(subparsers)
    _add_evaluate_replay(subparsers)
