"""Model zoos: the analysis over many models, key figures per model, and the zoo's JSON document.

``find_models`` turns folders and files into models keyed by their path relative to the folder
given (a file given directly is keyed by its name). ``run_zoo`` analyses each model, in worker
processes when asked; a model that fails is a result with its one-line reason, never an
exception, so the others still run. ``model_figures`` keeps the few fractions a CI job tracks;
``onnx_prune.baseline`` stores them and compares a run with them.

Exit rules, applied by the CLI through ``ZooOutcome.passed``: a model that failed, a regression
and a baseline model missing from the zoo fail the run; a model new to the baseline and figures
that improved are reported only.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.baseline import Comparison, ModelFigures
from onnx_prune.distributed import DaskRunner
from onnx_prune.errors import InputDataError, OnnxPruneError
from onnx_prune.feeds import SampleSource
from onnx_prune.jsondoc import Document, analysis_document
from onnx_prune.load import load_model
from onnx_prune.runtime import (
    CPU_ONLY,
    Providers,
)

Status = Literal[
    "ok", "partial", "new", "failed", "regression", "missing", "known-failure", "now-passing"
]


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo: its baseline key and where the file is."""

    key: str
    path: Path


@dataclass(frozen=True)
class ZooJob:
    """How to analyse one model: tensors come from ``inputs_dir`` when set, else from the
    calibration. ``extra_eps`` are measured too (in the model's analysis document only);
    ``expected_failure`` marks a known failure (``expected = "fail"`` in the zoo config)."""

    model: ZooModel
    calibration: SampleSource
    eps: tuple[float, ...]
    inputs_dir: Path | None = None
    extra_eps: tuple[float, ...] = ()
    expected_failure: bool = False
    threads: int | None = None
    providers: Providers = CPU_ONLY


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
    partial: str | None = None
    expected_failure: bool = False

    @property
    def ok(self) -> bool:
        """True when the model was analysed."""
        return self.figures is not None


@dataclass(frozen=True)
class ZooOutcome:
    """Every model's result in zoo order, and the comparison when a baseline was given."""

    eps: tuple[float, ...]
    results: tuple[ModelResult, ...]
    comparison: Comparison | None = None
    providers: Providers = CPU_ONLY

    def status(self, result: ModelResult) -> Status:
        """ok, partial (analysed, but some compute-like ops were not: ``result.partial`` says
        which), failed, regression, new (analysed but absent from the baseline), known-failure
        (failed as the zoo config expects) or now-passing (expected to fail, but analysed)."""
        comparison = self.comparison
        whole: Status = "ok" if result.partial is None else "partial"
        if not result.ok:
            return "known-failure" if result.expected_failure else "failed"
        if result.expected_failure:
            return "now-passing"
        if comparison is None:
            return whole
        if any(change.model == result.model.key for change in comparison.regressions):
            return "regression"
        return "new" if result.model.key in comparison.new else whole

    @property
    def failed(self) -> tuple[ModelResult, ...]:
        """The models that could not be analysed, known failures left out."""
        return tuple(r for r in self.results if not r.ok and not r.expected_failure)

    @property
    def known_failures(self) -> tuple[ModelResult, ...]:
        """The models that failed as the zoo config expects (they do not fail the run)."""
        return tuple(r for r in self.results if not r.ok and r.expected_failure)

    @property
    def now_passing(self) -> tuple[ModelResult, ...]:
        """The models expected to fail that were analysed (reported; they do not fail the run)."""
        return tuple(r for r in self.results if r.ok and r.expected_failure)

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
    runner: DaskRunner | None = None,
    shard_samples: bool = False,
) -> tuple[ModelResult, ...]:
    """Analyse every job's model, in ``workers`` processes; results come back in job order.

    ``on_result`` hears of each model as it finishes (in finishing order). With several workers
    each onnxruntime session gets an equal share of the CPU cores. With a Dask ``runner`` each
    model is one task (results as they complete; a task that fails twice is that model's
    failure), or, with ``shard_samples``, the models run one after another with their samples
    in shards on the workers.
    """
    if runner is not None and shard_samples:
        return tuple(_notify(analyze_zoo_model(job, runner=runner), on_result) for job in jobs)
    if runner is not None:
        return _run_on_dask(jobs, runner, on_result)
    if workers <= 1 or len(jobs) <= 1:
        return tuple(_notify(analyze_zoo_model(job), on_result) for job in jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)
    shared = [job if job.threads else replace(job, threads=threads) for job in jobs]
    return _run_in_processes(shared, min(workers, len(jobs)), on_result)


