"""The measuring commands: benchmarks, the soak, and the Prometheus report.

    fraud bench --csv FILE          the encoder against its bound, attention, retrieval, end to
                                    end, `fraud serve` under load
    fraud bench-serve --csv FILE    `fraud serve` under load alone, against the encoder alone
    fraud soak --csv FILE           a steady stream through one worker: memory, lag, errors
    fraud report                    a PNG of throughput, alerts, latency and lag

The runs are in workers/bench/ (commands.py assembles each report); this module reads the
flags, prints the tables and writes the report files.
"""

# Handlers import the benchmarks (torch, FAISS, Kafka, rich) inside themselves, so that
# `fraud --help` stays fast: the one deliberate kind of function-local import.

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from fraud.config import Settings
from fraud.errors import DataError
from workers.cli.common import COMMON, LABELS, load_encoder, read_csv_arg, write_json


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """The encoder against its bound, attention, retrieval, end to end and `fraud serve`:
    one run."""
    from rich.console import Console

    from fraud.encoding import bundled_model_path
    from workers.bench.anchor import sentence_transformers_bench
    from workers.bench.commands import anchor_ratios, git_commit, variants_part
    from workers.bench.encoder import attention_bench, encoder_bench
    from workers.cli.quality import command_line

    _check_serve_counts(
        serve_requests=args.serve_requests,
        serve_latency_requests=args.serve_latency_requests,
        serve_concurrency=args.serve_concurrency,
    )
    rows = read_csv_arg(
        args, "fraud bench needs messages of realistic length: --csv PATH (text column)"
    )
    texts = [row.text for row in rows]
    report: dict[str, Any] = {
        "command": command_line(args),
        "commit": git_commit(),
        "encoder_variant": settings.encoder_variant,
        "load_average_before": os.getloadavg(),
        "csv": str(args.csv),
        "texts": len(texts),
    }
    console = Console()
    encoder = load_encoder(settings)
    console.print(f"encoder: {len(texts)} texts from {args.csv} ...")
    report["encoder"] = enc = encoder_bench(encoder, texts[: args.encoder_texts])
    report["attention"] = attention_bench()
    console.print(_encoder_table(encoder.variant, enc))
    # The anchor: the same model under sentence-transformers, on the same texts.
    plain_model = settings.model_path or bundled_model_path()
    if not args.no_anchor:
        console.print("sentence-transformers encode (fp32, bf16) on the same texts ...")
        report["anchor_encode"] = sentence_transformers_bench(
            encoder, plain_model, texts[: args.encoder_texts]
        )
    dataset = _quality_dataset(rows) if args.quality else None
    report["variants"] = variants_part(
        settings, texts[: args.encoder_texts], console.print, dataset, args.cache_dir
    )
    console.print(_variants_table(report["variants"], args.quality))
    console.print(
        f"attention alone: {report['attention']['us_per_message']} µs per message "
        f"(batch 64, 32 keys)"
    )
    if args.sizes:
        from workers.bench.retrieval import retrieval_bench

        sizes = [int(float(x)) for x in args.sizes.split(",")]
        report["retrieval"] = retrieval_bench(sizes=sizes, progress=True)
        console.print(_rows_table("retrieval alone", report["retrieval"]))
    if not args.no_end_to_end:
        report.update(_end_to_end(args, settings, encoder, texts, enc, plain_model, console))
    if not args.no_serve:  # after the broker part: its broker is stopped by then
        report["serve"] = _serve(args, settings, encoder, texts, enc, console)
    report["anchor_ratios"] = anchor_ratios(report)
    report["load_average_after"] = os.getloadavg()
    console.print(f"the project over the anchor: {report['anchor_ratios']}")
    write_json(args.out, report)
    console.print(f"wrote {args.out}")
    return 0


