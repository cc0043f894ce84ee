"""The ``onnx-prune`` command line: parses flags, runs the stages, prints with one Console.

An OnnxPruneError becomes one red line on standard error and exit status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from onnx_prune import __version__
from onnx_prune.data import EMBEDDED_IMAGES, EMBEDDED_MODEL
from onnx_prune.errors import InputDataError, ModelLoadError, OnnxPruneError
from onnx_prune.files import write_text

DEFAULT_MODEL = EMBEDDED_MODEL
DEFAULT_IMAGES = EMBEDDED_IMAGES
PIPE_WIDTH = 120  # tables written to a file or CI log: rich would otherwise assume 80 columns

if TYPE_CHECKING:
    from rich.console import Console

    from onnx_prune.distributed import DaskRunner
    from onnx_prune.jsondoc import Document
    from onnx_prune.runtime import Providers

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

Handler = Callable[[argparse.Namespace, "Console"], int]


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


def add_provider_arguments(parser: argparse.ArgumentParser) -> None:
    """``--providers`` and ``--provider-option``, for every command that runs a model."""
    from onnx_prune.runtime import PROVIDER_NAMES

    parser.add_argument(
        "--providers",
        metavar="LIST",
        help="onnxruntime execution providers in priority order, comma-separated: "
        f"{', '.join(PROVIDER_NAMES)} or full names such as CUDAExecutionProvider (default cpu)",
    )
    parser.add_argument(
        "--provider-option",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="an option of one provider, e.g. cuda:device_id=1 (repeatable)",
    )


def add_distributed_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--scheduler`` and ``--workers``: run on Dask (the ``dask`` extra)."""
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=os.environ.get("DASK_SCHEDULER_ADDRESS") or None,
        help=f"run {what} on the Dask scheduler at ADDRESS (default $DASK_SCHEDULER_ADDRESS; "
        "'synchronous': Dask's in-process scheduler); needs pip install 'onnx-prune[dask]'",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help=f"run {what} on a local Dask cluster of N worker processes",
    )


def positive_int(text: str) -> int:
    """A whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def runner_from(args: argparse.Namespace) -> contextlib.AbstractContextManager[DaskRunner | None]:
    """A Dask runner when ``--scheduler``/``--workers`` ask for one (Dask is imported only
    then), else nothing: the run stays in this process."""
    if args.scheduler is None and args.workers is None:
        return contextlib.nullcontext(None)
    if args.scheduler is not None and args.workers is not None:
        raise InputDataError(
            "--workers N starts a local cluster and --scheduler uses another: give one of them "
            "(unset DASK_SCHEDULER_ADDRESS for a local cluster)"
        )
    from onnx_prune.distributed import open_runner

    return open_runner(args.scheduler, args.workers)


def providers_from(args: argparse.Namespace) -> Providers:
    """The providers and options the flags describe, checked against this onnxruntime before
    any work (a bad name or a provider it lacks is a ProviderError)."""
    from onnx_prune.runtime import Providers, check_providers_available

    providers = Providers.parse(args.providers, args.provider_option)
    check_providers_available(providers)
    return providers


def resolve_model(path: Path | None) -> Path:
    """The model path given, or the embedded model (package data of onnx-prune)."""
    if path is not None:
        return path
    if not DEFAULT_MODEL.is_file():
        raise ModelLoadError(
            f"the embedded model {DEFAULT_MODEL} is missing from this installation: "
            "reinstall onnx-prune, or give the path of a .onnx model"
        )
    return DEFAULT_MODEL


def is_embedded(model: Path) -> bool:
    """True when ``model`` is the embedded EfficientNet-Lite0, however the path is written."""
    try:
        return model.resolve() == DEFAULT_MODEL
    except OSError:
        return False


def files_under(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file under ``paths`` (folders walked, links followed): the inputs that an output
    path must not name."""
    for path in paths:
        if path.is_dir():
            for root, _folders, names in os.walk(path, followlinks=True):
                yield from (Path(root, name) for name in names)
        else:
            yield path


