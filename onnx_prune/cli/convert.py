"""``onnx-prune darknet`` and ``onnx-prune export``: make ONNX files of the paper's networks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from onnx_prune.files import check_outputs, write_bytes
from onnx_prune.load import default_opset

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers


def run_darknet(args: argparse.Namespace, console: Console) -> int:
    """Convert a Darknet cfg + weights pair to ONNX."""
    from onnx_prune.darknet import convert_darknet

    check_outputs([("-o", args.output)], lambda: (args.cfg, args.weights))
    model = convert_darknet(args.cfg, args.weights)
    write_bytes(args.output, model.SerializeToString())
    layers = sum(1 for node in model.graph.node if node.op_type in ("Conv", "Gemm"))
    console.print(f"wrote {args.output} ({layers} conv/fc layers, opset {default_opset(model)})")
    return 0


def run_export(args: argparse.Namespace, console: Console) -> int:
    """Export a torchvision model to ONNX."""
    from onnx_prune.export import export_torchvision

    check_outputs([("-o", args.output)], tuple)
    export_torchvision(args.name, args.output, random_weights=args.random_weights)
    note = " with RANDOM WEIGHTS" if args.random_weights else ""
    console.print(f"wrote {args.output}{note}")
    return 0


def add_parser(commands: Subparsers) -> None:
    """Register ``darknet`` and ``export``."""
    from onnx_prune.export import EXPORTABLE_MODELS

    darknet = commands.add_parser(
        "darknet", help="convert a Darknet cfg and weights file to ONNX (no Darknet needed)"
    )
    darknet.add_argument("cfg", type=Path, help="the Darknet .cfg file")
    darknet.add_argument("weights", type=Path, help="the Darknet .weights file")
    darknet.add_argument("-o", "--output", type=Path, required=True, help="the .onnx to write")
    darknet.set_defaults(handler=run_darknet)
    export = commands.add_parser(
        "export", help="export a torchvision model to ONNX (needs the export extra)"
    )
    export.add_argument("name", choices=EXPORTABLE_MODELS, help="the torchvision model")
    export.add_argument("-o", "--output", type=Path, required=True, help="the .onnx to write")
    export.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights instead of downloading ImageNet weights (marked in the file)",
    )
    export.set_defaults(handler=run_export)