def _end_to_end(args, settings, encoder, texts, enc, plain_model, console) -> dict[str, dict]:
    """`fraud bench`'s broker part: one worker, scale-out, exactly-once and the plain
    pipeline, each with its fractions of the encoder alone (`enc`), printed."""
    from workers.bench.commands import add_fractions_of_encoder, end_to_end_part

    runs = end_to_end_part(
        settings,
        encoder,
        texts,
        args.messages,
        console.print,
        workers=args.workers,
        partitions=args.partitions,
        exactly_once=not args.no_exactly_once,
        local_broker=not args.bootstrap_servers,
        plain_model=None if args.no_anchor else plain_model,
    )
    add_fractions_of_encoder(runs, enc, settings.encode_batch_size)
    _print_end_to_end(console, runs)
    return runs


def _serve(args, settings, encoder, texts, enc, console) -> dict[str, Any]:
    """`fraud bench`'s serve part: `fraud serve` under load against the encoder alone
    (`enc`), as `fraud bench-serve` measures it, printed."""
    from workers.bench.commands import serve_part

    r = serve_part(
        settings,
        encoder,
        texts,
        enc,
        console.print,
        args.serve_requests,
        args.serve_latency_requests,
        args.serve_concurrency,
    )
    _print_serve(console, enc, r)
    return r


def _check_serve_counts(**counts: int) -> None:
    """The serve part's request counts, by flag name, before anything is measured."""
    if min(counts.values()) < 1:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in counts)
        raise DataError(f"{flags}: each must be >= 1")


def _quality_dataset(rows):
    """The --csv rows as the evaluation harness's Dataset (deduplicated), for --quality."""
    from fraud.fitting import Dataset

    return Dataset.from_labeled(rows)


def cmd_bench_serve(args: argparse.Namespace, settings: Settings) -> int:
    """`fraud serve` under load from this process, against the encoder alone."""
    from rich.console import Console

    from workers.bench.commands import bench_serve_report

    _check_serve_counts(
        requests=args.requests,
        latency_requests=args.latency_requests,
        concurrency=args.concurrency,
    )
    missing = "fraud bench-serve needs messages of realistic length: --csv PATH"
    texts = [row.text for row in read_csv_arg(args, missing)]
    console = Console()
    report: dict[str, Any] = {"csv": str(args.csv), "texts": len(texts)}
    report |= bench_serve_report(
        settings,
        texts,
        console.print,
        encoder_texts=args.encoder_texts,
        requests=args.requests,
        latency_requests=args.latency_requests,
        concurrency=args.concurrency,
    )
    _print_serve(console, report["encoder"], report["serve"])
    write_json(args.out, report)
    console.print(f"wrote {args.out}")
    return 0


def cmd_soak(args: argparse.Namespace, settings: Settings) -> int:
    """A steady stream for minutes through one worker: memory (RSS and the recipient
    history's), lag and errors over time."""
    from workers.bench.commands import soak_passed, soak_report

    missing = "fraud soak needs messages of realistic length: --csv PATH (text column)"
    texts = [row.text for row in read_csv_arg(args, missing)]
    r = soak_report(
        settings,
        texts,
        lambda line: print(line, flush=True),
        args.rate,
        args.minutes,
        args.out,
        recipients=args.recipients,
        history_mib=args.history_mib,
        local_broker=not args.bootstrap_servers,
        command="fraud " + " ".join(sys.argv[1:]),
    )
    write_json(args.out, r)
    print(
        f"{r['messages_decided']} of {r['messages_sent']} messages decided in {r['duration_s']} s; "
        f"worker RSS {r['rss_mib_start']} MiB at start, {r['rss_mib_end']} MiB at the end "
        f"(max {r['rss_mib_max']}; after the first minute within "
        f"{r['rss_spread_after_1min_pct']}%, bar {r['flat_bar_pct']}%); "
        f"history full at {r['history_full_at_s']} s, at most {r['history_entries_max']} "
        f"entries, {r['history_bytes_max']} bytes; lag at most {r['lag_max']}, {r['lag_end']} "
        f"at the end; {r['worker_errors']} errors, {r['worker_warnings']} warnings in "
        f"{r['worker_log']}; wrote {args.out}"
    )
    return 0 if soak_passed(r) else 1


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from workers.report import render_report

    if args.minutes <= 0 or args.step <= 0:
        raise DataError(f"--minutes and --step must be > 0, got {args.minutes} and {args.step}")
    end = time.time()
    out = render_report(args.prometheus, end - args.minutes * 60, end, args.out, args.step)
    print(f"wrote {out} ({args.minutes:g} minutes from {args.prometheus})")
    return 0