def model_inputs(model: Path) -> Iterator[Path]:
    """The model file and its external data files."""
    from onnx_prune.load import model_files

    yield from model_files(model)


def write_json(document: Document, destination: str | Path) -> None:
    """Write a JSON document atomically to a file, or to standard output for ``-``."""
    from onnx_prune.jsondoc import dumps

    write_text(destination, dumps(document))


def _commands() -> list[ModuleType]:
    from onnx_prune.cli import accuracy, analyze, convert, diff, paper, tune, weights, zoo

    return [weights, analyze, accuracy, tune, zoo, diff, convert, paper]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="onnx-prune",
        description="How much of what an ONNX CNN moves through memory is zeros, "
        "and what skipping them would save.",
    )
    parser.add_argument("--version", action="version", version=f"onnx-prune {__version__}")
    _verbosity_arguments(parser, default=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _commands():
        command.add_parser(commands)
    for subparser in commands.choices.values():
        _verbosity_arguments(subparser, default=False)
    return parser


def _verbosity_arguments(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """``-v``/``-q`` before or after the command; only the top level sets the defaults (a
    subparser's default would overwrite a flag given before the command)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if default else argparse.SUPPRESS,
        help="also show the library's INFO messages (-vv: DEBUG too)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if default else argparse.SUPPRESS,
        help="show errors only, no warnings",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        return _run(argv)
    except KeyboardInterrupt:  # also during the imports, which happen here and not before
        _print_error("", label="interrupted")
        return 130


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from onnx_prune.report.terminal import EscapingConsole

    wide = sys.stdout is not None and not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = EscapingConsole(width=PIPE_WIDTH if wide else None)
    _show_log(args)
    try:
        _check_report_has_somewhere_to_go(args)
        handler: Handler = args.handler
        return handler(args, console)
    except OnnxPruneError as error:
        _print_error(str(error))
    except BrokenPipeError:
        _silence_stdout()
        _print_error("standard output was closed before everything was written")
    except MemoryError:
        _print_error(_memory_advice(args))
    return 2


_FILE_OUTPUTS = ("json", "markdown", "save_baseline", "plot")


def _check_report_has_somewhere_to_go(args: argparse.Namespace) -> None:
    """A command whose report goes to standard output, run with standard output closed (``>&-``)
    and no output file, would do all its work and show nothing: refuse it before any work."""
    if sys.stdout is not None or not hasattr(args, "json"):
        return
    # ``--json -`` is refused by the output check, with its own message
    if all(getattr(args, name, None) is None for name in _FILE_OUTPUTS):
        raise InputDataError(
            "standard output is closed, so the report has nowhere to go: "
            "give --json FILE or open standard output"
        )


def _show_log(args: argparse.Namespace) -> None:
    """The library's log records on standard error, at the level ``-v``/``-q`` ask for."""
    from onnx_prune.cli.logs import configure_logging, log_level
    from onnx_prune.report.terminal import EscapingConsole

    level = log_level(args.verbose, quiet=args.quiet)
    configure_logging(level, EscapingConsole(stderr=True))


def _memory_advice(args: argparse.Namespace) -> str:
    from onnx_prune.runtime import out_of_memory_advice

    batch = getattr(args, "batch_size", None)
    return out_of_memory_advice(batch if isinstance(batch, int) else None)


def _print_error(message: str, *, label: str = "error:") -> None:
    """One line on standard error, control characters escaped, the label red on a terminal."""
    if sys.stderr is None:
        return
    try:
        from rich.console import Console
        from rich.markup import escape

        from onnx_prune.report.terminal import printable
    except BaseException:  # Ctrl-C or a broken install while importing rich: plain text
        plain = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode() for c in message
        )
        sys.stderr.write(f"{label} {plain}".rstrip() + "\n")
        return
    text = f"[bold red]{label}[/] {escape(printable(message))}".rstrip()
    Console(stderr=True).print(text, soft_wrap=True, highlight=False)


def _silence_stdout() -> None:
    """After a broken pipe, stop Python's final flush of standard output from failing again."""
    try:
        descriptor = os.open(os.devnull, os.O_WRONLY)
        os.dup2(descriptor, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
