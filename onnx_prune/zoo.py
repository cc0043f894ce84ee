"""Model zoos: the analysis over many models, key figures per model, and a baseline to compare.

``find_models`` turns folders and files into models keyed by their path relative to the folder
given (a file given directly is keyed by its name). ``run_zoo`` analyses each model, in worker
processes when asked; a model that fails is a result with its one-line reason, never an
exception, so the others still run. ``model_figures`` keeps the few fractions a CI job tracks;
``baseline_text`` / ``read_baseline`` store them as small, diff-friendly JSON, and
``compare_to_baseline`` names every figure that moved the bad way by more than a tolerance.

Exit rules, applied by the CLI through ``ZooOutcome.passed``: a model that failed, a regression
and a baseline model missing from the zoo fail the run; a model new to the baseline and figures
that improved are reported only.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from onnx_prune.analysis import Analysis, Calibration, SessionFactory, analyze_model
from onnx_prune.errors import InputDataError, OnnxPruneError
from onnx_prune.jsondoc import SCHEMA_VERSION, Document, analysis_document
from onnx_prune.load import load_model
from onnx_prune.runtime import ModelSource, Session, SessionOptions, open_session

BASELINE_SCHEMA_VERSION = 1
DEFAULT_TOLERANCE = 0.005
_DIGITS = 6  # baseline precision: far below any sensible tolerance, keeps diffs short

Status = Literal["ok", "new", "failed", "regression", "missing"]


class BaselineError(OnnxPruneError):
    """The baseline file cannot be read, or was made with settings this run does not share."""


@dataclass(frozen=True)
class FigureKind:
    """What one tracked figure means and which way is worse."""

    label: str
    per_eps: bool
    higher_is_better: bool = True


FIGURES: dict[str, FigureKind] = {
    "weight_zero": FigureKind("weights exactly zero", per_eps=False),
    "ifm_zero_paper_mean": FigureKind("IFM zero, paper mean", per_eps=True),
    "ifm_zero_weighted": FigureKind("IFM zero, weighted", per_eps=True),
    "ifm_channel_saved": FigureKind("IFM values in zero channels", per_eps=True),
    "load_saved": FigureKind("load saved by skipping zero channels", per_eps=True),
    "ifm_load_share": FigureKind("IFM share of load", per_eps=False, higher_is_better=False),
}
"""Every figure a baseline may hold, as fractions in [0, 1]. ``ifm_channel_saved`` is IFM values in
zero channels / IFM values; ``load_saved`` (bytes not loaded when zero channels are skipped / the
whole load: weights + IFM + OFM) and ``ifm_load_share`` (IFM bytes / the whole load) come from the
bandwidth model and are left out when it could count no layer."""


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo: its baseline key and where the file is."""

    key: str
    path: Path


@dataclass(frozen=True)
class ZooJob:
    """How to analyse one model: tensors come from ``inputs_dir`` when set, else images."""

    model: ZooModel
    calibration: Calibration
    eps: tuple[float, ...]
    inputs_dir: Path | None = None
    threads: int | None = None


@dataclass(frozen=True)
class Figure:
    """One tracked value of one model; ``eps`` is None for figures that do not depend on ε."""

    name: str
    eps: float | None
    value: float


@dataclass(frozen=True)
class ModelFigures:
    """The key figures of one analysed model; tuples are indexed like the zoo's ε."""

    opset: int
    compute_layers: int
    random_weights: bool
    samples: int
    weight_zero: float
    ifm_zero_paper_mean: tuple[float, ...]
    ifm_zero_weighted: tuple[float, ...]
    ifm_channel_saved: tuple[float, ...]
    load_saved: tuple[float, ...] | None = None
    ifm_load_share: float | None = None

    def tracked(self, eps: Sequence[float]) -> tuple[Figure, ...]:
        """Every figure a baseline keeps, flattened to one value per (name, ε)."""
        figures: list[Figure] = []
        for name, kind in FIGURES.items():
            value: float | tuple[float, ...] | None = getattr(self, name)
            if value is None:
                continue
            if kind.per_eps and isinstance(value, tuple):
                figures += [Figure(name, e, v) for e, v in zip(eps, value, strict=True)]
            elif isinstance(value, float):
                figures.append(Figure(name, None, value))
        return tuple(figures)


