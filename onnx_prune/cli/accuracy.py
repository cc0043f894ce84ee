"""``onnx-prune accuracy``: top-1/top-5, agreement and load saved under ε-pruning, per ε.

Samples come from ``--images`` or ``--inputs``; without either, from ``--labels`` when that is a
folder of WordNet-id subfolders, else (for the embedded model only) from the embedded photos.
Without ``--preset`` the embedded model uses ``efficientnet-lite`` and any other model
``imagenet``. The sample flags are ``analyze``'s; ``--strict`` also makes an unlabelled sample an
error when ``--labels`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from onnx_prune.accuracy import measure_accuracy
from onnx_prune.cli import (
    DEFAULT_IMAGES,
    add_distributed_arguments,
    is_embedded,
    model_argument,
    parse_eps,
    providers_from,
    resolve_model,
    runner_from,
    write_json,
)
from onnx_prune.cli.analyze import (
    DEFAULT_MODEL_PRESET,
    add_calibration_arguments,
    batch_axes_from,
    check_calibration_outputs,
)
from onnx_prune.epsmap import read_eps_map
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import DEFAULT_EPS, SampleSource
from onnx_prune.jsondoc import accuracy_document
from onnx_prune.labels import Labels, image_files, load_labels
from onnx_prune.load import load_model
from onnx_prune.plot import plot_accuracy
from onnx_prune.pruning import GRANULARITIES
from onnx_prune.report.accuracy import format_accuracy

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers

OTHER_MODELS_PRESET = "imagenet"


def run(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune accuracy``: the ε sweep over labelled (or unlabelled) samples."""
    model = resolve_model(args.model)
    labels_path = (args.labels,) if args.labels is not None else ()
    images = tuple(args.images or ()) or ((DEFAULT_IMAGES,) if is_embedded(model) else ())
    check_calibration_outputs(args, model, images, args.inputs, more=labels_path)
    loaded = load_model(model)
    labels = load_labels(args.labels) if args.labels is not None else None
    if args.eps_map is not None and args.plot is not None:
        raise InputDataError("--plot draws a sweep over ε; an ε map is one point: drop --plot")
    eps_map = read_eps_map(args.eps_map) if args.eps_map is not None else None
    source = sample_source(args, labels, embedded=is_embedded(model))
    with runner_from(args) as runner, _progress(console, quiet=args.json == "-") as progress:
        task = progress.add_task("pruned runs", total=None, done=0)
        report = measure_accuracy(
            loaded,
            source,
            eps=args.eps,
            granularity=args.granularity,
            labels=labels,
            progress=lambda done, _total: progress.update(task, done=done),
            providers=providers_from(args),
            eps_map=eps_map,
            output=args.output,
            runner=runner,
        )
    budgets = {"max_drop": args.max_top1_drop, "min_cosine": args.min_cosine}
    if args.json != "-":
        console.print(format_accuracy(report, **budgets))
    if args.json:
        write_json(accuracy_document(report, **budgets), args.json)
    if args.plot:
        title = (
            f"{Path(report.model).name}: {report.granularity} pruning on {report.providers.label()}"
        )
        plot_accuracy(report.results, args.plot, title=title, random_weights=report.random_weights)
        if args.json != "-":
            console.print(f"figure written to {args.plot}")
    return 0


def sample_source(
    args: argparse.Namespace, labels: Labels | None, *, embedded: bool
) -> SampleSource:
    """The samples the flags name (shared with ``tune``)."""
    preset = args.preset or (DEFAULT_MODEL_PRESET if embedded else OTHER_MODELS_PRESET)
    images: tuple[Path, ...] = ()
    if args.inputs is None:
        images = _images(args, labels, embedded=embedded)
    return SampleSource(
        images=images,
        tensors=args.inputs,
        preset=preset,
        size=args.size,
        batch_size=args.batch_size,
        limit=args.limit,
        strict=args.strict,
        batch_axes=batch_axes_from(args),
    )


def _images(args: argparse.Namespace, labels: Labels | None, *, embedded: bool) -> tuple[Path, ...]:
    if args.images:
        return tuple(args.images)
    if labels is not None and labels.kind == "tree":
        return tuple(image_files(labels))
    if embedded:
        return (DEFAULT_IMAGES,)
    raise InputDataError(
        "no samples: give --images DIR|FILE..., --inputs X.npz, or --labels DIR with "
        "WordNet-id subfolders holding the images"
    )


def _progress(console: Console, *, quiet: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}: {task.fields[done]} samples"),
        console=console,
        transient=True,
        disable=quiet,
    )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"'{text}' must be a finite number >= 0")
    return value


def _cosine(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--min-cosine takes a number in [-1, 1], got {text}")
    return value


def add_parser(commands: Subparsers) -> None:
    """Register ``accuracy``."""
    parser = commands.add_parser(
        "accuracy",
        help="top-1/top-5 and agreement with the unpruned model under ε-pruning, per ε",
    )
    model_argument(parser)
    add_calibration_arguments(parser)
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE|DIR",
        help="CSV of name,class_index, or a folder of WordNet-id subfolders (then the images "
        "may come from it); with --strict every sample needs a label",
    )
    parser.add_argument(
        "--eps",
        type=parse_eps,
        default=DEFAULT_EPS,
        help="comma list of ε (default 0,0.1,0.2,0.3,0.4,0.5): values with |x| <= ε are pruned",
    )
    parser.add_argument(
        "--eps-map",
        type=Path,
        metavar="PATH",
        help="an ε map from tune: one run with each IFM at its own ε, instead of --eps",
    )
    parser.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="channel",
        help="prune whole channels (default, as the paper) or single values",
    )
    parser.add_argument(
        "--max-top1-drop",
        type=_non_negative,
        metavar="PCT",
        help="name the largest ε whose top-1 drop (agreement drop without labels) is within "
        "PCT percentage points",
    )
    parser.add_argument(
        "--min-cosine",
        type=_cosine,
        metavar="X",
        help="name the largest ε at which every output's mean cosine similarity to the "
        "unpruned output is at least X (the budget for detectors and other non-classifiers)",
    )
    parser.add_argument(
        "--output",
        metavar="NAME",
        help="the classifier output to score with top-1/top-5/agreement/KL (default: the first "
        "output shaped [N, classes])",
    )
    add_distributed_arguments(parser, what="the samples' shards")
    parser.add_argument("--json", metavar="PATH", help="write the JSON document (- for stdout)")
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="draw top-1/agreement and load saved against ε"
    )
    parser.set_defaults(handler=run)
