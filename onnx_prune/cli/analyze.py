"""``onnx-prune analyze``: feature-map sparsity at run time, over calibration samples."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.cli import (
    DEFAULT_IMAGES,
    add_distributed_arguments,
    add_provider_arguments,
    files_under,
    is_embedded,
    model_argument,
    model_inputs,
    parse_eps,
    positive_int,
    providers_from,
    resolve_model,
    runner_from,
    write_json,
)
from onnx_prune.epsmap import EpsMap, map_savings, merged_eps, read_eps_map
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import DEFAULT_EPS, BatchAxes, SampleSource, parse_batch_axis
from onnx_prune.files import check_outputs
from onnx_prune.inputs import PRESETS
from onnx_prune.jsondoc import analysis_document, map_savings_document
from onnx_prune.plot import check_plot_path, plot_analysis
from onnx_prune.probes import DEFAULT_TILE
from onnx_prune.report.analysis import format_analysis
from onnx_prune.report.epsmap import format_map_savings

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers

DEFAULT_MODEL_PRESET = "efficientnet-lite"


def parse_size(text: str) -> tuple[int, int]:
    """``224`` or ``224x192`` (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes H or HxW, got '{text}'") from None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"--size takes H or HxW, got '{text}'")
    return (values[0], values[-1])


def parse_tile(text: str) -> tuple[int, int]:
    """``8`` or ``8x8`` (height x width of a tile, both above 0)."""
    try:
        return parse_size(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--tile takes H or HxW above 0, got '{text}'") from None


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and prepare calibration samples (shared with ``accuracy``)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--images", nargs="+", type=Path, metavar="PATH", help="image files or folders"
    )
    source.add_argument(
        "--inputs", type=Path, metavar="FILE", help=".npy or .npz of ready input tensors"
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="image preprocessing (default: imagenet; efficientnet-lite for the embedded model)",
    )
    parser.add_argument(
        "--size", type=parse_size, help="image size HxW when the model's is not fixed"
    )
    add_batch_arguments(parser)
    parser.add_argument(
        "--strict", action="store_true", help="an unreadable image is an error, not skipped"
    )
    add_provider_arguments(parser)


def batch_axis(text: str) -> tuple[str, int | None]:
    """One ``--batch-axis NAME=AXIS``."""
    try:
        return parse_batch_axis(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch-size, --limit and --batch-axis, the same on every command that feeds samples."""
    parser.add_argument("--batch-size", type=positive_int, default=8, help="default 8")
    parser.add_argument("--limit", type=positive_int, help="use the first N samples only")
    parser.add_argument(
        "--batch-axis",
        type=batch_axis,
        action="append",
        default=[],
        metavar="NAME=AXIS",
        help="input NAME holds samples on AXIS (none: no batch axis, fed whole to every batch); "
        "default: the axis of the dim the inputs share, or 0",
    )


def batch_axes_from(args: argparse.Namespace) -> BatchAxes:
    """The --batch-axis overrides, the last one winning for a name given twice."""
    return tuple(dict(args.batch_axis).items())


def calibration_from(args: argparse.Namespace, model: Path) -> SampleSource:
    """The calibration source the flags describe (embedded photos for the embedded model)."""
    images = tuple(args.images or ())
    if not images and args.inputs is None:
        if not is_embedded(model):
            raise InputDataError(
                f"no calibration data for {model}: give --images DIR or --inputs FILE.npy"
            )
        images = (DEFAULT_IMAGES,)
    default_preset = DEFAULT_MODEL_PRESET if is_embedded(model) else "imagenet"
    return SampleSource(
        images=images,
        tensors=args.inputs,
        preset=args.preset or default_preset,
        size=args.size,
        batch_size=args.batch_size,
        limit=args.limit,
        strict=args.strict,
        batch_axes=batch_axes_from(args),
    )


def check_calibration_outputs(
    args: argparse.Namespace,
    model: Path,
    images: tuple[Path, ...],
    tensors: Path | None,
    *,
    more: tuple[Path, ...] = (),
) -> None:
    """Refuse --json and --plot paths that cannot be written or name an input, before any work."""

    def inputs() -> Iterator[Path]:
        yield from model_inputs(model)
        yield from (tensors,) if tensors is not None else ()
        yield from files_under((*images, *more))
        yield from (args.eps_map,) if getattr(args, "eps_map", None) is not None else ()

    check_outputs([("--json", args.json), ("--plot", args.plot)], inputs)
    if args.plot is not None:
        check_plot_path(args.plot)


def run_analysis(
    args: argparse.Namespace, console: Console, *, eps_map: EpsMap | None = None
) -> Analysis:
    """Run the analysis the flags describe, with a progress bar on a terminal; with ``eps_map``
    also at every ε of the map."""
    model = resolve_model(args.model)
    calibration = calibration_from(args, model)
    check_calibration_outputs(args, model, calibration.images, calibration.tensors)
    columns = (
        TextColumn("calibrating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=args.json == "-") as bar:
        task = bar.add_task("calibrating", total=None, rate="")

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.1f} samples/s" if elapsed else ""
            bar.update(task, completed=done, total=total or None, rate=rate)

        providers = providers_from(args)
        with runner_from(args) as runner:
            return analyze_model(
                model,
                calibration,
                eps=merged_eps(args.eps, eps_map),
                eps_map=eps_map,
                tile=args.tile,
                bits=args.bits,
                optimize=not args.no_optimize,
                providers=providers,
                progress=progress,
                runner=runner,
            )


def run(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune analyze``."""
    eps_map = read_eps_map(args.eps_map) if args.eps_map is not None else None
    analysis = run_analysis(args, console, eps_map=eps_map)
    savings = map_savings(analysis.bandwidth, eps_map) if eps_map is not None else None
    if args.json != "-":
        paper = args.paper or is_embedded(resolve_model(args.model))
        console.print(format_analysis(analysis, paper=paper))
        if eps_map is not None and savings is not None:
            console.print(format_map_savings(savings, eps_map, analysis.bandwidth))
    if args.json:
        document = analysis_document(analysis)
        if eps_map is not None and savings is not None:
            document["eps_map"] = map_savings_document(savings, eps_map)
        write_json(document, args.json)
    if args.plot:
        path = plot_analysis(analysis, analysis.bandwidth, args.plot)
        if args.json != "-":
            console.print(f"figures written to {path}")
    return 0


def add_parser(commands: Subparsers) -> None:
    """Register ``analyze``."""
    parser = commands.add_parser(
        "analyze",
        help="feature-map sparsity at run time: zero values and zero channels per layer and ε",
    )
    model_argument(parser)
    add_calibration_arguments(parser)
    add_distributed_arguments(parser, what="the samples' shards")
    parser.add_argument(
        "--eps",
        type=parse_eps,
        default=DEFAULT_EPS,
        help="comma list of ε (default 0,0.1,0.2,0.3,0.4,0.5): |x| <= ε counts as zero",
    )
    parser.add_argument(
        "--eps-map",
        type=Path,
        metavar="PATH",
        help="an ε map from tune: also report each layer's savings at its own ε",
    )
    parser.add_argument(
        "--bits",
        type=positive_int,
        help="count every tensor at N bits (16: the paper's accounting)",
    )
    parser.add_argument(
        "--tile", type=parse_tile, default=DEFAULT_TILE, help="tile HxW for tile pruning (8x8)"
    )
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="run the graph as written, without onnxruntime's graph optimizations (slower)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="show the paper's MobileNet v2 figures beside this model's (default: only for "
        "the embedded model)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the JSON document (- for stdout)")
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="draw the paper's figures (needs matplotlib)"
    )
    parser.set_defaults(handler=run)
