"""``onnx-prune zoo``: the analysis over many models, compared with a baseline, for CI.

Exit status: 0 when every model was analysed and (with ``--baseline``) nothing regressed and no
baseline model is missing; 1 when a model failed, a figure regressed or a baseline model is
missing; 2 for usage and input errors (no model found, unreadable baseline, ε list differing
from the baseline's). Models new to the baseline and improvements are reported, never failures.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from onnx_prune.baseline import (
    DEFAULT_TOLERANCE,
    check_baseline_eps,
    compare_to_baseline,
    read_baseline,
)
from onnx_prune.cli import (
    DEFAULT_IMAGES,
    add_distributed_arguments,
    add_provider_arguments,
    files_under,
    is_embedded,
    model_inputs,
    parse_eps,
    positive_int,
    providers_from,
    runner_from,
    write_json,
)
from onnx_prune.cli.analyze import (
    DEFAULT_MODEL_PRESET,
    add_batch_arguments,
    batch_axes_from,
    parse_size,
)
from onnx_prune.distributed import DaskRunner
from onnx_prune.errors import InputDataError, OutputPathError
from onnx_prune.feeds import DEFAULT_EPS, SampleSource
from onnx_prune.files import check_outputs, write_text
from onnx_prune.inputs import PRESETS, find_images
from onnx_prune.jsondoc import baseline_text, zoo_document
from onnx_prune.report.zoo import format_model_done, format_zoo, format_zoo_markdown
from onnx_prune.runtime import Providers
from onnx_prune.zoo import (
    ModelResult,
    ZooJob,
    ZooModel,
    ZooOutcome,
    figures_by_key,
    find_models,
    run_zoo,
    zoo_eps,
)
from onnx_prune.zooconfig import ModelSettings, ZooConfig, find_zoo_config

if TYPE_CHECKING:
    from onnx_prune.cli import Subparsers


def parse_tolerance(text: str) -> float:
    """An absolute tolerance on fractions: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tolerance takes a number, got '{text}'") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"--tolerance must be in [0, 1] (0.005 = 0.5 points), got {text}"
        )
    return value


def run(args: argparse.Namespace, console: Console) -> int:
    """``onnx-prune zoo``."""
    providers = providers_from(args)
    models = find_models(args.paths)
    config = find_zoo_config(args.paths, args.config)
    _check_outputs(args, models, config)
    eps = zoo_eps(args.eps)
    baseline = read_baseline(args.baseline) if args.baseline else None
    if baseline is not None:
        check_baseline_eps(baseline, eps)
    quiet = "-" in (args.json, args.markdown)
    images = _images(args)
    if config is not None and not quiet:
        _print_unmatched(config, models, console)
    settings = [_settings(config, model) for model in models]
    jobs = [
        _job(model, args, eps, images, providers, setting)
        for model, setting in zip(models, settings, strict=True)
    ]
    if args.jobs > 1 and (args.workers or args.scheduler):
        raise InputDataError(
            "--jobs runs processes here and --workers/--scheduler on Dask: give one"
        )
    with runner_from(args) as runner:
        results = _run_with_progress(
            jobs, args.jobs, console, quiet=quiet, runner=runner, shard_samples=args.shard_samples
        )
    comparison = None
    if baseline is not None:
        comparison = compare_to_baseline(
            figures_by_key(results),
            baseline,
            eps=eps,
            tolerance=args.tolerance,
            providers=providers,
        )
    outcome = ZooOutcome(eps=eps, results=results, comparison=comparison, providers=providers)
    _write_outputs(outcome, args, console, quiet=quiet)
    return 0 if outcome.passed else 1


def _check_outputs(
    args: argparse.Namespace, models: tuple[ZooModel, ...], config: ZooConfig | None
) -> None:
    """Refuse output paths that cannot be written, or that name an input, before models run."""
    if args.json == "-" and args.markdown == "-":
        raise OutputPathError("--json - and --markdown - both want standard output: give a file")

    def inputs() -> Iterator[Path]:
        for model in models:
            yield from model_inputs(model.path)
        yield from (args.baseline,) if args.baseline is not None else ()
        yield from files_under((args.images or DEFAULT_IMAGES,))
        yield from files_under((args.inputs_dir,) if args.inputs_dir is not None else ())
        if config is not None:
            yield config.path
            for _pattern, values in config.tables:
                tensors = values.get("inputs")
                yield from files_under(values.get("images", ()))
                yield from (tensors,) if tensors is not None else ()

    outputs = [
        ("--json", args.json),
        ("--markdown", args.markdown),
        ("--save-baseline", args.save_baseline),
    ]
    check_outputs(outputs, inputs)


def _images(args: argparse.Namespace) -> tuple[Path, ...]:
    """The image source, checked before any model runs; none with --inputs-dir."""
    if args.inputs_dir is not None:
        if not args.inputs_dir.is_dir():
            raise InputDataError(
                f"--inputs-dir {args.inputs_dir} is not a folder: give the folder that holds "
                "<model stem>.npy or .npz files"
            )
        return ()
    images = (args.images or DEFAULT_IMAGES,)
    find_images(list(images))
    return images


