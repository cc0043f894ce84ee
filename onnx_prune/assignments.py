"""What ``tune`` measures: the samples split in two, ε assignments on one pruning session, and
each pruned IFM's exact savings at every candidate ε.

- **Split**: sample ``i`` (0-based, in the order the samples are read) is held out when
  ``floor((i + 1) · f) > floor(i · f)`` for the holdout fraction ``f``: exactly ``floor(n · f)``
  of ``n`` samples, spread evenly through the set (every third or so at 0.3), the same on every
  run and without knowing ``n`` in advance. The prepared batches of both splits are kept in
  memory for the whole search (it runs them many times): cap the set with ``--limit``.
- **Assignments**: one session of the pruning graph (``pruning.add_pruning``) serves every run;
  an assignment is only a different ε vector fed to it (``accuracy.sweep_batches`` measures it,
  exactly as ``accuracy`` does).
- **Savings**: the calibration split runs once through ``analyze``'s probed graph at every
  candidate ε; the bandwidth model then gives each layer's exact IFM bytes saved per candidate,
  summed here over the layers that read the same IFM.
- **Counting**: every session run and every sample row fed is counted (``RunCount``).

The evaluator is the seam for running elsewhere: anything with ``measure(settings, split)``
serves the search. ``ShardedEvaluator`` measures each setting over a split in shards on Dask
workers (``tune --workers N`` / ``--scheduler``): a split travels as the list of its sample
numbers (``SampleSource.indices``), each shard of whole batches runs ``tune_shard`` (``accuracy``'s
sweep of the range on the worker's cached session, its session runs counted) and the exact
partial sums merge by ``+`` into the very report the serial sweep gives. Only the runs differ:
workers keep no unpruned outputs between sweeps, so each sweep runs the unpruned model again.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from onnx_prune.accuracy import (
    AccuracyPartial,
    AccuracyReport,
    BaselineCache,
    EpsSetting,
    SampleBatch,
    SweepTask,
    build_report,
    shard_session,
    sweep_batches,
    sweep_range,
)
from onnx_prune.bandwidth import estimate_bandwidth
from onnx_prune.budget import Budget, Measured, measure
from onnx_prune.calibrate import collect_activation_stats
from onnx_prune.constants import ConstantResolver
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import Progress, SampleSource
from onnx_prune.inputs import Batch, SkippedInput
from onnx_prune.labels import Labels, Sample
from onnx_prune.layers import ComputeLayer
from onnx_prune.load import LoadedModel
from onnx_prune.probes import add_probes
from onnx_prune.pruning import PrunedModel
from onnx_prune.runtime import ModelSource, Session, TensorSpec, model_file
from onnx_prune.shapes import infer_tensor_types
from onnx_prune.weights import count_zero_weights

Split = Literal["calibration", "holdout"]
OpenSession = Callable[[ModelSource], Session]
Array = np.ndarray[Any, Any]
Part = TypeVar("Part")


def is_held_out(index: int, fraction: float) -> bool:
    """Whether sample ``index`` belongs to the held-out split (exact rational arithmetic)."""
    share = Fraction(fraction).limit_denominator(10**6)
    return math.floor((index + 1) * share) > math.floor(index * share)


@dataclass(frozen=True)
class SplitSamples:
    """The prepared batches of both splits, and the inputs skipped while reading them."""

    calibration: tuple[SampleBatch, ...]
    holdout: tuple[SampleBatch, ...]
    skipped: tuple[SkippedInput, ...]

    def of(self, split: Split) -> tuple[SampleBatch, ...]:
        """The batches of one split."""
        return self.calibration if split == "calibration" else self.holdout

    def count(self, split: Split) -> int:
        """The samples of one split."""
        return sum(batch.count for batch in self.of(split))


def split_samples(
    batches: Iterable[SampleBatch], fraction: float, *, batch_size: int, fixed: int | None
) -> SplitSamples:
    """Deal the samples of ``batches`` into the two splits, re-batched to ``batch_size`` (the
    last batch of a split padded with copies of its last sample to a model's ``fixed`` batch)."""
    if not 0 <= fraction < 1:
        raise InputDataError(f"--holdout must be at least 0 and below 1, got {fraction:g}")
    rows: dict[Split, list[_Row]] = {"calibration": [], "holdout": []}
    done: dict[Split, list[SampleBatch]] = {"calibration": [], "holdout": []}
    skipped: list[SkippedInput] = []
    index = 0
    for batch in batches:
        skipped.extend(batch.batch.skipped)
        for row in range(batch.count):
            split: Split = "holdout" if is_held_out(index, fraction) else "calibration"
            rows[split].append(_Row.of(batch, row))
            index += 1
            if len(rows[split]) == batch_size:
                done[split].append(_joined(rows[split], fixed))
                rows[split] = []
    for split, left in rows.items():
        if left:
            done[split].append(_joined(left, fixed))
    return SplitSamples(tuple(done["calibration"]), tuple(done["holdout"]), tuple(skipped))


@dataclass(frozen=True)
class _Row:
    """One sample taken out of its batch: its feeds (inputs without a batch axis whole)."""

    feeds: Mapping[str, Array]
    axes: Mapping[str, int | None]
    name: str
    index: int | None
    sample: Sample

    @staticmethod
    def of(batch: SampleBatch, row: int) -> _Row:
        inner = batch.batch
        index = inner.indexes[row] if row < len(inner.indexes) else None
        axes = {name: inner.axis(name) for name in inner.arrays}
        return _Row(inner.sample(row), axes, inner.names[row], index, batch.samples[row])


def _joined(rows: Sequence[_Row], fixed: int | None) -> SampleBatch:
    axes = rows[0].axes
    padding = fixed - len(rows) if fixed is not None and len(rows) < fixed else 0
    padded = [*rows, *[rows[-1]] * padding]
    arrays = {
        name: rows[0].feeds[name]
        if axis is None
        else np.concatenate([row.feeds[name] for row in padded], axis=axis)
        for name, axis in axes.items()
    }
    indexes = tuple(row.index for row in rows if row.index is not None)
    batch = Batch(
        arrays,
        tuple(row.name for row in rows),
        axes=dict(axes),
        indexes=indexes if len(indexes) == len(rows) else (),
        padding=padding,
    )
    return SampleBatch(batch, tuple(row.sample for row in rows))


@dataclass
class RunCount:
    """Session runs and sample rows fed (mutable: the counting sessions add to it)."""

    runs: int = 0
    rows: int = 0
    analysis_runs: int = 0
    analysis_rows: int = 0

    def add(self, other: RunCount) -> None:
        """Add the runs counted elsewhere (a worker's shard)."""
        self.runs += other.runs
        self.rows += other.rows
        self.analysis_runs += other.analysis_runs
        self.analysis_rows += other.analysis_rows


class CountingSession:
    """A session that counts its runs into a ``RunCount``."""

    def __init__(self, inner: Session, count: RunCount, *, analysis: bool = False) -> None:
        self._inner = inner
        self._count = count
        self._analysis = analysis

    def inputs(self) -> Sequence[TensorSpec]:
        """The inner session's inputs."""
        return self._inner.inputs()

    def run(self, outputs: Sequence[str], feeds: Mapping[str, Array]) -> list[Array]:
        """Run the inner session and count it."""
        rows = len(next(iter(feeds.values()))) if feeds else 0
        if self._analysis:
            self._count.analysis_runs += 1
            self._count.analysis_rows += rows
        else:
            self._count.runs += 1
            self._count.rows += rows
        return self._inner.run(outputs, feeds)


class Evaluator(Protocol):
    """What the search needs: measure ε settings on a split (one result per setting)."""

    def measure(self, settings: Sequence[EpsSetting], split: Split) -> tuple[Measured, ...]:
        """Measure every setting on the samples of ``split``."""
        ...


@dataclass
class SessionEvaluator:
    """Measures settings on the pruning session over the kept batches of each split."""

    session: Session
    pruned: PrunedModel
    samples: SplitSamples
    loaded: LoadedModel
    labels: Labels | None
    budget: Budget
    batch_size: int
    batch_name: str | None = None
    reports: dict[Split, AccuracyReport] = field(default_factory=dict)
    baselines: BaselineCache = field(default_factory=dict)

    def measure(self, settings: Sequence[EpsSetting], split: Split) -> tuple[Measured, ...]:
        """One sweep of ``settings`` over ``split``; the last report per split is kept."""
        report = sweep_batches(
            self.session,
            self.pruned,
            self.samples.of(split),
            settings,
            loaded=self.loaded,
            labels=self.labels,
            batch_size=self.batch_size,
            baselines=self.baselines,
            batch_name=self.batch_name,
        )
        self.reports[split] = report
        return tuple(measure(self.budget, report, result) for result in report.results)


class SplitRunner(Protocol):
    """Runs a function on the shards of a sample source (``distributed.DaskRunner``)."""

    @property
    def threads(self) -> int | None:
        """onnxruntime's intra-op threads in each worker (None: its default)."""
        ...

    def in_shards(
        self,
        path: Path,
        source: SampleSource,
        plan: tuple[int, int],
        function: Callable[[SampleSource], Part],
        progress: Progress | None,
    ) -> list[Part]:
        """``function`` on each shard of whole batches; the parts in sample order."""
        ...


def split_source(
    source: SampleSource, keys: Sequence[Sample], batches: Sequence[SampleBatch]
) -> SampleSource:
    """``source`` restricted to the samples of one split's ``batches``, in their order, as
    sample numbers (``keys``: the feeder's samples of ``source``, image files or numbers)."""
    if source.tensors is not None:
        indices = [index for batch in batches for index in batch.batch.indexes]
    else:
        position = {key: source.start + number for number, key in reversed(list(enumerate(keys)))}
        indices = [position[sample] for batch in batches for sample in batch.samples]
    return replace(source, indices=tuple(indices), start=0, limit=None)


def tune_shard(
    model: Path, source: SampleSource, task: SweepTask
) -> tuple[AccuracyPartial, RunCount]:
    """What a worker runs for ``tune``: ``accuracy``'s sweep of one shard (``sweep_shard``'s
    cached session and ``sweep_range``), and the session runs it made."""
    if task.decisions is None:
        raise ValueError("a shard needs the first batch's decisions, taken before sharding")
    loaded, pruned, session = shard_session(model, task)
    count = RunCount()
    partial, _ = sweep_range(CountingSession(session, count), pruned, loaded, source, task)
    return partial, count


@dataclass
class ShardedEvaluator:
    """Measures settings over each split in shards on a runner's workers; the merged exact sums
    give the report the serial sweep gives. ``tasks``: each split's sweep task (its first
    batch's decisions taken here); ``count`` adds up the workers' session runs."""

    runner: SplitRunner
    path: Path
    sources: Mapping[Split, SampleSource]
    tasks: Mapping[Split, SweepTask]
    loaded: LoadedModel
    pruned: PrunedModel
    budget: Budget
    batch_size: int
    outputs: tuple[str, ...]
    count: RunCount

    def measure(self, settings: Sequence[EpsSetting], split: Split) -> tuple[Measured, ...]:
        """One sweep of ``settings`` over ``split``, in shards, merged in sample order."""
        task = replace(self.tasks[split], settings=tuple(settings), threads=self.runner.threads)
        source = self.sources[split]
        path = self.path

        def run(shard: SampleSource) -> tuple[AccuracyPartial, RunCount]:
            return tune_shard(path, shard, task)

        plan = (len(source.indices or ()), self.batch_size)
        parts = self.runner.in_shards(path, source, plan, run, None)
        partial = functools.reduce(operator.add, (part for part, _ in parts))
        for _, count in parts:
            self.count.add(count)
        if task.decisions is None:
            raise ValueError("a sharded sweep needs the first batch's decisions")
        report = build_report(
            partial,
            task.decisions,
            loaded=self.loaded,
            pruned=self.pruned,
            settings=task.settings,
            outputs=self.outputs,
            batch_size=self.batch_size,
        )
        return tuple(measure(self.budget, report, result) for result in report.results)


# --- savings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSavings:
    """One pruned IFM: the layers reading it, their IFM bytes and the bytes saved at each
    candidate ε (means per sample over the calibration split, summed over those layers)."""

    tensor: str
    layers: tuple[str, ...]
    ifm_bytes: int
    saved: tuple[float, ...]


def measure_savings(
    loaded: LoadedModel,
    layers: Sequence[ComputeLayer],
    pruned: PrunedModel,
    batches: Iterable[SampleBatch],
    candidates: Sequence[float],
    *,
    open_session: OpenSession,
) -> tuple[TensorSavings, ...]:
    """Each pruned IFM's exact savings at every candidate, from ``analyze``'s probes and
    bandwidth model on ``batches`` (the pruning granularity picks channel or element)."""
    types = infer_tensor_types(loaded.model)
    probed = add_probes(loaded.model, layers, eps=candidates, types=types)
    with model_file(loaded, probed.model) as source:
        session = open_session(source)
        stats = collect_activation_stats(
            session, probed.manifest, layers, (batch.batch for batch in batches)
        )
    resolver = ConstantResolver(loaded)
    weights = count_zero_weights(loaded, eps=(0.0,), resolver=resolver)
    bandwidth = estimate_bandwidth(loaded.model, layers, stats, weights, types=types)
    loads = {load.name: load for load in bandwidth.layers}
    return tuple(
        TensorSavings(
            tensor=tensor.tensor,
            layers=tensor.layers,
            ifm_bytes=sum(loads[name].bytes.ifm for name in tensor.layers),
            saved=tuple(
                sum(loads[name].saved.of(pruned.granularity)[k] for name in tensor.layers)
                for k in range(len(candidates))
            ),
        )
        for tensor in pruned.tensors
    )