def _run_on_dask(
    jobs: Sequence[ZooJob], runner: DaskRunner, on_result: Callable[[ModelResult], None] | None
) -> tuple[ModelResult, ...]:
    results: dict[int, ModelResult] = {}
    tasks = [(i, replace(job, threads=job.threads or runner.threads)) for i, job in enumerate(jobs)]

    def done(task: tuple[int, ZooJob], result: ModelResult) -> None:
        results[task[0]] = _notify(result, on_result)

    def failed(task: tuple[int, ZooJob], error: OnnxPruneError) -> None:
        job = task[1]
        done(task, ModelResult(job.model, error=str(error), expected_failure=job.expected_failure))

    runner.map(tasks, _zoo_task, done, lambda task: task[1].model.key, on_failure=failed)
    return tuple(results[index] for index in range(len(jobs)))


def _zoo_task(task: tuple[int, ZooJob]) -> ModelResult:
    """One model as one Dask task."""
    return analyze_zoo_model(task[1])


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
            expected_failure=job.expected_failure,
            error="the worker process died (out of memory, or a crash inside onnxruntime): "
            f"run onnx-prune analyze {job.model.path} on its own to see why",
        )


def analyze_zoo_model(job: ZooJob, *, runner: DaskRunner | None = None) -> ModelResult:
    """Analyse one model (its samples in shards on ``runner`` when given); any error becomes a
    failed result with a one-line reason."""
    return replace(_analyze_zoo_model(job, runner), expected_failure=job.expected_failure)


def _analyze_zoo_model(job: ZooJob, runner: DaskRunner | None) -> ModelResult:
    started = time.perf_counter()
    eps = zoo_eps(job.eps)
    try:
        analysis = analyze_model(
            job.model.path,
            _calibration_for(job),
            eps=eps + tuple(e for e in job.extra_eps if e not in eps),
            providers=job.providers,
            threads=job.threads,
            runner=runner,
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
        figures=model_figures(analysis, eps=eps),
        document=analysis_document(analysis),
        seconds=_since(started),
        partial=partial_reason(analysis),
    )


def partial_reason(analysis: Analysis) -> str | None:
    """Why an analysis is partial (some compute-like ops not analysed), or None when complete."""
    coverage = analysis.weights.coverage
    if coverage.complete:
        return None
    left_out = Counter(item.op_type for item in analysis.weights.unresolved)
    listed = ", ".join(f"{op_type} ×{count}" for op_type, count in left_out.items())
    return f"{coverage.layers} of {coverage.of} compute-like ops analysed; not analysed: {listed}"


def _since(started: float) -> float:
    return time.perf_counter() - started


def _calibration_for(job: ZooJob) -> SampleSource:
    """The job's samples, with its tensor file found, or ``--size`` dropped for a model that
    fixes its own height and width (``--size`` only fills sizes a model leaves free).
    ``--batch-axis`` names that are not inputs of this model are left out for it."""
    calibration = job.calibration
    if calibration.batch_axes:
        names = _input_names(job.model.path)
        axes = tuple((name, axis) for name, axis in calibration.batch_axes if name in names)
        calibration = replace(calibration, batch_axes=axes)
    if job.inputs_dir is not None:
        return replace(calibration, images=(), tensors=find_model_inputs(job.inputs_dir, job.model))
    if calibration.size is not None and _fixes_image_size(job.model.path):
        return replace(calibration, size=None)
    return calibration


def _input_names(path: Path) -> set[str]:
    graph = load_model(path).model.graph
    return {value.name for value in graph.input}


def _fixes_image_size(path: Path) -> bool:
    """True when the model's one data input has a fixed height and width."""
    graph = load_model(path).model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        return False
    dims = inputs[0].type.tensor_type.shape.dim
    return len(dims) == 4 and all(dim.dim_value > 0 for dim in dims[2:])


# Figures


def figures_by_key(results: Sequence[ModelResult]) -> dict[str, ModelFigures | None]:
    """Each model's figures by its key, None for a model that failed (what a baseline compares)."""
    return {result.model.key: result.figures for result in results}


def model_figures(analysis: Analysis, *, eps: Sequence[float] | None = None) -> ModelFigures:
    """The key figures of one analysis at ``eps`` (default: every ε it measured); the weight
    figure is its share at ε = 0."""
    total = analysis.weights.total()
    zero = analysis.weights.eps.index(0.0)
    ifm = analysis.summary.ifm
    load = analysis.bandwidth.total
    counted = load.layers > 0  # no layer's bytes known: the load figures are unknown, not zero
    measured = list(analysis.activations.eps)
    index = [measured.index(e) for e in (measured if eps is None else eps)]

    def at(values: Sequence[float]) -> tuple[float, ...]:
        return tuple(values[i] for i in index)

    return ModelFigures(
        opset=analysis.opset,
        compute_layers=len(analysis.layers),
        random_weights=analysis.random_weights,
        samples=analysis.activations.samples,
        weight_zero=total.zeros[zero] / total.elements if total.elements else 0.0,
        ifm_zero_paper_mean=at(ifm.paper_mean),
        ifm_zero_weighted=at(ifm.weighted),
        ifm_channel_saved=at(ifm.channel_saved_share),
        load_saved=at(load.saved_share("channel")) if counted else None,
        ifm_load_share=load.ifm_share if counted else None,
    )
