"""Accuracy under ε-pruning: the pruned model against labels and against the unpruned model.

One onnxruntime session runs the pruned copy (``pruning.add_pruning``) over the samples in
batches. Each batch runs once with ε = −1, which prunes nothing and so *is* the unpruned model,
then once per ε. Only running sums are kept, so memory is constant in the number of samples.

Per ε and per output of the model: the mean cosine similarity and relative L2 error of the
pruned output against the unpruned one (``fidelity``), and the share of the compute layers' IFM
values that pruning skipped. Outputs shaped as class scores (``[N, classes]``, classes ≥ 2) are
classifier outputs; the first of them (or the one ``output`` names) is scored: top-1 and top-5
against labels (fractions of the labelled samples; None without labels; top-5 only with more
than 5 classes), agreement (the share of samples whose top-1 equals the unpruned top-1) and the
mean KL divergence KL(unpruned ‖ pruned). Rows that are non-negative and sum to 1 on the first
batch are read as probabilities, anything else as logits (softmax applied). A model without a
classifier output (a detector, a sequence model) gets the fidelity figures only.

Samples are batched by ``feeds.Feeder``, as in ``analyze``: a model that fixes its batch runs
with batches of that size (the last one padded with copies, the copies dropped). A model that
fails on a batch of several samples (e.g. an internal Reshape to ``[1, -1]``) falls back to one
sample at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnx

from onnx_prune import runtime
from onnx_prune.constants import ConstantResolver
from onnx_prune.epsmap import EpsMap, check_eps_map
from onnx_prune.errors import InputDataError, UnsupportedModelError
from onnx_prune.feeds import DEFAULT_EPS, Feeder, Progress, SampleSource, SessionFactory
from onnx_prune.fidelity import ExactSum, Fidelity, FidelitySums, is_classifier
from onnx_prune.inputs import Batch, SkippedInput
from onnx_prune.labels import Labels, Sample, check_classes, check_coverage
from onnx_prune.layers import find_compute_layers
from onnx_prune.load import LoadedModel, is_random_weights, load_model
from onnx_prune.pruning import Granularity, NotPruned, PrunedModel, add_pruning, count_pruned
from onnx_prune.runtime import CPU_ONLY, BatchSplitter, Providers, Session, SessionOptions

logger = logging.getLogger(__name__)

UNPRUNED_EPS = -1.0
"""The ε fed for the unpruned baseline: no |x| is <= a negative number."""

_SMALLEST = float(np.finfo(np.float32).smallest_subnormal)

Array = npt.NDArray[Any]
Scores = npt.NDArray[np.float64]
EpsSetting = float | Mapping[str, float]
"""What one pruned run is fed: one ε for every pruned tensor, or a map of IFM name to ε."""
OutputKind = Literal["logits", "probabilities"]


@dataclass(frozen=True)
class TopK:
    """Top-1 and top-5 accuracy as fractions of the labelled samples (None without labels)."""

    top1: float | None
    top5: float | None


@dataclass(frozen=True)
class EpsAccuracy:
    """The pruned model at one ε (None: at the report's ε map) against the labels and the
    unpruned model."""

    eps: float | None
    top1: float | None
    top5: float | None
    agreement: float | None
    kl: float | None
    saved_fraction: float
    pruned_elements: int
    ifm_elements: int
    outputs: Mapping[str, Fidelity] = field(default_factory=dict)


@dataclass(frozen=True)
class AccuracyReport:
    """The whole sweep: the unpruned baseline and one result per ε, in the order asked.

    ``outputs`` are the model's outputs (each with fidelity figures per result),
    ``classifier_outputs`` those shaped as class scores, and ``scored_output`` the one top-1,
    top-5, agreement and KL are measured on (None: no classifier output; those are then None).
    """

    model: str
    granularity: Granularity
    samples: int
    labelled: int
    baseline: TopK
    results: tuple[EpsAccuracy, ...]
    random_weights: bool
    output_kind: OutputKind
    batch_size: int
    pruned_layers: int
    skipped_inputs: tuple[SkippedInput, ...] = ()
    not_pruned: tuple[NotPruned, ...] = ()
    providers: Providers = CPU_ONLY
    eps_map: EpsMap | None = None
    padded_samples: int = 0
    outputs: tuple[str, ...] = ()
    classifier_outputs: tuple[str, ...] = ()
    scored_output: str | None = None
    classes: int | None = None

    @property
    def eps(self) -> tuple[float, ...]:
        """The uniform ε swept, in order (none for an ε map)."""
        return tuple(result.eps for result in self.results if result.eps is not None)

    def max_eps_within_budget(self, max_drop: float) -> float | None:
        """The largest ε whose top-1 drop (agreement drop without labels) is at most ``max_drop``.

        ``max_drop`` is in percentage points; None when no ε is within it.
        """
        within = [
            result.eps
            for result in self.results
            if result.eps is not None and _drop(self, result) <= max_drop + 1e-9
        ]
        return max(within) if within else None

    def max_eps_within_cosine(self, min_cosine: float) -> float | None:
        """The largest ε at which every output's mean cosine similarity is at least
        ``min_cosine``; None when no ε is."""
        within = [
            result.eps
            for result in self.results
            if result.eps is not None
            and all(f.cosine >= min_cosine - 1e-12 for f in result.outputs.values())
        ]
        return max(within) if within else None


def measure_accuracy(
    loaded: LoadedModel,
    source: SampleSource,
    *,
    eps: Sequence[float] = DEFAULT_EPS,
    granularity: Granularity = "channel",
    labels: Labels | None = None,
    session_factory: SessionFactory = runtime.open_session,
    providers: Providers | None = None,
    progress: Progress | None = None,
    model_inputs: bool = False,
    eps_map: EpsMap | None = None,
    output: str | None = None,
    runner: ShardRunner | None = None,
) -> AccuracyReport:
    """Run the ε sweep of ``loaded`` over the samples of ``source`` (fed by ``feeds.Feeder``).

    ``source.strict`` makes unreadable images and unlabelled samples errors. ``progress`` hears
    (samples done, samples in all) after every batch. ``model_inputs`` also prunes IFMs that
    are model inputs (the paper prunes only feature maps the network computes). ``providers``:
    the onnxruntime execution providers (default: the CPU); ``session_factory`` replaces
    onnxruntime (tests). ``eps_map`` replaces the sweep by one run at each IFM's own ε (``eps``
    is then not used). ``output`` names the classifier output to score (default: the first).
    ``runner`` (``distributed.DaskRunner``) measures the samples in shards on workers, each
    with ``sweep_shard``; the result is identical to the one-piece run.

    The first batch's decisions (which outputs are class scores, logits or probabilities,
    batches or one sample at a time) are taken here before any sample is measured, and every
    range of samples is measured by ``sweep_range`` under them: in one piece here, or in
    shards whose exact sums merge by ``+``.
    """
    settings: tuple[EpsSetting, ...] = (eps_map.eps,) if eps_map else tuple(map(float, eps))
    if eps_map is None:
        _check_eps(eps)
    providers = providers or Providers()
    pruned = _pruned_copy(loaded, granularity, model_inputs=model_inputs)
    if eps_map is not None:
        ifms = [*(t.tensor for t in pruned.tensors), *(t.tensor for t in pruned.not_pruned)]
        check_eps_map(eps_map, ifms, model=str(loaded.path))
    with runtime.model_file(loaded, pruned.model) as model_source:
        session = session_factory(model_source, SessionOptions(providers=providers))
        feeder = _feeder(session, pruned, source, labels)
        outputs = _model_outputs(loaded.model, feeder.batch_name, output)
        task = SweepTask(
            settings=settings,
            granularity=granularity,
            labels=labels,
            providers=providers,
            model_inputs=model_inputs,
            output=output,
        )
        if runner is None:  # the first batch decides as it is measured
            partial, decisions = sweep_range(session, pruned, loaded, source, task, progress)
        else:  # decided here, before sharding, so that every shard decides the same
            decisions = _first_decisions(_Sweep(session, pruned, settings, labels, outputs), feeder)
            task = replace(task, decisions=decisions)
            partial = runner.sweep(
                loaded.path, source, task, (feeder.total, feeder.batch_size), progress
            )
    report = build_report(
        partial,
        decisions,
        loaded=loaded,
        pruned=pruned,
        settings=settings,
        outputs=tuple(outputs.names),
        batch_size=feeder.batch_size,
    )
    return replace(report, providers=providers, eps_map=eps_map)


class ShardRunner(Protocol):
    """Measures a sweep's samples in shards (``distributed.DaskRunner``)."""

    def sweep(
        self,
        path: Path,
        source: SampleSource,
        task: SweepTask,
        plan: tuple[int, int],
        progress: Progress | None,
    ) -> AccuracyPartial:
        """The merged exact sums of every sample of ``source`` (``plan``: how many, and the
        batch size), measured in shards."""
        ...


