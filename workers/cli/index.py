"""`fraud index`: reference indexes on disk, and the reference bank on Kafka.

fraud index build [--csv FILE] [--out DIR]      build an index (default: the seed set)
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
)


def cmd_index_build(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.data import seed_references_path
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
    csv_path = Path(args.csv) if args.csv else seed_references_path()
    items = read_labeled_csv(csv_path, args.fraud_labels, args.legit_labels)
    encoder = load_encoder(settings)
    source = args.source or csv_path.name
    scorer = settings.scorer.model_dump()
    index = build_index(encoder, items, source, scorer, not args.quiet, spec)
    index.save(settings.index_dir, force=args.force)
    print_index_info(index.manifest(), settings.index_dir)
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
    p = isub.add_parser("info", parents=[COMMON], help="show an index's manifest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index_info)