@dataclass(frozen=True)
class ModelResult:
    """What a worker returns for one model: figures and the JSON document, or why it failed.

    Plain data only, so that it crosses process boundaries; ``traceback`` is set for errors that
    are bugs in onnx-prune rather than problems of the model.
    """

    model: ZooModel
    figures: ModelFigures | None = None
    document: Document | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the model was analysed."""
        return self.figures is not None


@dataclass(frozen=True)
class Change:
    """A figure that moved by more than the tolerance since the baseline."""

    model: str
    name: str
    eps: float | None
    baseline: float
    now: float

    @property
    def label(self) -> str:
        """The figure's name for people, with its ε."""
        text = FIGURES[self.name].label
        return text if self.eps is None else f"{text} at ε={self.eps:g}"


@dataclass(frozen=True)
class BaselineModel:
    """One model's figures as a baseline stored them."""

    figures: tuple[Figure, ...]
    opset: int | None = None
    compute_layers: int | None = None
    samples: int | None = None


@dataclass(frozen=True)
class Baseline:
    """A parsed baseline file."""

    path: Path
    eps: tuple[float, ...]
    models: Mapping[str, BaselineModel]


@dataclass(frozen=True)
class Comparison:
    """This run against a baseline: what got worse, what is missing or new, what improved."""

    baseline: Path
    tolerance: float
    regressions: tuple[Change, ...] = ()
    improvements: tuple[Change, ...] = ()
    missing: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZooOutcome:
    """Every model's result in zoo order, and the comparison when a baseline was given."""

    eps: tuple[float, ...]
    results: tuple[ModelResult, ...]
    comparison: Comparison | None = None

    def status(self, result: ModelResult) -> Status:
        """ok, failed, regression, or new (analysed but absent from the baseline)."""
        comparison = self.comparison
        if not result.ok:
            return "failed"
        if comparison is None:
            return "ok"
        if any(change.model == result.model.key for change in comparison.regressions):
            return "regression"
        return "new" if result.model.key in comparison.new else "ok"

    @property
    def failed(self) -> tuple[ModelResult, ...]:
        """The models that could not be analysed."""
        return tuple(result for result in self.results if not result.ok)

    @property
    def passed(self) -> bool:
        """False when a model failed, a figure regressed or a baseline model is missing."""
        comparison = self.comparison
        if comparison is not None and (comparison.regressions or comparison.missing):
            return False
        return not self.failed


# Finding models


def find_models(paths: Sequence[Path]) -> tuple[ZooModel, ...]:
    """The models under ``paths``: folders searched recursively for ``*.onnx`` (sorted), files
    taken as given. A missing path, a folder without models or two models with the same key are
    errors; the same file reached twice is analysed once."""
    models: dict[Path, ZooModel] = {}
    keys: dict[str, Path] = {}
    for root in paths:
        for model in _models_under(root):
            resolved = model.path.resolve()
            if resolved in models:
                continue
            if model.key in keys:
                raise InputDataError(
                    f"two models have the key '{model.key}' ({keys[model.key]} and {model.path}):"
                    " give their common parent folder instead, so that their keys differ"
                )
            models[resolved] = model
            keys[model.key] = model.path
    return tuple(models.values())


def _models_under(root: Path) -> list[ZooModel]:
    if root.is_dir():
        found = [ZooModel(path.relative_to(root).as_posix(), path) for path in _onnx_files(root)]
        if not found:
            raise InputDataError(f"no .onnx model in folder {root}: give folders that hold models")
        return sorted(found, key=lambda model: model.key)
    if root.is_file():
        return [ZooModel(root.name, root)]
    raise InputDataError(f"zoo path {root} does not exist: give folders or .onnx files")


def _onnx_files(root: Path) -> Iterator[Path]:
    for folder, _subfolders, names in os.walk(root):
        yield from (Path(folder, name) for name in names if name.lower().endswith(".onnx"))


def zoo_eps(eps: Sequence[float]) -> tuple[float, ...]:
    """``eps`` with 0 first when it is missing: the weight figure is the exact-zero share."""
    values = tuple(float(e) for e in eps)
    return values if 0.0 in values else (0.0, *values)


def find_model_inputs(folder: Path, model: ZooModel) -> Path:
    """The tensors for ``model`` in ``folder``: ``<key without .onnx>.npy|.npz`` (the zoo's
    layout mirrored), else ``<model stem>.npy|.npz``."""
    mirrored = folder / PurePosixPath(model.key).parent / model.path.stem
    for base in dict.fromkeys((mirrored, folder / model.path.stem)):
        found = [Path(f"{base}{suffix}") for suffix in (".npy", ".npz")]
        found = [path for path in found if path.is_file()]
        if len(found) == 2:
            raise InputDataError(
                f"both {found[0]} and {found[1]} exist for {model.key}: keep one of them"
            )
        if found:
            return found[0]
    raise InputDataError(
        f"no inputs for {model.key} in {folder}: save {model.path.stem}.npy (one input) or "
        f"{model.path.stem}.npz (one array per input name) there"
    )


