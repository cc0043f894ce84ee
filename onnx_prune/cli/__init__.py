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
from types import ModuleType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from onnx_prune import __version__
from onnx_prune.errors import OnnxPruneError
from onnx_prune.jsondoc import Document, dumps

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "efficientnet_lite0.onnx"
DEFAULT_IMAGES = DEFAULT_MODEL.parent / "images"

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

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


def model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        type=Path,
        default=None,
        help="the .onnx file (default: the embedded EfficientNet-Lite0)",
    )


def resolve_model(path: Path | None) -> Path:
    return path if path is not None else DEFAULT_MODEL


def write_json(document: Document, destination: str) -> None:
    """Write a JSON document to a file, or to standard output for ``-``."""
    text = dumps(document)
    if destination == "-":
        sys.stdout.write(text)
    else:
        Path(destination).write_text(text, encoding="utf-8")


def _commands() -> list[ModuleType]:
    from onnx_prune.cli import accuracy, analyze, convert, weights, zoo

    return [weights, analyze, accuracy, zoo, convert]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="onnx-prune",
        description="How much of what an ONNX CNN moves through memory is zeros, "
        "and what skipping them would save.",
    )
    parser.add_argument("--version", action="version", version=f"onnx-prune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _commands():
        command.add_parser(commands)
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