@dataclass(frozen=True)
class SweepTask:
    """What measuring a range of samples needs besides the samples (it travels to workers):
    the ε settings, the pruning, labels, providers, the scored output, the first batch's
    decisions (None: the range's first batch takes them, which only the one-piece run may
    do) and onnxruntime's intra-op threads (None: its default)."""

    settings: tuple[EpsSetting, ...]
    granularity: Granularity
    labels: Labels | None
    providers: Providers
    model_inputs: bool
    output: str | None
    decisions: SweepDecisions | None = None
    threads: int | None = None


def _first_decisions(sweep: _Sweep, feeder: Feeder) -> SweepDecisions:
    images = feeder.source.tensors is None
    first = next(iter(feeder.batches()), None)
    if first is None:
        raise InputDataError("no sample was measured: give images or tensors to run")
    return sweep.decide(_samples(first, images=images))


def sweep_range(
    session: Session,
    pruned: PrunedModel,
    loaded: LoadedModel,
    source: SampleSource,
    task: SweepTask,
    progress: Progress | None = None,
) -> tuple[AccuracyPartial, SweepDecisions]:
    """The exact sums of the sweep over every sample of ``source`` (its whole range), and the
    decisions they were measured under (``task``'s, else its first batch's); ``progress``
    hears (done, in the range) after every batch."""
    feeder = _plain_feeder(session, pruned, source)
    outputs = _model_outputs(loaded.model, feeder.batch_name, task.output)
    sweep = _Sweep(session, pruned, task.settings, task.labels, outputs, decisions=task.decisions)
    for batch in feeder.batches():
        sweep.add(_samples(batch, images=source.tensors is None))
        if progress is not None:
            progress(sweep.samples, feeder.total)
    return sweep.partial(), sweep.decisions()