def _job(
    model: ZooModel,
    args: argparse.Namespace,
    eps: tuple[float, ...],
    images: tuple[Path, ...],
    providers: Providers,
    settings: ModelSettings,
) -> ZooJob:
    """The job for one model: its zoo config settings over the flags; the embedded model keeps
    its own preset unless one is given."""
    embedded = is_embedded(model.path)
    default_preset = DEFAULT_MODEL_PRESET if embedded else "imagenet"
    own_samples = settings.inputs is not None or bool(settings.images)
    calibration = SampleSource(
        images=settings.images or images,
        tensors=settings.inputs,
        preset=settings.preset or args.preset or default_preset,
        size=settings.size or args.size,
        batch_size=args.batch_size,
        limit=args.limit,
        strict=args.strict,
        batch_axes=tuple({**dict(batch_axes_from(args)), **dict(settings.batch_axis)}.items()),
    )
    return ZooJob(
        model=model,
        calibration=calibration,
        eps=eps,
        inputs_dir=None if own_samples else args.inputs_dir,
        providers=providers,
        extra_eps=settings.eps,
        expected_failure=settings.expected_failure,
    )


def _settings(config: ZooConfig | None, model: ZooModel) -> ModelSettings:
    return ModelSettings() if config is None else config.settings_for(model.path, model.key)


def _print_unmatched(config: ZooConfig, models: tuple[ZooModel, ...], console: Console) -> None:
    unmatched = config.unmatched([(model.path, model.key) for model in models])
    for pattern in unmatched:
        console.print(Text(f'{config.path}: ["{pattern}"] matches no model', style="yellow"))


def _run_with_progress(
    jobs: list[ZooJob],
    workers: int,
    console: Console,
    *,
    quiet: bool,
    runner: DaskRunner | None = None,
    shard_samples: bool = False,
) -> tuple[ModelResult, ...]:
    columns = (
        TextColumn("analysing models"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("models", total=len(jobs))

        def finished(result: ModelResult) -> None:
            done = int(bar.tasks[0].completed) + 1
            if not quiet:
                bar.console.print(format_model_done(result, done, len(jobs)), soft_wrap=True)
            bar.update(task, completed=done)

        return run_zoo(
            jobs, workers=workers, on_result=finished, runner=runner, shard_samples=shard_samples
        )


def _write_outputs(
    outcome: ZooOutcome, args: argparse.Namespace, console: Console, *, quiet: bool
) -> None:
    if not quiet:
        console.print(format_zoo(outcome))
        _print_tracebacks(outcome, console)
    if args.markdown:
        write_text(args.markdown, format_zoo_markdown(outcome))
    if args.json:
        write_json(zoo_document(outcome), args.json)
    if args.save_baseline is not None:
        write_text(args.save_baseline, baseline_text(outcome))
        if not quiet:
            console.print(_baseline_written(outcome, args.save_baseline))


def _print_tracebacks(outcome: ZooOutcome, console: Console) -> None:
    """Errors that are bugs in onnx-prune keep their traceback."""
    for result in outcome.failed:
        if result.traceback:
            console.print(Text(f"{result.model.key}:\n{result.traceback}", style="dim"))


def _baseline_written(outcome: ZooOutcome, path: Path) -> Text:
    saved = sum(1 for result in outcome.results if result.ok)
    left_out = len(outcome.failed)
    note = f"; {left_out} failed model(s) left out" if left_out else ""
    models = "model" if saved == 1 else "models"
    return Text(f"baseline written to {path}: {saved} {models}{note}")


def add_parser(commands: Subparsers) -> None:
    """Register ``zoo``."""
    parser = commands.add_parser(
        "zoo",
        help="analyse every model of a folder and compare with a baseline (for CI)",
        description="Analyse every .onnx model under PATH... with the same calibration samples, "
        "show one summary table, and compare with a baseline. Exit status: 0 all good; 1 a model "
        "failed, a figure regressed or a baseline model is missing; 2 usage or input error.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="folders (searched recursively for *.onnx) or .onnx files",
    )
    _add_sample_arguments(parser)
    parser.add_argument(
        "--eps",
        type=parse_eps,
        default=DEFAULT_EPS,
        help="comma list of ε (default 0,0.1,0.2,0.3,0.4,0.5); 0 is added when missing",
    )
    _add_baseline_arguments(parser)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="per-model settings (default: onnx-prune.toml in the zoo folder, when there)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the JSON document (- for stdout)")
    parser.add_argument(
        "--markdown", metavar="PATH", help="write the table as Markdown (e.g. $GITHUB_STEP_SUMMARY)"
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="analyse N models at a time in worker processes (default 1)",
    )
    parser.set_defaults(handler=run)


def _add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="images for every model, resized to each model's input (default: embedded photos)",
    )
    source.add_argument(
        "--inputs-dir",
        type=Path,
        metavar="DIR",
        help="ready tensors per model: DIR/<path in the zoo without .onnx>.npy|.npz, "
        "else DIR/<model stem>.npy|.npz",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="image preprocessing (default: imagenet; efficientnet-lite for the embedded model)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        metavar="HxW",
        help="image size for models whose height and width are free (others keep their own)",
    )
    add_batch_arguments(parser)
    parser.add_argument(
        "--strict", action="store_true", help="an unreadable image is an error, not skipped"
    )
    add_provider_arguments(parser)
    add_distributed_arguments(parser, what="the models (one task each)")
    parser.add_argument(
        "--shard-samples",
        action="store_true",
        help="with --workers/--scheduler: also cut each model's samples into shards",
    )


def _add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument(
        "--save-baseline", type=Path, metavar="FILE", help="write the key figures per model"
    )
    baseline.add_argument(
        "--baseline", type=Path, metavar="FILE", help="compare with a saved baseline"
    )
    parser.add_argument(
        "--tolerance",
        type=parse_tolerance,
        default=DEFAULT_TOLERANCE,
        help="allowed move in the bad direction, absolute on fractions (default 0.005)",
    )