# Running models


def run_zoo(
    jobs: Sequence[ZooJob],
    *,
    workers: int = 1,
    on_result: Callable[[ModelResult], None] | None = None,
) -> tuple[ModelResult, ...]:
    """Analyse every job's model, in ``workers`` processes; results come back in job order.

    ``on_result`` hears of each model as it finishes (in finishing order). With several workers
    each onnxruntime session gets an equal share of the CPU cores.
    """
    if workers <= 1 or len(jobs) <= 1:
        return tuple(_notify(analyze_zoo_model(job), on_result) for job in jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)
    shared = [job if job.threads else replace(job, threads=threads) for job in jobs]
    return _run_in_processes(shared, min(workers, len(jobs)), on_result)


def _notify(result: ModelResult, on_result: Callable[[ModelResult], None] | None) -> ModelResult:
    if on_result is not None:
        on_result(result)
    return result


def _run_in_processes(
    jobs: Sequence[ZooJob], workers: int, on_result: Callable[[ModelResult], None] | None
) -> tuple[ModelResult, ...]:
    # spawn, not fork: a forked child would inherit the parent's threads and locks
    context = multiprocessing.get_context("spawn")
    results: dict[int, ModelResult] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(analyze_zoo_model, job): index for index, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results[index] = _notify(_collect(future, jobs[index]), on_result)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return tuple(results[index] for index in range(len(jobs)))


def _collect(future: Future[ModelResult], job: ZooJob) -> ModelResult:
    try:
        return future.result()
    except BrokenProcessPool:
        return ModelResult(
            model=job.model,
            error="the worker process died (out of memory, or a crash inside onnxruntime): "
            f"run onnx-prune analyze {job.model.path} on its own to see why",
        )


def analyze_zoo_model(job: ZooJob) -> ModelResult:
    """Analyse one model; any error becomes a failed result with a one-line reason."""
    started = time.perf_counter()
    try:
        analysis = analyze_model(
            job.model.path,
            _calibration_for(job),
            eps=zoo_eps(job.eps),
            session_factory=_session_factory(job.threads),
        )
    except OnnxPruneError as error:
        return ModelResult(job.model, error=str(error), seconds=_since(started))
    except Exception as error:  # a bug: this model fails with its traceback, the zoo goes on
        return ModelResult(
            job.model,
            error=f"unexpected {type(error).__name__} (a bug in onnx-prune): {error}",
            traceback=traceback.format_exc(),
            seconds=_since(started),
        )
    return ModelResult(
        job.model,
        figures=model_figures(analysis),
        document=analysis_document(analysis),
        seconds=_since(started),
    )


def _since(started: float) -> float:
    return time.perf_counter() - started


def _calibration_for(job: ZooJob) -> Calibration:
    """The job's calibration, with its tensor file found, or ``--size`` dropped for a model that
    fixes its own height and width (``--size`` only fills sizes a model leaves free)."""
    calibration = job.calibration
    if job.inputs_dir is not None:
        return replace(calibration, images=(), tensors=find_model_inputs(job.inputs_dir, job.model))
    if calibration.size is not None and _fixes_image_size(job.model.path):
        return replace(calibration, size=None)
    return calibration


def _fixes_image_size(path: Path) -> bool:
    """True when the model's one data input has a fixed height and width."""
    graph = load_model(path).model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        return False
    dims = inputs[0].type.tensor_type.shape.dim
    return len(dims) == 4 and all(dim.dim_value > 0 for dim in dims[2:])


def _session_factory(threads: int | None) -> SessionFactory:
    if threads is None:
        return open_session

    def threaded(source: ModelSource, options: SessionOptions) -> Session:
        return open_session(source, replace(options, threads=threads))

    return threaded


# Figures


def model_figures(analysis: Analysis) -> ModelFigures:
    """The key figures of one analysis (the weight figure is its share at ε = 0)."""
    total = analysis.weights.total()
    zero = analysis.weights.eps.index(0.0)
    ifm = analysis.summary.ifm
    load = analysis.bandwidth.total
    counted = load.layers > 0  # no layer's bytes known: the load figures are unknown, not zero
    return ModelFigures(
        opset=analysis.opset,
        compute_layers=len(analysis.layers),
        random_weights=analysis.random_weights,
        samples=analysis.activations.samples,
        weight_zero=total.zeros[zero] / total.elements if total.elements else 0.0,
        ifm_zero_paper_mean=ifm.paper_mean,
        ifm_zero_weighted=ifm.weighted,
        ifm_channel_saved=ifm.channel_saved_share,
        load_saved=load.saved_share("channel") if counted else None,
        ifm_load_share=load.ifm_share if counted else None,
    )