# The shard function and its per-process cache

_SESSIONS: dict[tuple[object, ...], tuple[LoadedModel, PrunedModel, Session]] = {}


def sweep_shard(model: Path, source: SampleSource, task: SweepTask) -> AccuracyPartial:
    """THE accuracy shard function: the exact sums of the sweep of ``model`` over
    ``source``'s sample range. Each process keeps one pruned copy and session per (file,
    pruning, providers, threads), so a worker builds each model's session once."""
    if task.decisions is None:
        raise ValueError("a shard needs the first batch's decisions, taken before sharding")
    loaded, pruned, session = _cached_session(model, task)
    partial, _ = sweep_range(session, pruned, loaded, source, task)
    return partial


def _cached_session(model: Path, task: SweepTask) -> tuple[LoadedModel, PrunedModel, Session]:
    stat = model.stat()
    key = (
        str(model.resolve()),
        stat.st_mtime_ns,
        stat.st_size,
        task.granularity,
        task.model_inputs,
        task.providers,
        task.threads,
    )
    if key not in _SESSIONS:
        loaded = load_model(model)
        pruned = _pruned_copy(loaded, task.granularity, model_inputs=task.model_inputs)
        options = SessionOptions(providers=task.providers, threads=task.threads)
        with runtime.model_file(loaded, pruned.model) as model_source:
            _SESSIONS[key] = (loaded, pruned, runtime.open_session(model_source, options))
    return _SESSIONS[key]


def shard_session(model: Path, task: SweepTask) -> tuple[LoadedModel, PrunedModel, Session]:
    """The pruned copy and session of ``model`` that this process keeps for ``task``, built
    once (what ``sweep_shard`` runs on; ``tune``'s shards share it)."""
    return _cached_session(model, task)


def decide_first_batch(
    session: Session,
    pruned: PrunedModel,
    loaded: LoadedModel,
    batch: SampleBatch,
    task: SweepTask,
    batch_name: str | None,
) -> tuple[SweepDecisions, tuple[str, ...]]:
    """The decisions a sweep takes on its first batch ``batch`` (taken before sharding, as
    ``measure_accuracy`` takes them) and the names of the model's outputs."""
    outputs = _model_outputs(loaded.model, batch_name, task.output)
    sweep = _Sweep(session, pruned, task.settings, task.labels, outputs)
    return sweep.decide(batch), tuple(outputs.names)


def pruned_copy(
    loaded: LoadedModel, granularity: Granularity, *, model_inputs: bool = False
) -> PrunedModel:
    """The pruning graph of every compute layer's IFM (``tune`` shares it)."""
    return _pruned_copy(loaded, granularity, model_inputs=model_inputs)


def feed_samples(
    session: Session, pruned: PrunedModel, source: SampleSource, labels: Labels | None
) -> tuple[Feeder, Iterator[SampleBatch]]:
    """The feeder ``measure_accuracy`` uses and its batches, with their label keys (``tune``
    shares them)."""
    feeder = _feeder(session, pruned, source, labels)
    images = source.tensors is None
    return feeder, (_samples(batch, images=images) for batch in feeder.batches())


