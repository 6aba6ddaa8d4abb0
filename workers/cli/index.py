"""`fraud index`: reference indexes on disk, and the reference bank on Kafka.

fraud index build [--csv FILE] [--out DIR]      build an index (default: the trained default)
fraud index fit-default [--out DIR]             fit the default's head (maintainers)
fraud index measure --csv FILE [--out JSON]     an index's figures on a labeled CSV
fraud index add --csv FILE [--index DIR]        append references
fraud index info [--index DIR]                  what an index holds
fraud index publish                             an index's references -> the bank topic
fraud index snapshot [--out DIR]                the bank topic -> an index directory
fraud index update ID [--label ...]             change one reference of the bank (live)
"""

# Handlers import the application (torch, FAISS, Kafka) inside themselves, so that
# `fraud --help` stays fast: the one deliberate kind of function-local import.

import argparse
import json
from pathlib import Path
from typing import Any

from fraud.config import Settings
from fraud.data import default_head_dir
from fraud.datasets import read_labeled_csv
from fraud.errors import DataError
from workers.cli.common import (
    COMMON,
    FORCE_HELP,
    KAFKA,
    LABELS,
    SCORER,
    encoder_identity,
    load_encoder,
    load_index,
    print_index_info,
    read_csv_arg,
    write_json,
)


