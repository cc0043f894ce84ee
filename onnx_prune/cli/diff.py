"""``onnx-prune diff OLD.json NEW.json``: what changed, layer by layer, between two analyses.

Exit status like ``zoo``: 0 nothing moved beyond the tolerance; 1 a figure moved beyond it or a
layer or model is only in one document; 2 usage or input error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from onnx_prune.cli.zoo import parse_tolerance
from onnx_prune.diff import DEFAULT_TOLERANCE, diff_documents
from onnx_prune.files import check_outputs, write_text
from onnx_prune.report.diff import format_diff, format_diff_markdown

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers


def run(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune diff``."""
    check_outputs([("--markdown", args.markdown)], lambda: (args.old, args.new))
    diff = diff_documents(args.old, args.new, tolerance=args.tolerance)
    if args.markdown != "-":
        console.print(format_diff(diff))
    if args.markdown:
        write_text(args.markdown, format_diff_markdown(diff))
    return 1 if diff.changed else 0


def add_parser(commands: Subparsers) -> None:
    """Register ``diff``."""
    parser = commands.add_parser(
        "diff",
        help="compare two analyze (or zoo) JSON documents layer by layer",
        description="Compare two analyze --json (or two zoo --json) documents layer by layer: "
        "IFM and OFM zero shares and IFM bytes saved per ε, layers matched by name. Exit "
        "status: 0 nothing moved beyond the tolerance; 1 something did, or a layer is only in "
        "one of them; 2 usage or input error.",
    )
    parser.add_argument("old", type=Path, metavar="OLD.json")
    parser.add_argument("new", type=Path, metavar="NEW.json")
    parser.add_argument(
        "--tolerance",
        type=parse_tolerance,
        default=DEFAULT_TOLERANCE,
        help="allowed move of a share, absolute on fractions (default 0.005 = 0.5 points)",
    )
    parser.add_argument(
        "--markdown", metavar="PATH", help="write the report as Markdown (- for stdout)"
    )
    parser.set_defaults(handler=run)