def sweep_batches(
    session: Session,
    pruned: PrunedModel,
    batches: Iterable[SampleBatch],
    settings: Sequence[EpsSetting],
    *,
    loaded: LoadedModel,
    labels: Labels | None,
    batch_size: int,
    baselines: BaselineCache | None = None,
    batch_name: str | None = None,
    output: str | None = None,
) -> AccuracyReport:
    """One sweep of ``settings`` (each a uniform ε or a map of IFM name to ε) over ``batches``,
    measured exactly as ``measure_accuracy`` measures it; ``baselines`` keeps the unpruned
    outputs of batches that are swept again. ``batch_name`` (``Feeder.batch_name``) finds the
    outputs' batch axes (default: axis 0); ``output`` is the classifier output to score."""
    outputs = _model_outputs(loaded.model, batch_name, output)
    sweep = _Sweep(session, pruned, tuple(settings), labels, outputs, baselines)
    for batch in batches:
        sweep.add(batch)
    return sweep.report(loaded, batch_size)


def _pruned_copy(
    loaded: LoadedModel, granularity: Granularity, *, model_inputs: bool
) -> PrunedModel:
    scan = find_compute_layers(loaded.model, ConstantResolver(loaded))
    if not scan.layers:
        raise UnsupportedModelError(
            f"{loaded.path} has no compute layer (Conv, Gemm, MatMul with constant weights): "
            "there is no feature map to prune"
        )
    return add_pruning(
        loaded.model, scan.layers, granularity=granularity, model_inputs=model_inputs
    )


def accuracy_drop(report: AccuracyReport, result: EpsAccuracy) -> float | None:
    """Top-1 of the unpruned model minus top-1 at ``result``'s ε, in percentage points."""
    if report.baseline.top1 is None or result.top1 is None:
        return None
    return 100.0 * (report.baseline.top1 - result.top1)


def _drop(report: AccuracyReport, result: EpsAccuracy) -> float:
    """The top-1 drop, else the agreement drop; infinite without a scored output."""
    drop = accuracy_drop(report, result)
    if drop is not None:
        return drop
    return float("inf") if result.agreement is None else 100.0 * (1.0 - result.agreement)


def _check_eps(eps: Sequence[float]) -> None:
    if not eps:
        raise InputDataError("no ε given: give one or more with --eps (for example 0,0.1)")
    if any(not np.isfinite(value) or value < 0 for value in eps):
        raise InputDataError(f"ε must be finite and >= 0, got {list(eps)}: fix --eps")


# --- samples ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Samples:
    """One batch as fed, with the label key of each real sample (padding rows have none)."""

    batch: Batch
    samples: tuple[Sample, ...]

    @property
    def feeds(self) -> Mapping[str, Array]:
        return self.batch.arrays

    @property
    def count(self) -> int:
        return len(self.samples)


SampleBatch = _Samples
"""One batch as fed to the pruned session, with the label key of each real sample."""

BaselineCache = dict[int, tuple[SampleBatch, dict[str, Array]]]
"""Unpruned outputs by batch (the batch is kept with its outputs, so a key is never reused)."""


def _feeder(
    session: Session, pruned: PrunedModel, source: SampleSource, labels: Labels | None
) -> Feeder:
    """The feeder of the model's inputs, with the labels checked against its samples first."""
    feeder = _plain_feeder(session, pruned, source)
    if labels is not None:
        _check_labels(labels, source, feeder.sample_keys(), strict=source.strict)
    return feeder


def _plain_feeder(session: Session, pruned: PrunedModel, source: SampleSource) -> Feeder:
    # IR-3 models list initializers as inputs, and onnxruntime reports them as such.
    constants = {tensor.name for tensor in pruned.model.graph.initializer} | {pruned.eps_input}
    return Feeder(source, session.inputs(), constants=constants)


def _samples(batch: Batch, *, images: bool) -> _Samples:
    keys: tuple[Sample, ...]
    keys = tuple(Path(name) for name in batch.names) if images else batch.indexes
    return _Samples(batch, keys)


def _check_labels(
    labels: Labels, source: SampleSource, candidates: Sequence[Sample], *, strict: bool
) -> None:
    if source.tensors is not None and labels.kind == "tree":
        raise InputDataError(
            f"{labels.source} labels images by folder, but the samples come from --inputs: "
            "give a CSV of sample_index,class_index"
        )
    coverage = check_coverage(labels, candidates, strict=strict)
    if coverage.unlabelled:
        logger.warning(
            "%d of %d samples have no label in %s: they count for agreement only",
            coverage.unlabelled,
            coverage.samples,
            labels.source,
        )