def cmd_index_build(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.index import IndexSpec, build_index
    from fraud.index.files import check_writable

    try:
        spec = IndexSpec(
            type=args.index_type,
            nlist=args.nlist,
            nprobe=args.nprobe,
            min_size=args.ivf_min_size,
        )
    except ValueError as e:
        raise DataError(str(e)) from None
    check_writable(settings.index_dir, force=args.force)  # before the encoding, not after
    if not args.csv:
        return _build_default(args, settings, spec)
    csv_path = Path(args.csv)
    items = read_labeled_csv(csv_path, args.fraud_labels, args.legit_labels)
    encoder = load_encoder(settings)
    source = args.source or csv_path.name
    scorer = settings.scorer.model_dump()
    index = build_index(encoder, items, source, scorer, not args.quiet, spec)
    index.save(settings.index_dir, force=args.force)
    print_index_info(index.manifest(), settings.index_dir)
    return 0


def _build_default(args: argparse.Namespace, settings: Settings, spec) -> int:
    """`fraud index build` without --csv: the trained default (fraud/fitting/default.py),
    built once into its cache and copied from there into the index directory."""
    from fraud.fitting.default import build_default
    from fraud.index import IndexSpec, ReferenceIndex
    from fraud.index.files import read_manifest, write_index_dir
    from fraud.scoring.head import load_head

    if spec != IndexSpec():
        raise DataError("the default index is flat: give --csv to build another type")
    encoder = load_encoder(settings)
    explicit = settings.scorer.model_dump(include=settings.scorer.model_fields_set)
    cached, why_not = build_default(encoder, explicit, not args.quiet)
    index = ReferenceIndex.load(cached, model=encoder.name, dim=encoder.dim)
    write_index_dir(settings.index_dir, index, load_head(cached), force=args.force)
    print(f"the default detector (seed set + UCI SMS Spam Collection), cached in {cached}")
    if why_not:
        print(f"  without its shipped head: {why_not}")
    print_index_info(read_manifest(settings.index_dir), settings.index_dir)
    return 0


def cmd_index_fit_default(args: argparse.Namespace, settings: Settings) -> int:
    """Fit the default detector's head and thresholds into the package (maintainers: the
    result is committed; fraud/fitting/default.py says why)."""
    import shutil
    import sys
    import tempfile

    from fraud.fitting.default import fit_default

    out = args.out
    if out.exists() and any(out.iterdir()) and not args.force:
        raise DataError(f"{out} is not empty: refusing to replace it; add --force to replace it")
    command = "fraud index fit-default " + " ".join(sys.argv[3:])
    with tempfile.TemporaryDirectory(prefix="fraud-fit-default-") as work:
        staged = Path(work) / "head"
        fitted = fit_default(
            load_encoder(settings),
            settings.scorer.model_dump(),
            Path(work) / "index",
            staged,
            command.strip(),
        )
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    print(
        f"wrote the default's head into {out}: index version {fitted['index_version']}, "
        f"head threshold {fitted['head']['threshold']:.4f}, parameter-free threshold "
        f"{fitted['scorer']['threshold']:.4f}"
    )
    return 0


def cmd_index_add(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.index import ReferenceIndex, embed_into

    items = read_csv_arg(args, "index add needs a labeled CSV: --csv PATH")
    encoder = load_encoder(settings)
    index = ReferenceIndex.load(settings.index_dir, model=encoder.name, dim=encoder.dim)
    before = len(index)
    embed_into(index, encoder, items, args.source or Path(args.csv).name, progress=not args.quiet)
    index.save(settings.index_dir)
    print(f"added {len(index) - before} references to {settings.index_dir}")
    print_index_info(index.manifest(), settings.index_dir)
    return 0


def cmd_index_info(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.index import read_manifest

    manifest = read_manifest(settings.index_dir)
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        print_index_info(manifest, settings.index_dir)
    return 0


def cmd_index_publish(args: argparse.Namespace, settings: Settings) -> int:
    from workers.state import publish_index

    index = load_index(settings)
    sent = publish_index(settings.kafka, index, settings.index_dir)
    print(
        f"published {sent} references to {settings.kafka.bank_topic}; {settings.index_dir} "
        f"now records offsets {index.changelog_offsets}"
    )
    return 0


def cmd_index_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from workers.state import snapshot

    name, dim = encoder_identity(settings)
    index = snapshot(settings.kafka, name, dim, settings.index_dir, force=args.force)
    print(f"snapshot of {settings.kafka.bank_topic} at offsets {index.changelog_offsets}")
    print_index_info(index.manifest(), settings.index_dir)
    return 0


def _reference_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The fields `fraud index update` changes, from its flags."""
    changes: dict[str, Any] = {"changed_by": args.by, "reason": args.reason}
    if args.label:
        changes["label"] = args.label
        changes["category"] = args.category if args.label == "fraud" else None
    elif args.category:
        changes["category"] = args.category
    if args.weight is not None:
        if not args.weight > 0:
            raise DataError(f"--weight must be > 0, got {args.weight} (use --disable instead)")
        changes["weight"] = args.weight
    if args.disable or args.enable:
        changes["disabled"] = args.disable
    return changes


def cmd_index_update(args: argparse.Namespace, settings: Settings) -> int:
    from workers.state import update_reference

    changes = _reference_changes(args)
    index = load_index(settings)
    ref = update_reference(settings.kafka, index, args.id, remove=args.remove, **changes)
    if ref is None:
        print(f"removed reference {args.id} (tombstone on {settings.kafka.bank_topic})")
    else:
        print(
            f"reference {ref.id}: {ref.label}/{ref.category}, weight {ref.weight:g}"
            f"{', disabled' if ref.disabled else ''}; published to {settings.kafka.bank_topic}"
        )
    return 0


def _labeled_rows(path: Path) -> list[tuple[str, str]]:
    """(text, raw label lowercased) of a labeled CSV; its labels mapped per --mapping."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [(r["text"], (r["label"] or "").strip().lower()) for r in csv.DictReader(f)]
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV with columns text,label ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _mapping_figures(labels: list[str], scores, threshold: float, mapping: str) -> dict:
    """Figures of one label mapping "FRAUD,LABELS:LEGIT,LABELS" (other rows left out)."""
    import numpy as np

    from fraud.datasets import parse_label_list
    from fraud.quality.evaluation import classification_metrics

    fraud_part, _, legit_part = mapping.partition(":")
    fraud, legit = set(parse_label_list(fraud_part)), set(parse_label_list(legit_part))
    if not fraud or not legit or fraud & legit:
        raise DataError(f"--mapping {mapping!r}: expected FRAUD_LABELS:LEGIT_LABELS, disjoint")
    keep = np.array([label in fraud | legit for label in labels])
    y = np.array([label in fraud for label in labels])[keep]
    s = np.asarray(scores)[keep]
    if y.all() or not y.any():
        raise DataError(f"--mapping {mapping!r}: needs rows of both sides in the CSV")
    figures = classification_metrics(y, s, s >= threshold)
    fp, legit_n = figures["confusion"]["fp"], int((~y).sum())
    return {"fraud": int(y.sum()), "legit": legit_n, "false_alert_rate": fp / legit_n, **figures}


def _scores_with_history(detector, settings: Settings, texts, recipients: int, passes: int):
    """The texts scored in file order through the worker's scoring path with the recipient
    history (HistoryScorer, settings.history), in micro-batches of settings.kafka.max_batch,
    recipient i mod `recipients`; `passes` times into the same history (new message ids),
    the last pass's scores returned. Offline: no Kafka, the same scorer as the worker."""
    from fraud.scoring.history import Arrival, HistoryScorer, RecipientHistory

    scorer = HistoryScorer(detector, RecipientHistory(settings.history))
    queries, n, scores = detector.encode(texts), len(texts), []
    for p in range(passes):
        scores = []
        for start in range(0, n, settings.kafka.max_batch):
            rows = list(range(start, min(n, start + settings.kafka.max_batch)))
            arrivals = [
                Arrival(f"p{p}-{i}", f"r{i % recipients}", (p * n + i) * 1000, p * n + i)
                for i in rows
            ]
            result = scorer.score(arrivals, queries[rows], [texts[i] for i in rows])
            scores += [a.score for a in result.assessments]
    return scores


def cmd_index_measure(args: argparse.Namespace, settings: Settings) -> int:
    """Score a labeled CSV with the index's detector, as the worker would without history,
    and report its figures at the detector's own threshold, per label mapping."""
    import os
    import sys

    from fraud.index.files import sha256_file
    from fraud.scoring import Detector

    rows = _labeled_rows(args.csv)
    detector = Detector.from_settings(settings)
    texts = [text for text, _ in rows]
    if args.through_worker:
        from workers.demo import stream_through_worker

        scores = stream_through_worker(
            settings, settings.index_dir, texts, args.recipients, args.passes
        )
    elif args.recipients:
        scores = _scores_with_history(detector, settings, texts, args.recipients, args.passes)
    else:
        scores = [a.score for a in detector.score(detector.encode(texts), texts).assessments]
    threshold = detector.params.threshold
    mappings = args.mapping or ["fraud,spam,smishing,scam:legit,ham"]
    report = {
        "command": "fraud index measure " + " ".join(sys.argv[3:]),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("FRAUD_")},
        "csv": args.csv.name,
        "csv_sha256": sha256_file(args.csv),
        "detector": {**detector.info, "scorer": detector.choice.scorer},
        "threshold": threshold,
        "through_worker": args.through_worker,
        "history": (
            {"recipients": args.recipients, "passes": args.passes, **settings.history.model_dump()}
            if args.recipients
            else None
        ),
        "mappings": {
            m: _mapping_figures([r[1] for r in rows], scores, threshold, m) for m in mappings
        },
    }
    for mapping, f in report["mappings"].items():
        print(
            f"{mapping}: {f['fraud']} fraud / {f['legit']} legit: precision {f['precision']:.3f}"
            f", recall {f['recall']:.3f}, false alerts {f['confusion']['fp']} "
            f"({f['false_alert_rate']:.2%}); PR-AUC {f['pr_auc']:.4f}, recall at 1% FPR "
            f"{f['recall_at_1pct_fpr']:.3f} (threshold {threshold:.4f})"
        )
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


# -- parsers -----------------------------------------------------------------------------


def _add_build(isub) -> None:
    p = isub.add_parser("build", parents=[COMMON, LABELS, SCORER], help="build an index")
    p.add_argument("--out", dest="index", type=Path, help="same as --index")
    p.add_argument(
        "--index-type",
        choices=["flat", "ivf"],
        default="flat",
        help="flat: exact search (default); ivf: approximate (IVF lists, HNSW quantizer), "
        "for large banks (hnsw alone cannot remove references, so it is not offered)",
    )
    p.add_argument("--nlist", type=int, help="ivf: number of lists (default: about n / 256)")
    p.add_argument("--nprobe", type=int, default=16, help="ivf: lists searched per query")
    p.add_argument(
        "--ivf-min-size",
        type=int,
        default=10_000,
        help="ivf: stay flat (exact) until the index holds this many references",
    )
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_index_build)


def _add_fit_default(isub) -> None:
    p = isub.add_parser(
        "fit-default",
        parents=[COMMON, SCORER],
        help="fit the default detector's head and thresholds into the package (maintainers)",
    )
    p.add_argument("--out", type=Path, default=default_head_dir(), help="default: the package's")
    p.add_argument("--force", action="store_true", help="replace the files there")
    p.set_defaults(func=cmd_index_fit_default)


def _add_update(isub) -> None:
    p = isub.add_parser(
        "update", parents=[COMMON, KAFKA], help="change one reference of the bank (live)"
    )
    p.add_argument("id", type=int, help="reference id")
    p.add_argument("--label", choices=["fraud", "legit"])
    p.add_argument("--category", help="fraud category")
    p.add_argument("--weight", type=float, help="attention weight (> 0; 1 is neutral)")
    on_off = p.add_mutually_exclusive_group()
    on_off.add_argument("--disable", action="store_true", help="keep it, never a key")
    on_off.add_argument("--enable", action="store_true")
    on_off.add_argument("--remove", action="store_true", help="delete it (a tombstone)")
    p.add_argument("--by", help="who makes the change")
    p.add_argument("--reason", help="why")
    p.set_defaults(func=cmd_index_update)


def register(subparsers) -> None:
    """`fraud index` and its subcommands."""
    index = subparsers.add_parser("index", help="build and inspect reference indexes")
    isub = index.add_subparsers(dest="index_command", required=True)
    _add_build(isub)
    p = isub.add_parser("add", parents=[COMMON, LABELS], help="append references from a CSV")
    p.set_defaults(func=cmd_index_add)
    p = isub.add_parser(
        "publish", parents=[COMMON, KAFKA], help="write an index's references to the bank topic"
    )
    p.set_defaults(func=cmd_index_publish)
    p = isub.add_parser(
        "snapshot", parents=[COMMON, KAFKA], help="write the bank topic as an index directory"
    )
    p.add_argument("--out", dest="index", type=Path, help="same as --index")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_index_snapshot)
    _add_update(isub)
    _add_fit_default(isub)
    p = isub.add_parser(
        "measure", parents=[COMMON], help="an index's figures on a labeled CSV, per label mapping"
    )
    p.add_argument("--csv", type=Path, required=True, help="CSV with columns text,label")
    p.add_argument(
        "--mapping",
        action="append",
        help="FRAUD_LABELS:LEGIT_LABELS, e.g. smishing,spam:ham (repeatable; rows of other "
        "labels are left out; default: the usual fraud and legit labels)",
    )
    p.add_argument(
        "--recipients",
        type=int,
        default=0,
        help="score through the recipient history (FRAUD_HISTORY__*), message i to "
        "recipient i mod N, in file order (default 0: no history, as `fraud serve`)",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=1,
        help="with --recipients: stream the file this many "
        "times into the same history, and report the last pass",
    )
    p.add_argument(
        "--through-worker",
        action="store_true",
        help="stream the file through a real `fraud worker` on a local broker (as `fraud "
        "demo` runs it) and read its scores back, instead of scoring in this process",
    )
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.set_defaults(func=cmd_index_measure)
    p = isub.add_parser("info", parents=[COMMON], help="show an index's manifest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index_info)
