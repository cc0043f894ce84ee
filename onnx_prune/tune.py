"""Per-layer ε under an accuracy budget (``onnx-prune tune``): sensitivity, selection, check.

1. **Savings**: each pruned IFM's exact bytes saved at every candidate ε, measured on the
   calibration split by ``analyze``'s probes and bandwidth model (``assignments``).
2. **Uniform sweep**: every candidate as one ε for all layers (one ``accuracy`` sweep); the best
   uniform ε is the one that saves most within the budget, measured.
3. **Sensitivity**: each IFM alone at each candidate, every other IFM unpruned, in rounds (one
   sweep over the calibration split per round, all still-open layers together). A layer stops at
   its first candidate outside the budget. A candidate whose savings equal the previous one's
   prunes exactly the same values (a larger ε prunes a superset, so equal totals mean equal sets),
   so its result is the previous one's and is not run again; a layer whose savings never grow
   beyond its floor (ε = 0, which changes no value) needs no run at all.
4. **Selection: bisection on a common sensitivity threshold** τ. At τ each layer takes its
   candidate that saves most among those within the budget alone and with a score (KL, or
   1 − cosine) at most τ. The combined assignment is validated; the largest τ that passes is found
   by bisection over the sorted scores. Why not greedy with validation: that validates once per
   layer added (up to 49 sweeps of the split on EfficientNet-Lite0), bisection one more than
   log2 of the number of scores (8 on EfficientNet-Lite0, for 150 scores), and a common
   threshold keeps the balance between layers that the single-layer scores show. Sensitivities
   are not additive, so only validated assignments are kept; if the best uniform ε saves more
   than the bisection's pick, that uniform assignment is kept. The bisection assumes that a
   lower threshold is safer; where the combined metric is not monotone in τ it finds a passing
   τ next to a failing one, not necessarily the largest passing one.
5. **Held-out check**: the chosen map and the best uniform ε run on the held-out split.

Everything is measured on one pruning session; ``Evaluator`` is the seam for other runners:
with a ``runner`` (``tune --workers N`` / ``--scheduler``) every sweep of steps 2–5 runs in shards
on Dask workers (``assignments.ShardedEvaluator``) and merges into the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from onnx_prune import runtime
from onnx_prune.accuracy import (
    EpsSetting,
    SweepTask,
    decide_first_batch,
    feed_samples,
    pruned_copy,
)
from onnx_prune.assignments import (
    CountingSession,
    Evaluator,
    RunCount,
    SessionEvaluator,
    ShardedEvaluator,
    Split,
    SplitRunner,
    SplitSamples,
    TensorSavings,
    measure_savings,
    split_samples,
    split_source,
)
from onnx_prune.budget import Budget, Measured
from onnx_prune.constants import ConstantResolver
from onnx_prune.epsmap import EpsMap
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import Feeder, SampleSource, SessionFactory
from onnx_prune.inputs import SkippedInput
from onnx_prune.labels import Labels
from onnx_prune.layers import find_compute_layers
from onnx_prune.load import LoadedModel, is_random_weights
from onnx_prune.pruning import Granularity, NotPruned, PrunedModel
from onnx_prune.runtime import ModelSource, Providers, Session, SessionOptions

PointSource = Literal["measured", "same pruning", "no change", "not run"]
DEFAULT_CANDIDATES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


@dataclass(frozen=True)
class SensitivityPoint:
    """One IFM pruned alone at one candidate ε: its savings and what it did to the outputs.

    ``source``: ``measured``; ``same pruning`` (the savings equal those at ``same_as``, so the
    pruned values and the result are the same); ``no change`` (ε = 0, which zeroes only zeros, a
    candidate that prunes nothing, or one that prunes what ε = 0 does); ``not run`` (the layer
    had already left the budget at a smaller ε).
    """

    eps: float
    saved_bytes: float
    measured: Measured | None
    source: PointSource
    same_as: float | None = None

    @property
    def admissible(self) -> bool:
        """Within the budget when pruned alone (a point that changes nothing always is)."""
        return self.source == "no change" or (self.measured is not None and self.measured.within)


@dataclass(frozen=True)
class LayerSensitivity:
    """The sensitivity curve of one pruned IFM."""

    tensor: str
    layers: tuple[str, ...]
    ifm_bytes: int
    points: tuple[SensitivityPoint, ...]


@dataclass(frozen=True)
class Validation:
    """One combined assignment, validated on the calibration split."""

    threshold: float | None
    eps: Mapping[str, float]
    predicted_saved_bytes: float
    measured: Measured


@dataclass(frozen=True)
class Search:
    """What the search found on the calibration split."""

    uniform: tuple[Measured, ...]
    uniform_saved_bytes: tuple[float, ...]
    best_uniform: int | None
    layers: tuple[LayerSensitivity, ...]
    validations: tuple[Validation, ...]
    chosen: Validation | None
    chose_uniform: bool


def search_eps(
    evaluator: Evaluator,
    savings: Sequence[TensorSavings],
    candidates: Sequence[float],
    budget: Budget,
) -> Search:
    """Sweep, sensitivities, then bisection on a common threshold, all on the calibration split."""
    candidates = tuple(candidates)
    uniform = evaluator.measure(candidates, "calibration")
    uniform_saved = tuple(sum(s.saved[k] for s in savings) for k in range(len(candidates)))
    best_uniform = _best_uniform(uniform, uniform_saved)
    floor_ok = 0.0 not in candidates or uniform[candidates.index(0.0)].within
    layers = _sensitivities(evaluator, savings, candidates)
    validations: list[Validation] = []
    chosen = _bisect(evaluator, layers, validations) if floor_ok else None
    chose_uniform = False
    if best_uniform is not None and (
        chosen is None or uniform_saved[best_uniform] > chosen.predicted_saved_bytes
    ):
        eps = candidates[best_uniform]
        chosen = Validation(
            None,
            {s.tensor: eps for s in savings},
            uniform_saved[best_uniform],
            uniform[best_uniform],
        )
        chose_uniform = True
    return Search(
        uniform=uniform,
        uniform_saved_bytes=uniform_saved,
        best_uniform=best_uniform,
        layers=layers,
        validations=tuple(validations),
        chosen=chosen,
        chose_uniform=chose_uniform,
    )


def _best_uniform(uniform: Sequence[Measured], saved: Sequence[float]) -> int | None:
    """The candidate that saves most within the budget (the smaller ε on a tie)."""
    within = [k for k, measured in enumerate(uniform) if measured.within]
    return max(within, key=lambda k: (saved[k], -k)) if within else None


# --- sensitivity --------------------------------------------------------------------------------


class _Curve:
    """The points of one layer as the rounds fill them in."""

    def __init__(self, savings: TensorSavings, candidates: Sequence[float]) -> None:
        self.savings = savings
        self.candidates = candidates
        self.points: list[SensitivityPoint] = []
        self.stopped = False

    def next_to_run(self) -> int | None:
        """The index of the next candidate that needs a run, filling in those that do not."""
        while not self.stopped and len(self.points) < len(self.candidates):
            k = len(self.points)
            eps, saved = self.candidates[k], self.savings.saved[k]
            if eps == 0.0 or (not self.points and saved == 0):
                self.points.append(SensitivityPoint(eps, saved, None, "no change"))
            elif self.points and self.points[-1].saved_bytes == saved:
                self.points.append(_copy(self.points[-1], eps))
                self.stopped = not self.points[-1].admissible
            else:
                return k
        return None

    def add(self, k: int, measured: Measured) -> None:
        """Record the run of candidate ``k``."""
        saved = self.savings.saved[k]
        self.points.append(SensitivityPoint(self.candidates[k], saved, measured, "measured"))
        self.stopped = not measured.within

    def finish(self) -> LayerSensitivity:
        """The curve, with the candidates never reached marked ``not run``."""
        for k in range(len(self.points), len(self.candidates)):
            eps, saved = self.candidates[k], self.savings.saved[k]
            self.points.append(SensitivityPoint(eps, saved, None, "not run"))
        s = self.savings
        return LayerSensitivity(s.tensor, s.layers, s.ifm_bytes, tuple(self.points))


def _copy(previous: SensitivityPoint, eps: float) -> SensitivityPoint:
    """A point that prunes the same values as ``previous``: the same result."""
    origin = previous.same_as if previous.same_as is not None else previous.eps
    source: PointSource = "no change" if previous.source == "no change" else "same pruning"
    return SensitivityPoint(eps, previous.saved_bytes, previous.measured, source, origin)


def _sensitivities(
    evaluator: Evaluator, savings: Sequence[TensorSavings], candidates: Sequence[float]
) -> tuple[LayerSensitivity, ...]:
    curves = [_Curve(s, candidates) for s in savings]
    while True:
        todo = [(curve, k) for curve in curves if (k := curve.next_to_run()) is not None]
        if not todo:
            return tuple(curve.finish() for curve in curves)
        settings = [{curve.savings.tensor: candidates[k]} for curve, k in todo]
        for (curve, k), measured in zip(
            todo, evaluator.measure(settings, "calibration"), strict=True
        ):
            curve.add(k, measured)


# --- selection ----------------------------------------------------------------------------------


def assignment_at(
    layers: Sequence[LayerSensitivity], threshold: float | None
) -> tuple[dict[str, float], float]:
    """Each layer's best admissible candidate with a score <= ``threshold`` (None: only the
    floor), and the predicted bytes saved (each layer's own savings, summed)."""
    eps: dict[str, float] = {}
    saved = 0.0
    for layer in layers:
        point = _best_point(layer, threshold)
        if point is not None:
            eps[layer.tensor] = point.eps
            saved += point.saved_bytes
    return eps, saved


def _best_point(layer: LayerSensitivity, threshold: float | None) -> SensitivityPoint | None:
    allowed = [p for p in layer.points if p.admissible and _under(p, threshold)]
    if not allowed:
        return None
    return max(allowed, key=lambda p: (p.saved_bytes, -p.eps))


def _under(point: SensitivityPoint, threshold: float | None) -> bool:
    if point.source == "no change" or point.measured is None:
        return point.source == "no change"
    return threshold is not None and point.measured.score <= threshold


def _bisect(
    evaluator: Evaluator, layers: Sequence[LayerSensitivity], validations: list[Validation]
) -> Validation | None:
    """The largest common threshold whose combined assignment is within the budget."""
    scores = sorted(
        {p.measured.score for layer in layers for p in layer.points if p.measured and _scored(p)}
    )
    validate = _validator(evaluator, layers, validations)
    top = validate(scores[-1] if scores else None)
    if top.measured.within:
        return top
    low, high = -1, len(scores) - 1
    best: Validation | None = None
    while high - low > 1:
        middle = (low + high) // 2
        attempt = validate(scores[middle])
        if attempt.measured.within:
            low, best = middle, attempt
        else:
            high = middle
    if best is not None:
        return best
    floor = validate(None)  # every layer at a candidate that changes nothing
    return floor if floor.measured.within else None


def _scored(point: SensitivityPoint) -> bool:
    return point.source != "no change" and point.admissible and point.measured is not None


def _validator(
    evaluator: Evaluator, layers: Sequence[LayerSensitivity], validations: list[Validation]
) -> Callable[[float | None], Validation]:
    def validate(threshold: float | None) -> Validation:
        eps, saved = assignment_at(layers, threshold)
        (measured,) = evaluator.measure([eps], "calibration")
        validations.append(Validation(threshold, eps, saved, measured))
        return validations[-1]

    return validate


def predicted_metric(
    budget: Budget, layers: Sequence[LayerSensitivity], eps: Mapping[str, float]
) -> float | None:
    """The metric if the single-layer losses at the chosen ε added up (None when one of them
    was never run)."""
    loss = 0.0
    for layer in layers:
        point = next((p for p in layer.points if p.eps == eps.get(layer.tensor)), None)
        if point is not None and point.source == "not run":
            return None
        if point is not None and point.measured is not None:
            loss += budget.loss(point.measured.metric)
    return budget.from_loss(loss)


# --- the whole command --------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitFigures:
    """The chosen map and the best uniform ε measured on one split."""

    samples: int
    chosen: Measured | None
    uniform: Measured | None


@dataclass(frozen=True)
class TuneReport:
    """Everything ``tune`` found and measured."""

    model: str
    random_weights: bool
    granularity: Granularity
    budget: Budget
    candidates: tuple[float, ...]
    holdout_fraction: float
    search: Search
    eps_map: EpsMap | None
    predicted_metric: float | None
    ifm_bytes: int
    calibration: SplitFigures
    holdout: SplitFigures
    runs: RunCount
    batch_size: int
    skipped_inputs: tuple[SkippedInput, ...]
    not_pruned: tuple[NotPruned, ...]

    @property
    def uniform_predicted_metric(self) -> float | None:
        """The best uniform ε's metric if the single-layer losses added up."""
        eps = self.best_uniform_eps
        if eps is None:
            return None
        layers = self.search.layers
        return predicted_metric(self.budget, layers, {layer.tensor: eps for layer in layers})

    @property
    def best_uniform_eps(self) -> float | None:
        """The best uniform ε within the budget on the calibration split, or None."""
        index = self.search.best_uniform
        return None if index is None else self.candidates[index]


def tune_model(
    loaded: LoadedModel,
    source: SampleSource,
    *,
    budget: Budget,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    holdout: float = 0.3,
    granularity: Granularity = "channel",
    labels: Labels | None = None,
    providers: Providers | None = None,
    session_factory: SessionFactory = runtime.open_session,
    runner: SplitRunner | None = None,
) -> TuneReport:
    """Choose one ε per pruned IFM of ``loaded`` under ``budget`` and check it on held-out
    samples; every figure is measured on one session of the pruning graph (plus one run of
    analyze's probed model for the savings). ``providers``: the onnxruntime execution providers
    (default: the CPU); ``session_factory`` replaces onnxruntime (tests). ``runner``
    (``distributed.DaskRunner``) measures every sweep in shards on workers, with the same
    result (only ``runs`` counts more unpruned runs: workers keep no baselines)."""
    candidates = _checked_candidates(candidates)
    if budget.kind == "top1_drop" and labels is None:
        raise InputDataError("--max-top1-drop needs --labels; without labels use --min-agreement")
    options = SessionOptions(providers=providers or Providers())
    scan = find_compute_layers(loaded.model, ConstantResolver(loaded))
    pruned = pruned_copy(loaded, granularity)
    count = RunCount()

    def analysis_session(probed: ModelSource) -> Session:
        return CountingSession(session_factory(probed, options), count, analysis=True)

    with runtime.model_file(loaded, pruned.model) as model_source:
        session = CountingSession(session_factory(model_source, options), count)
        feeder, batches = feed_samples(session, pruned, source, labels)
        size = feeder.batch_size
        samples = split_samples(batches, holdout, batch_size=size, fixed=feeder.fixed)
        if not samples.calibration:
            raise InputDataError("no sample to tune on: give more samples or a smaller --holdout")
        savings = measure_savings(
            loaded, scan.layers, pruned, samples.calibration, candidates,
            open_session=analysis_session,
        )  # fmt: skip
        evaluator: Evaluator = SessionEvaluator(
            session, pruned, samples, loaded, labels, budget, size, feeder.batch_name
        )
        if runner is not None:
            setup = _Setup(loaded, pruned, session, feeder, labels, budget, providers, count)
            evaluator = _sharded(runner, setup, samples, source)
        search = search_eps(evaluator, savings, candidates, budget)
        held_out = _held_out(evaluator, search, candidates, samples.count("holdout"))
    return _report(
        loaded, pruned, budget, candidates, holdout, search, savings, samples, held_out, count,
        size,
    )  # fmt: skip


@dataclass(frozen=True)
class _Setup:
    """What a sharded evaluator is built from."""

    loaded: LoadedModel
    pruned: PrunedModel
    session: Session
    feeder: Feeder
    labels: Labels | None
    budget: Budget
    providers: Providers | None
    count: RunCount


def _sharded(
    runner: SplitRunner, setup: _Setup, samples: SplitSamples, source: SampleSource
) -> ShardedEvaluator:
    """Each split as sample numbers and a sweep task with its first batch's decisions (taken
    here, as the serial sweep takes them on that batch)."""
    keys = setup.feeder.sample_keys()
    base = SweepTask(
        settings=(0.0,),
        granularity=setup.pruned.granularity,
        labels=setup.labels,
        providers=setup.providers or Providers(),
        model_inputs=False,
        output=None,
    )
    sources: dict[Split, SampleSource] = {}
    tasks: dict[Split, SweepTask] = {}
    outputs: tuple[str, ...] = ()
    splits: tuple[Split, ...] = ("calibration", "holdout")
    for split in splits:
        batches = samples.of(split)
        if not batches:
            continue
        sources[split] = split_source(source, keys, batches)
        decisions, outputs = decide_first_batch(
            setup.session, setup.pruned, setup.loaded, batches[0], base, setup.feeder.batch_name
        )
        tasks[split] = replace(base, decisions=decisions)
    return ShardedEvaluator(
        runner,
        setup.loaded.path,
        sources,
        tasks,
        setup.loaded,
        setup.pruned,
        setup.budget,
        setup.feeder.batch_size,
        outputs,
        setup.count,
    )


def _checked_candidates(candidates: Sequence[float]) -> tuple[float, ...]:
    values = tuple(sorted(set(float(e) for e in candidates)))
    if not values or any(not math.isfinite(e) or e < 0 for e in values):
        raise InputDataError(
            f"--candidates must be finite ε >= 0, got {list(candidates)}: e.g. 0,0.1,0.5"
        )
    return values


def _held_out(
    evaluator: Evaluator, search: Search, candidates: Sequence[float], samples: int
) -> SplitFigures:
    settings: list[EpsSetting] = []
    if search.chosen is not None:
        settings.append(search.chosen.eps)
    if search.best_uniform is not None:
        settings.append(candidates[search.best_uniform])
    if not samples or not settings:
        return SplitFigures(samples, None, None)
    measured = list(evaluator.measure(settings, "holdout"))
    chosen = measured.pop(0) if search.chosen is not None else None
    uniform = measured.pop(0) if search.best_uniform is not None else None
    return SplitFigures(samples, chosen, uniform)


def _report(
    loaded: LoadedModel,
    pruned: PrunedModel,
    budget: Budget,
    candidates: tuple[float, ...],
    holdout: float,
    search: Search,
    savings: Sequence[TensorSavings],
    samples: SplitSamples,
    held_out: SplitFigures,
    count: RunCount,
    batch_size: int,
) -> TuneReport:
    chosen = search.chosen
    uniform = search.best_uniform
    return TuneReport(
        model=str(loaded.path),
        random_weights=is_random_weights(loaded.model),
        granularity=pruned.granularity,
        budget=budget,
        candidates=candidates,
        holdout_fraction=holdout,
        search=search,
        eps_map=None
        if chosen is None
        else EpsMap(loaded.path.name, budget.describe(), dict(chosen.eps)),
        predicted_metric=None
        if chosen is None
        else predicted_metric(budget, search.layers, chosen.eps),
        ifm_bytes=sum(s.ifm_bytes for s in savings),
        calibration=SplitFigures(
            samples.count("calibration"),
            None if chosen is None else chosen.measured,
            None if uniform is None else search.uniform[uniform],
        ),
        holdout=held_out,
        runs=count,
        batch_size=batch_size,
        skipped_inputs=samples.skipped,
        not_pruned=pruned.not_pruned,
    )