# --- the sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outputs:
    """The model's outputs: their batch axes (None: none) and the output asked to be scored."""

    axes: Mapping[str, int | None]
    requested: str | None

    @property
    def names(self) -> list[str]:
        return list(self.axes)


def _model_outputs(
    model: onnx.ModelProto, batch_name: str | None, requested: str | None
) -> _Outputs:
    """Each output's batch axis: where its dims name the inputs' batch dim, else axis 0."""
    axes: dict[str, int | None] = {}
    for value in model.graph.output:
        dims = [dim.dim_param for dim in value.type.tensor_type.shape.dim]
        has_shape = value.type.tensor_type.HasField("shape")
        axes[value.name] = dims.index(batch_name) if batch_name in dims else 0
        if has_shape and not dims:
            axes[value.name] = None  # a scalar output
    if requested is not None and requested not in axes:
        known = ", ".join(f"'{name}'" for name in axes)
        raise InputDataError(
            f"--output '{requested}' is not an output of the model: its outputs are {known}"
        )
    return _Outputs(axes, requested)


@dataclass(frozen=True)
class SettingSums:
    """The exact sums of one ε setting over a range of samples; ``a + b`` merges in order."""

    top1: int = 0
    top5: int = 0
    agree: int = 0
    kl: ExactSum = field(default_factory=ExactSum)
    pruned: int = 0
    elements: int = 0
    fidelity: tuple[tuple[str, FidelitySums], ...] = ()

    def __add__(self, other: SettingSums) -> SettingSums:
        """Integer sums added, exact float sums added, outputs matched by name."""
        mine, theirs = dict(self.fidelity), dict(other.fidelity)
        names = [*mine, *(name for name in theirs if name not in mine)]
        return SettingSums(
            self.top1 + other.top1,
            self.top5 + other.top5,
            self.agree + other.agree,
            self.kl + other.kl,
            self.pruned + other.pruned,
            self.elements + other.elements,
            tuple(
                (name, mine.get(name, FidelitySums()) + theirs.get(name, FidelitySums()))
                for name in names
            ),
        )


@dataclass(frozen=True)
class AccuracyPartial:
    """The exact sums of a sweep over a range of samples (what a shard returns); ``a + b`` is
    a's samples then b's, whatever the split."""

    samples: int
    labelled: int
    top1: int
    top5: int
    settings: tuple[SettingSums, ...]
    skipped: tuple[SkippedInput, ...] = ()
    padded: int = 0

    def __add__(self, other: AccuracyPartial) -> AccuracyPartial:
        """The sums of both ranges (exact: integers and ``ExactSum``s; records in order)."""
        return AccuracyPartial(
            self.samples + other.samples,
            self.labelled + other.labelled,
            self.top1 + other.top1,
            self.top5 + other.top5,
            tuple(a + b for a, b in zip(self.settings, other.settings, strict=True)),
            self.skipped + other.skipped,
            self.padded + other.padded,
        )


@dataclass(frozen=True)
class SweepDecisions:
    """What the first batch decides, taken once before any sharding so every shard takes it
    the same way: the classifier outputs, the scored one, logits or probabilities, the class
    count, and whether batches fail and samples run one at a time (``single``; ``proven``: a
    batch of several samples has run)."""

    classifiers: tuple[str, ...]
    scored: str | None
    output_kind: OutputKind | None
    classes: int | None
    single: bool
    proven: bool


@dataclass(frozen=True)
class _Reference:
    """What every ε compares its scores with, taken once per batch from the unpruned scores:
    the top class of each row and the rows' log-probabilities."""

    top: npt.NDArray[np.intp]
    log: Scores


@dataclass
class _State:
    samples: int = 0
    labelled: int = 0
    top1: int = 0
    top5: int = 0
    output_kind: OutputKind | None = None
    classifiers: tuple[str, ...] | None = None
    scored: str | None = None
    classes: int | None = None
    skipped: list[SkippedInput] = field(default_factory=list)


