"""``onnx-prune weights``: the static weight-sparsity scan."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console

from onnx_prune.cli import model_argument, model_inputs, parse_eps, resolve_model, write_json
from onnx_prune.constants import ConstantResolver
from onnx_prune.files import check_outputs
from onnx_prune.jsondoc import weights_document
from onnx_prune.layers import find_compute_layers
from onnx_prune.load import load_model
from onnx_prune.report.weights import format_weights
from onnx_prune.weights import count_zero_weights

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers


def run(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune weights``: the static weight-sparsity scan."""
    model = resolve_model(args.model)
    check_outputs([("--json", args.json)], lambda: model_inputs(model))
    loaded = load_model(model)
    resolver = ConstantResolver(loaded)
    scan = find_compute_layers(loaded.model, resolver)
    report = count_zero_weights(loaded, eps=args.eps, scan=scan, resolver=resolver)
    if args.json != "-":
        if scan.layers:
            console.print(format_weights(report))
        else:
            console.print(f"{loaded.path}: {scan.no_layer_message()}", style="yellow")
            if report.unresolved:
                console.print(format_weights(report))
    if args.json:
        write_json(weights_document(report), args.json)
    return 0


def add_parser(commands: Subparsers) -> None:
    """Register ``weights``."""
    parser = commands.add_parser(
        "weights", help="static weight sparsity per layer: zero and near-zero weights, zero filters"
    )
    model_argument(parser)
    parser.add_argument(
        "--eps", type=parse_eps, default=(0.0,), help="comma list of ε (default 0): |w| <= ε"
    )
    parser.add_argument("--json", metavar="PATH", help="write the JSON document (- for stdout)")
    parser.set_defaults(handler=run)