# Baselines


def baseline_document(outcome: ZooOutcome) -> Document:
    """The key figures of every analysed model, keyed by model key (failed models left out)."""
    return {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "tool": "onnx-prune zoo",
        "eps": list(outcome.eps),
        "models": {
            result.model.key: model_baseline(result.figures, outcome.eps)
            for result in outcome.results
            if result.figures is not None
        },
    }


def baseline_text(outcome: ZooOutcome) -> str:
    """The baseline as JSON with sorted keys, one figure per line."""
    return json.dumps(baseline_document(outcome), indent=2, sort_keys=True) + "\n"


def model_baseline(figures: ModelFigures, eps: Sequence[float]) -> Document:
    """One model's figures: ``name: value``, or ``name: {ε: value}`` for figures per ε."""
    document: Document = {
        "opset": figures.opset,
        "compute_layers": figures.compute_layers,
        "samples": figures.samples,
    }
    for figure in figures.tracked(eps):
        value = round(figure.value, _DIGITS)
        if figure.eps is None:
            document[figure.name] = value
        else:
            document.setdefault(figure.name, {})[repr(figure.eps)] = value
    return document


def read_baseline(path: Path) -> Baseline:
    """Parse a baseline written by ``--save-baseline``; anything else is a BaselineError."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BaselineError(
            f"cannot read baseline {path} ({_first_line(error)}): give a file written by "
            "onnx-prune zoo --save-baseline"
        ) from None
    try:
        return _parse_baseline(path, document)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BaselineError(
            f"baseline {path} is malformed ({type(error).__name__}: {error}): "
            "save it again with onnx-prune zoo --save-baseline"
        ) from None


def _parse_baseline(path: Path, document: Any) -> Baseline:
    version = document["schema_version"]
    if version != BASELINE_SCHEMA_VERSION:
        raise BaselineError(
            f"baseline {path} has schema_version {version}; this onnx-prune reads "
            f"{BASELINE_SCHEMA_VERSION}: save it again with onnx-prune zoo --save-baseline"
        )
    models = {str(key): _parse_model(entry) for key, entry in document["models"].items()}
    return Baseline(path, tuple(float(e) for e in document["eps"]), models)


def _parse_model(entry: Mapping[str, Any]) -> BaselineModel:
    figures: list[Figure] = []
    for name, value in entry.items():
        if name not in FIGURES:
            continue
        if isinstance(value, Mapping):
            figures += [Figure(name, float(e), _fraction(v)) for e, v in value.items()]
        else:
            figures.append(Figure(name, None, _fraction(value)))
    return BaselineModel(
        tuple(figures),
        opset=_optional_int(entry.get("opset")),
        compute_layers=_optional_int(entry.get("compute_layers")),
        samples=_optional_int(entry.get("samples")),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"figure value {value!r} is not a number")
    return float(value)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_baseline_eps(baseline: Baseline, eps: Sequence[float]) -> None:
    """A baseline compares only with a run at the same ε list."""
    if tuple(baseline.eps) != tuple(eps):
        raise BaselineError(
            f"baseline {baseline.path} was made with --eps {_eps_text(baseline.eps)} but this run "
            f"uses {_eps_text(eps)}: run with --eps {_eps_text(baseline.eps)}, or save a new "
            "baseline with --save-baseline"
        )


def _eps_text(eps: Sequence[float]) -> str:
    return ",".join(f"{e:g}" for e in eps)


# Comparison


def compare_to_baseline(
    results: Sequence[ModelResult],
    baseline: Baseline,
    *,
    eps: Sequence[float],
    tolerance: float = DEFAULT_TOLERANCE,
) -> Comparison:
    """Every figure that moved by more than ``tolerance`` (absolute, on fractions), per model.

    A model that failed is not compared (its failure already fails the run).
    """
    check_baseline_eps(baseline, eps)
    found = {result.model.key for result in results}
    regressions: list[Change] = []
    improvements: list[Change] = []
    notes: list[str] = []
    for result in results:
        stored = baseline.models.get(result.model.key)
        if result.figures is None or stored is None:
            continue
        worse, better = _changes(result.model.key, stored, result.figures.tracked(eps), tolerance)
        regressions += worse
        improvements += better
        notes += _structure_notes(result.model.key, stored, result.figures)
    notes += _figure_notes(results, baseline, eps)
    return Comparison(
        baseline=baseline.path,
        tolerance=tolerance,
        regressions=tuple(regressions),
        improvements=tuple(improvements),
        missing=tuple(key for key in baseline.models if key not in found),
        new=tuple(r.model.key for r in results if r.ok and r.model.key not in baseline.models),
        notes=tuple(notes),
    )


def _changes(
    key: str, stored: BaselineModel, now: Sequence[Figure], tolerance: float
) -> tuple[list[Change], list[Change]]:
    """Figures worse and better by more than ``tolerance``, in the order of ``FIGURES`` and ε."""
    before = {(figure.name, figure.eps): figure.value for figure in stored.figures}
    worse: list[Change] = []
    better: list[Change] = []
    for figure in now:
        then = before.get((figure.name, figure.eps))
        if then is None:
            continue
        loss = _loss(figure.name, then, figure.value)
        if abs(loss) > tolerance + 1e-12:  # the slack keeps a move of exactly ``tolerance`` ok
            (worse if loss > 0 else better).append(
                Change(key, figure.name, figure.eps, then, figure.value)
            )
    return worse, better


def _loss(name: str, before: float, now: float) -> float:
    """How much worse ``now`` is than ``before`` (negative when it is better)."""
    return before - now if FIGURES[name].higher_is_better else now - before


def _structure_notes(key: str, stored: BaselineModel, figures: ModelFigures) -> list[str]:
    """Changes that make figures hard to compare: the graph, or the calibration samples."""
    pairs = (
        ("opset", stored.opset, figures.opset),
        ("compute layers", stored.compute_layers, figures.compute_layers),
        ("calibration samples", stored.samples, figures.samples),
    )
    return [f"{key}: {name} {then} → {now}" for name, then, now in pairs if then not in (None, now)]


def _figure_notes(
    results: Sequence[ModelResult], baseline: Baseline, eps: Sequence[float]
) -> list[str]:
    """Figures tracked on one side only (e.g. once the bandwidth model arrives), named once."""
    now = {f.name for r in results if r.figures for f in r.figures.tracked(eps)}
    stored = {f.name for model in baseline.models.values() for f in model.figures}
    notes = [
        f"'{name}' is not in the baseline: save the baseline again to track it"
        for name in now - stored
    ]
    notes += [f"'{name}' is in the baseline but not measured now" for name in stored - now]
    return sorted(notes)


# The JSON document


def zoo_document(outcome: ZooOutcome) -> Document:
    """Every model's status, figures and full analysis document, the counts and the comparison."""
    comparison = outcome.comparison
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "zoo",
        "eps": list(outcome.eps),
        "models": [_model_document(outcome, result) for result in outcome.results],
        "summary": _counts_document(outcome),
        "comparison": _comparison_document(comparison) if comparison is not None else None,
    }