class _Sweep:
    """Runs batches through the pruned session and keeps running sums per ε."""

    def __init__(
        self,
        session: Session,
        pruned: PrunedModel,
        eps: tuple[EpsSetting, ...],
        labels: Labels | None,
        outputs: _Outputs,
        baselines: BaselineCache | None = None,
        decisions: SweepDecisions | None = None,
    ) -> None:
        self._baselines = baselines
        self._session = session
        self._pruned = pruned
        self._eps = eps
        self._labels = labels
        self._outputs = outputs
        self._names = outputs.names
        self._counted = [
            name for tensor in pruned.tensors for name in (tensor.count_output, tensor.shape_output)
        ]
        empty = tuple((name, FidelitySums()) for name in self._names)
        self._sums = [SettingSums(fidelity=empty) for _ in eps]
        self._state = _State()
        self._splitter = BatchSplitter()
        self._padded = 0
        if decisions is not None:
            self._state.classifiers = decisions.classifiers
            self._state.scored = decisions.scored
            self._state.output_kind = decisions.output_kind
            self._state.classes = decisions.classes
            self._splitter = BatchSplitter(single=decisions.single, proven=decisions.proven)

    def decide(self, batch: _Samples) -> SweepDecisions:
        """Take the first batch's decisions from its unpruned run alone (one sample when the
        batch fails whole), as measuring it would take them."""
        self._splitter.run(
            batch.batch.rows, lambda: self._decide_on(batch), lambda: self._decide_on(_row(batch))
        )
        return self.decisions()

    def _decide_on(self, batch: _Samples) -> None:
        unpruned = self._baseline(batch)
        axes = {name: self._axis(name, array, batch) for name, array in unpruned.items()}
        self._decide(unpruned, axes)
        scored = self._state.scored
        if scored is not None:
            self._decide_kind(self._scores(unpruned[scored], axes, batch.count))

    def decisions(self) -> SweepDecisions:
        """The decisions taken so far (on the first batch)."""
        state = self._state
        return SweepDecisions(
            classifiers=state.classifiers or (),
            scored=state.scored,
            output_kind=state.output_kind,
            classes=state.classes,
            single=self._splitter.single,
            proven=self._splitter.proven,
        )

    def partial(self) -> AccuracyPartial:
        """The frozen exact sums of every sample measured so far."""
        state = self._state
        return AccuracyPartial(
            samples=state.samples,
            labelled=state.labelled,
            top1=state.top1,
            top5=state.top5,
            settings=tuple(self._sums),
            skipped=tuple(state.skipped),
            padded=self._padded,
        )

    @property
    def samples(self) -> int:
        """Samples measured so far."""
        return self._state.samples

    def add(self, batch: _Samples) -> None:
        """Measure one batch at every ε (one sample at a time once batches have failed)."""
        self._state.skipped.extend(batch.batch.skipped)
        self._padded += batch.batch.padding
        self._splitter.run(
            batch.batch.rows, lambda: self._measure(batch), lambda: self._add_singly(batch)
        )

    def _add_singly(self, batch: _Samples) -> None:
        for row in range(batch.count):
            self._measure(_row(batch, row))

    def _measure(self, batch: _Samples) -> None:
        unpruned = self._baseline(batch)
        axes = {name: self._axis(name, array, batch) for name, array in unpruned.items()}
        self._decide(unpruned, axes)
        truth = self._truth(batch)
        runs = [self._run([*self._names, *self._counted], batch, e) for e in self._eps]
        scored = self._state.scored
        baseline = None if scored is None else self._scores(unpruned[scored], axes, batch.count)
        self._add_baseline(baseline, truth)
        reference = None
        if baseline is not None:
            reference = _Reference(np.argmax(baseline, axis=1), self._log_probabilities(baseline))
        for index, arrays in enumerate(runs):
            sums = self._batch_sums(unpruned, arrays, axes, batch.count, reference, truth)
            self._sums[index] = self._sums[index] + sums

    def _batch_sums(
        self,
        unpruned: Mapping[str, Array],
        arrays: Sequence[Array],
        axes: Mapping[str, int | None],
        count: int,
        reference: _Reference | None,
        truth: npt.NDArray[np.int64],
    ) -> SettingSums:
        """One ε's sums over one batch: fidelity per output, scores against the unpruned
        ``reference`` (None: no scored output), and the pruned/IFM element counts."""
        outputs = dict(zip(self._names, arrays, strict=False))
        fidelity = tuple(
            (name, FidelitySums.of(unpruned[name], outputs[name], count, axis=axes[name]))
            for name in self._names
        )
        top1 = top5 = agree = 0
        kl = ExactSum()
        scored = self._state.scored
        if reference is not None and scored is not None:
            scores = self._scores(outputs[scored], axes, count)
            top1, top5 = _topk(scores, truth)
            agree = int(np.count_nonzero(np.argmax(scores, axis=1) == reference.top))
            kl = ExactSum.of(_kl(reference.log, self._log_probabilities(scores)))
        pruned, elements = self._counts(arrays[len(self._names) :], count)
        return SettingSums(top1, top5, agree, kl, pruned, elements, fidelity)

    def _axis(self, name: str, array: Array, batch: _Samples) -> int | None:
        """The output's batch axis in this run; None when it holds no axis of the batch size."""
        axis = self._outputs.axes[name]
        if axis is None or array.ndim <= axis or array.shape[axis] != batch.batch.rows:
            return None
        return axis

    def _decide(self, unpruned: Mapping[str, Array], axes: Mapping[str, int | None]) -> None:
        """On the first batch: which outputs are class scores, and which one is scored.

        Its errors are InputDataError: an UnsupportedModelError would read as a batch that the
        model cannot run whole."""
        state = self._state
        if state.classifiers is not None:
            return
        state.classifiers = tuple(
            name
            for name, array in unpruned.items()
            if is_classifier(array.shape, batch_axis=axes[name])
        )
        requested = self._outputs.requested
        if requested is not None and requested not in state.classifiers:
            shape = list(unpruned[requested].shape)
            raise InputDataError(
                f"--output '{requested}' has shape {shape}, not one row of class scores per "
                "sample: top-1 needs a classifier output; drop --output for cosine and "
                "relative L2 only"
            )
        state.scored = requested or next(iter(state.classifiers), None)
        if state.scored is None and self._labels is not None:
            raise InputDataError(
                "no output of the model is shaped as class scores ([N, classes]): labels need "
                "one; drop --labels for cosine and relative L2 per output"
            )

    def _baseline(self, batch: _Samples) -> dict[str, Array]:
        """The unpruned outputs of ``batch``, run once per batch object when a cache is kept."""
        cached = None if self._baselines is None else self._baselines.get(id(batch))
        if cached is not None and cached[0] is batch:
            return cached[1]
        arrays = self._run(self._names, batch, UNPRUNED_EPS)
        outputs = dict(zip(self._names, arrays, strict=True))
        if self._baselines is not None:
            self._baselines[id(batch)] = (batch, outputs)
        return outputs

    def _run(self, outputs: list[str], batch: _Samples, eps: EpsSetting) -> list[Array]:
        feeds = {**batch.feeds, self._pruned.eps_input: self._pruned.eps_feed(eps)}
        return self._session.run(outputs, feeds)

    def _scores(self, output: Array, axes: Mapping[str, int | None], count: int) -> Scores:
        scored = self._state.scored
        axis = axes[scored] if scored is not None else 0
        rows = np.asarray(output, dtype=np.float64)
        rows = rows.reshape(1, -1) if axis is None else np.moveaxis(rows, axis, 0)[:count]
        return rows.reshape(rows.shape[0], -1)

    def _log_probabilities(self, scores: Scores) -> Scores:
        if self._state.output_kind == "probabilities":
            # A float32 probability that underflowed to 0 was below the smallest subnormal.
            return np.asarray(np.log(np.clip(scores, _SMALLEST, None)), dtype=np.float64)
        shifted = scores - np.max(scores, axis=1, keepdims=True)
        logs: Scores = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        return logs

    def _truth(self, batch: _Samples) -> npt.NDArray[np.int64]:
        if self._labels is None:
            return np.full(batch.count, -1, dtype=np.int64)
        found = [self._labels.label_for(sample) for sample in batch.samples]
        return np.array([-1 if label is None else label for label in found], dtype=np.int64)

    def _add_baseline(self, baseline: Scores | None, truth: npt.NDArray[np.int64]) -> None:
        """The unpruned model's top-1/top-5; the first batch decides the output kind."""
        state = self._state
        state.samples += len(truth)
        if baseline is None:
            return
        self._decide_kind(baseline)
        top1, top5 = _topk(baseline, truth)
        state.labelled += int(np.count_nonzero(truth >= 0))
        state.top1 += top1
        state.top5 += top5

    def _decide_kind(self, baseline: Scores) -> None:
        """On the first batch: logits or probabilities, and the class count (checked against
        the labels)."""
        state = self._state
        if state.output_kind is None:
            state.output_kind = _output_kind(baseline)
            state.classes = baseline.shape[1]
            if self._labels is not None:
                check_classes(self._labels, baseline.shape[1])

    def _counts(self, outputs: Sequence[Array], count: int) -> tuple[int, int]:
        """The pruned and IFM element counts of one run, over every pruned layer."""
        granularity = self._pruned.granularity
        pruned = elements = 0
        for index, tensor in enumerate(self._pruned.tensors):
            counts, shape = outputs[2 * index], outputs[2 * index + 1]
            counted = count_pruned(tensor, granularity, counts, shape, samples=count)
            pruned += counted.pruned * len(tensor.layers)
            elements += counted.elements * len(tensor.layers)
        return pruned, elements

    def report(self, loaded: LoadedModel, batch_size: int) -> AccuracyReport:
        """The frozen result of everything measured so far."""
        return build_report(
            self.partial(),
            self.decisions(),
            loaded=loaded,
            pruned=self._pruned,
            settings=self._eps,
            outputs=tuple(self._names),
            batch_size=batch_size,
        )


