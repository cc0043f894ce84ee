"""``onnx-prune tune``: one ε per layer under an accuracy budget, checked on held-out samples.

The sample flags are ``accuracy``'s (the embedded photos for the embedded model). Without a
budget flag the budget is ``--min-agreement 1`` (every sample keeps its unpruned top-1).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from onnx_prune.budget import Budget
from onnx_prune.cli import (
    DEFAULT_IMAGES,
    add_distributed_arguments,
    files_under,
    is_embedded,
    model_argument,
    model_inputs,
    parse_eps,
    providers_from,
    resolve_model,
    runner_from,
    write_json,
)
from onnx_prune.cli.accuracy import sample_source
from onnx_prune.cli.analyze import add_calibration_arguments
from onnx_prune.epsmap import write_eps_map
from onnx_prune.files import check_outputs
from onnx_prune.jsondoc import tune_document
from onnx_prune.labels import load_labels
from onnx_prune.load import load_model
from onnx_prune.plot import check_plot_path, plot_tune
from onnx_prune.pruning import GRANULARITIES
from onnx_prune.report.tune import format_tune
from onnx_prune.tune import DEFAULT_CANDIDATES, tune_model

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers


def run(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune tune``."""
    model = resolve_model(args.model)
    _check_outputs(args, model)
    loaded = load_model(model)
    labels = load_labels(args.labels) if args.labels is not None else None
    source = sample_source(args, labels, embedded=is_embedded(model))
    status = console.status("tuning: savings, uniform sweep, sensitivity, validation")
    with runner_from(args) as runner, status:
        report = tune_model(
            loaded,
            source,
            budget=_budget(args),
            candidates=args.candidates,
            holdout=args.holdout,
            granularity=args.granularity,
            labels=labels,
            providers=providers_from(args),
            runner=runner,
        )
    quiet = args.json == "-"
    if not quiet:
        console.print(format_tune(report))
    if args.json:
        write_json(tune_document(report), args.json)
    if args.eps_map and report.eps_map is not None:
        write_eps_map(report.eps_map, args.eps_map)
        if not quiet:
            console.print(f"ε map written to {args.eps_map}")
    if args.plot:
        plot_tune(report, args.plot)
        if not quiet:
            console.print(f"figure written to {args.plot}")
    return 0 if report.eps_map is not None else 1


def _check_outputs(args: argparse.Namespace, model: Path) -> None:
    """Refuse --json, --eps-map and --plot paths that cannot be written or name an input."""
    images = tuple(args.images or ()) or ((DEFAULT_IMAGES,) if is_embedded(model) else ())

    def inputs() -> Iterator[Path]:
        yield from model_inputs(model)
        yield from (args.inputs,) if args.inputs is not None else ()
        yield from files_under((*images, *((args.labels,) if args.labels else ())))

    outputs = [("--json", args.json), ("--eps-map", args.eps_map), ("--plot", args.plot)]
    check_outputs(outputs, inputs)
    if args.plot is not None:
        check_plot_path(args.plot)


def _budget(args: argparse.Namespace) -> Budget:
    if args.max_top1_drop is not None:
        return Budget("top1_drop", args.max_top1_drop)
    if args.min_cosine is not None:
        return Budget("cosine", args.min_cosine)
    return Budget("agreement", 1.0 if args.min_agreement is None else args.min_agreement)


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"'{text}' must be between {low:g} and {high:g}")
        return value

    return parse


def _holdout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"--holdout takes a fraction in [0, 1), got {text}")
    return value


def add_parser(commands: Subparsers) -> None:
    """Register ``tune``."""
    parser = commands.add_parser(
        "tune", help="one ε per layer that saves most IFM load under an accuracy budget"
    )
    model_argument(parser)
    add_calibration_arguments(parser)
    parser.add_argument(
        "--labels", type=Path, metavar="FILE|DIR", help="labels, as for accuracy (for top-1)"
    )
    parser.add_argument(
        "--candidates",
        type=parse_eps,
        default=DEFAULT_CANDIDATES,
        help="comma list of candidate ε per layer (default 0,0.05,0.1,0.2,0.3,0.5,1)",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--max-top1-drop",
        type=_number(0, 100),
        metavar="PCT",
        help="top-1 may drop by at most PCT percentage points (needs --labels)",
    )
    budget.add_argument(
        "--min-agreement",
        type=_number(0, 1),
        metavar="X",
        help="at least this share of samples keep the unpruned top-1 (default budget: 1)",
    )
    budget.add_argument(
        "--min-cosine",
        type=_number(-1, 1),
        metavar="X",
        help="mean cosine similarity of pruned and unpruned outputs at least X",
    )
    parser.add_argument(
        "--holdout",
        type=_holdout,
        default=0.3,
        metavar="FRACTION",
        help="share of the samples held out to check the map (default 0.3, deterministic)",
    )
    parser.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="channel",
        help="prune whole channels (default) or single values",
    )
    add_distributed_arguments(parser, what="each sweep's shards")
    parser.add_argument("--json", metavar="PATH", help="write the JSON document (- for stdout)")
    parser.add_argument("--eps-map", type=Path, metavar="PATH", help="write the chosen ε map")
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="draw sensitivity curves and the frontier"
    )
    parser.set_defaults(handler=run)