def _model_document(outcome: ZooOutcome, result: ModelResult) -> Document:
    figures = result.figures
    document: Document = {
        "model": result.model.key,
        "path": str(result.model.path),
        "status": outcome.status(result),
        "reason": result.error,
        "seconds": round(result.seconds, 3),
        "figures": model_baseline(figures, outcome.eps) if figures is not None else None,
        "random_weights": figures.random_weights if figures is not None else None,
        "analysis": result.document,
    }
    if result.traceback:
        document["traceback"] = result.traceback
    return document


def _counts_document(outcome: ZooOutcome) -> Document:
    statuses = [outcome.status(result) for result in outcome.results]
    missing = outcome.comparison.missing if outcome.comparison is not None else ()
    counts: Document = {"models": len(statuses), "missing": len(missing)}
    counts.update({status: statuses.count(status) for status in ("ok", "new", "failed")})
    counts["regression"] = statuses.count("regression")
    counts["passed"] = outcome.passed
    return counts


def _comparison_document(comparison: Comparison) -> Document:
    return {
        "baseline": str(comparison.baseline),
        "tolerance": comparison.tolerance,
        "regressions": [_change_document(change) for change in comparison.regressions],
        "improvements": [_change_document(change) for change in comparison.improvements],
        "missing": list(comparison.missing),
        "new": list(comparison.new),
        "notes": list(comparison.notes),
    }


def _change_document(change: Change) -> Document:
    return {
        "model": change.model,
        "figure": change.name,
        "eps": change.eps,
        "label": change.label,
        "baseline": change.baseline,
        "now": change.now,
        "change": change.now - change.baseline,
    }