def _row(batch: _Samples, row: int = 0) -> _Samples:
    """Sample ``row`` of ``batch`` as a batch of one."""
    one = Batch(batch.batch.sample(row), batch.batch.names[row : row + 1])
    return _Samples(one, batch.samples[row : row + 1])


def build_report(
    partial: AccuracyPartial,
    decisions: SweepDecisions,
    *,
    loaded: LoadedModel,
    pruned: PrunedModel,
    settings: Sequence[EpsSetting],
    outputs: tuple[str, ...],
    batch_size: int,
) -> AccuracyReport:
    """The report of a sweep's merged sums: every mean is taken here, once."""
    if partial.samples == 0:
        raise InputDataError("no sample was measured: give images or tensors to run")
    return AccuracyReport(
        model=str(loaded.path),
        granularity=pruned.granularity,
        samples=partial.samples,
        labelled=partial.labelled,
        baseline=TopK(*_fractions(partial.top1, partial.top5, partial.labelled, decisions.classes)),
        results=tuple(
            _result(e, sums, partial, decisions)
            for e, sums in zip(settings, partial.settings, strict=True)
        ),
        random_weights=is_random_weights(loaded.model),
        output_kind=decisions.output_kind or "logits",
        batch_size=1 if decisions.single else batch_size,
        pruned_layers=sum(len(tensor.layers) for tensor in pruned.tensors),
        skipped_inputs=partial.skipped,
        not_pruned=pruned.not_pruned,
        padded_samples=partial.padded,
        outputs=outputs,
        classifier_outputs=decisions.classifiers,
        scored_output=decisions.scored,
        classes=decisions.classes,
    )


