"""The ``onnx-prune`` command line: parses flags, runs the stages, prints with one Console.

An OnnxPruneError becomes one red line on standard error and exit status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from onnx_prune import __version__
from onnx_prune.errors import OnnxPruneError
from onnx_prune.jsondoc import Document, dumps

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0.onnx"
DEFAULT_IMAGES = DEFAULT_MODEL.parent / "images"

Handler = Callable[[argparse.Namespace, Console], int]


def parse_eps(text: str) -> tuple[float, ...]:
    """``"0,1e-3"`` as ``(0.0, 0.001)``: finite, non-negative, duplicates dropped, order kept."""
    values: list[float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{part}' in --eps is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"--eps values must be finite and >= 0, got {part}")
        if value not in values:
            values.append(value)
    return tuple(values)


def _model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        type=Path,
        default=None,
        help="the .onnx file (default: the embedded EfficientNet-Lite0)",
    )


def _resolve_model(path: Path | None) -> Path:
    return path if path is not None else DEFAULT_MODEL


def write_json(document: Document, destination: str) -> None:
    """Write a JSON document to a file, or to standard output for ``-``."""
    text = dumps(document)
    if destination == "-":
        sys.stdout.write(text)
    else:
        Path(destination).write_text(text, encoding="utf-8")


def run_weights(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune weights``: the static weight-sparsity scan."""
    from onnx_prune.jsondoc import weights_document
    from onnx_prune.load import load_model
    from onnx_prune.report import format_weights
    from onnx_prune.weights import count_zero_weights

    loaded = load_model(_resolve_model(args.model))
    report = count_zero_weights(loaded, eps=args.eps)
    if args.json != "-":
        console.print(format_weights(report))
    if args.json:
        write_json(weights_document(report), args.json)
    return 0


def _add_weights(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "weights", help="static weight sparsity per layer: zero and near-zero weights, zero filters"
    )
    _model_argument(parser)
    parser.add_argument(
        "--eps", type=parse_eps, default=(0.0,), help="comma list of ε (default 0): |w| <= ε"
    )
    parser.add_argument("--json", metavar="PATH", help="write the JSON document (- for stdout)")
    parser.set_defaults(handler=run_weights)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="onnx-prune",
        description="How much of what an ONNX CNN moves through memory is zeros, "
        "and what skipping them would save.",
    )
    parser.add_argument("--version", action="version", version=f"onnx-prune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_weights(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        handler: Handler = args.handler
        return handler(args, console)
    except OnnxPruneError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[red]interrupted[/]")
        return 130