# -- the tables --------------------------------------------------------------------------


def _table(title: str, columns: list[str]):
    """A rich table with right-aligned columns."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    return table


def _encoder_table(variant: str, enc: dict[str, Any]):
    """The encoder alone at each batch size, against its bound."""
    table = _table(
        f"encoder alone, {variant} ({enc['tokens_per_message']['mean']} "
        f"tokens/message, {enc['mflop_per_message']} MFLOP; {enc['precision']} matmul "
        f"{enc['matmul_gflops']} G/s -> bound {enc['bound_messages_per_s']} msg/s; fp32 bound "
        f"{enc['bound_fp32_messages_per_s']})",
        ["batch size", "messages/s", "ms per batch", "of bound", "of fp32 bound"],
    )
    for row in enc["rows"]:
        table.add_row(
            str(row["batch_size"]),
            f"{row['messages_per_s']:.1f}",
            f"{row['ms_per_batch']:.1f}",
            f"{row['fraction_of_bound']:.0%}",
            f"{row['fraction_of_fp32_bound']:.0%}",
        )
    return table


def _variants_table(rows: dict[str, dict], quality: bool):
    """Every encoder variant: speed, fidelity and, with --quality, the PR-AUC it keeps."""
    columns = ["variant", "msg/s", "of bound", "of fp32 bound", "cosine mean", "cosine min"]
    columns += ["alone vs batch min", "keeps embeddings"]
    columns += ["PR-AUC", "drop", "qualifies"] if quality else []
    table = _table(
        "encoder variants (cosine: to torch-fp32; alone vs batch: batchmates' effect)", columns
    )
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
        if quality:
            cells += [
                f"{r['cv_pr_auc']:.4f}",
                f"{r['cv_pr_auc_drop']:+.4f}",
                str(r["cv_qualifies"]),
            ]
        table.add_row(*cells)
    return table


def _rows_table(title: str, rows: list[dict[str, Any]]):
    """A list of flat dicts as a table, one column per key."""
    table = _table(title, list(rows[0]) if rows else [])
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    return table


def _print_end_to_end(console, runs: dict[str, dict]) -> None:
    """One line per end-to-end run: saturation, latency at half of it, the workers' cost."""
    e2e = runs["end_to_end"]
    lat = e2e["latency_at_half_saturation"]
    console.print(
        f"end to end: {e2e['saturation_messages_per_s']} msg/s at saturation "
        f"({e2e['fraction_of_encoder_alone']:.0%} of the encoder's best), latency at "
        f"{lat['rate_per_s']} msg/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms; "
        f"worker {e2e['worker_cpu_cores_at_saturation']} cores, "
        f"peak {e2e['worker_peak_rss_mib']} MiB"
    )
    if r := runs.get("scale_out"):
        console.print(
            f"{r['workers']} workers: {r['saturation_messages_per_s']} msg/s at saturation "
            f"({r['worker_cpu_cores_at_saturation']} cores in all)"
        )
    if r := runs.get("plain_pipeline"):
        console.print(
            f"plain pipeline (sentence-transformers, FAISS flat): "
            f"{r['saturation_messages_per_s']} msg/s at saturation, "
            f"{r['cpu_cores_at_saturation']} cores, peak {r['peak_rss_mib']} MiB"
        )
    if r := runs.get("exactly_once"):
        lat = r["latency_at_half_saturation"]
        ratio = r["saturation_messages_per_s"] / e2e["saturation_messages_per_s"]
        console.print(
            f"exactly-once: {r['saturation_messages_per_s']} msg/s at saturation "
            f"({ratio:.0%} of at-least-once), latency at {lat['rate_per_s']} msg/s: "
            f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms"
        )