def _result(
    eps: EpsSetting, sums: SettingSums, partial: AccuracyPartial, decisions: SweepDecisions
) -> EpsAccuracy:
    top1, top5 = _fractions(sums.top1, sums.top5, partial.labelled, decisions.classes)
    scored = decisions.scored is not None
    return EpsAccuracy(
        eps=None if isinstance(eps, Mapping) else eps,
        top1=top1,
        top5=top5,
        agreement=sums.agree / partial.samples if scored else None,
        kl=sums.kl.mean(partial.samples) if scored else None,
        saved_fraction=sums.pruned / sums.elements if sums.elements else 0.0,
        pruned_elements=sums.pruned,
        ifm_elements=sums.elements,
        outputs={name: fidelity.result() for name, fidelity in sums.fidelity},
    )


def _fractions(
    top1: int, top5: int, labelled: int, classes: int | None
) -> tuple[float | None, float | None]:
    """Top-1 and top-5 shares of the labelled samples; top-5 only with more than 5 classes."""
    if labelled == 0:
        return None, None
    return top1 / labelled, (top5 / labelled if classes is not None and classes > 5 else None)


def _topk(scores: Scores, truth: npt.NDArray[np.int64]) -> tuple[int, int]:
    """The labelled rows whose label is the top class, and those with it in the top five."""
    labelled = truth >= 0
    if not np.any(labelled):
        return 0, 0
    rows, labels = scores[labelled], truth[labelled]
    top1 = int(np.count_nonzero(np.argmax(rows, axis=1) == labels))
    k = min(5, rows.shape[1])
    best = np.argpartition(-rows, k - 1, axis=1)[:, :k]
    return top1, int(np.count_nonzero(np.any(best == labels[:, None], axis=1)))


def _output_kind(scores: Scores) -> OutputKind:
    sums = np.sum(scores, axis=1)
    if np.all(scores >= 0) and np.allclose(sums, 1.0, atol=1e-3):
        return "probabilities"
    return "logits"


def _kl(log_reference: Scores, log_pruned: Scores) -> Scores:
    """KL(p ‖ q) per row from log p and log q; terms where p is 0 contribute 0."""
    with np.errstate(invalid="ignore"):
        reference = np.exp(log_reference)
        terms = np.where(reference > 0, reference * (log_reference - log_pruned), 0.0)
    rows: Scores = np.sum(terms, axis=1)
    return rows