def _print_serve(console, enc: dict[str, Any], r: dict[str, Any]) -> None:
    """The serve part: its table against the encoder alone, then CPU and memory."""
    console.print(_serve_table(enc, r))
    console.print(
        f"CPU: encoder alone {enc['cpu_cores']} cores; server at saturation "
        f"{r['server_cpu_cores_at_saturation']} cores; load generator "
        f"{r['load_generator_cpu_cores_at_saturation']} cores. Server RSS: "
        f"{r['server_rss_mib_at_start']} MiB at start, "
        f"{r['server_rss_mib_after_first_request']} after the first request, "
        f"{r['server_peak_rss_mib']} at peak"
    )


def _serve_table(enc: dict[str, Any], r: dict[str, Any]):
    """The encoder alone at each batch size, then the service at saturation and at half."""
    lat = r["latency_at_half_saturation"]
    table = _table(
        f"fraud serve, {r['concurrency']} connections at saturation",
        ["", "messages/s", "p50 ms", "p99 ms"],
    )
    for row in enc["rows"]:
        table.add_row(f"encoder alone, batch {row['batch_size']}", f"{row['messages_per_s']:.1f}")
    same = r.get("fraction_of_encoder_at_its_batch")
    table.add_row(
        "fraud serve at saturation",
        f"{r['saturation_messages_per_s']:.1f} ({r['fraction_of_encoder_alone']:.0%} of the "
        f"encoder's best" + ("" if same is None else f", {same:.0%} at its batch") + ")",
    )
    table.add_row(
        "fraud serve at half of it",
        f"{lat['rate_per_s']:.1f}",
        f"{lat['p50_ms']}",
        f"{lat['p99_ms']}",
    )
    return table


# -- parsers -----------------------------------------------------------------------------


def _add_bench(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        parents=[COMMON, LABELS],
        help="measure encoder, retrieval, end to end and fraud serve",
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
        "--partitions",
        type=int,
        default=4,
        help="scale out: the input topic's partitions (a consumer group spreads them over "
        "the workers)",
    )
    p.add_argument(
        "--no-exactly-once", action="store_true", help="skip the exactly-once end-to-end run"
    )
    p.add_argument(
        "--no-anchor",
        action="store_true",
        help="skip the anchor: sentence-transformers' encode and the plain pipeline",
    )
    p.add_argument("--bootstrap-servers", help="use this cluster instead of starting a broker")
    p.add_argument(
        "--no-serve", action="store_true", help="skip `fraud serve` under load (the serve part)"
    )
    p.add_argument("--serve-requests", type=int, default=1500, help="serve: at saturation")
    p.add_argument("--serve-latency-requests", type=int, default=1000, help="serve: at half of it")
    p.add_argument(
        "--serve-concurrency", type=int, default=64, help="serve: connections at saturation"
    )
    p.set_defaults(func=cmd_bench)


def _add_bench_serve(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-serve",
        parents=[COMMON, LABELS],
        help="fraud serve under load on loopback: saturation, latency at half of it",
    )
    p.add_argument("--out", type=Path, default=Path("out/bench-serve.json"))
    p.add_argument("--encoder-texts", type=int, default=1000, help="texts for the encoder part")
    p.add_argument("--requests", type=int, default=1500, help="requests at saturation")
    p.add_argument("--latency-requests", type=int, default=1000, help="requests at half of it")
    p.add_argument("--concurrency", type=int, default=64, help="connections at saturation")
    p.set_defaults(func=cmd_bench_serve)


def _add_soak(subparsers) -> None:
    p = subparsers.add_parser(
        "soak",
        parents=[COMMON, LABELS],
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


def register(subparsers) -> None:
    """bench, bench-serve, soak and report."""
    _add_bench(subparsers)
    _add_bench_serve(subparsers)
    _add_soak(subparsers)
    p = subparsers.add_parser(
        "report",
        parents=[COMMON],
        help="a PNG of throughput, alerts, latency and lag, from Prometheus",
    )
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus URL")
    p.add_argument("--minutes", type=float, default=30.0, help="how far back from now")
    p.add_argument("--step", type=float, default=5.0, help="seconds between points")
    p.add_argument("--out", type=Path, default=Path("out/report.png"))
    p.set_defaults(func=cmd_report)
