"""The shard function: one model, one range of samples, the analysis options → exact partial totals.

``analyze_model`` counts every sample through ``count_samples``, in one piece or in shards. A
shard is a contiguous range of sample numbers whose boundaries are multiples of the batch size,
so every batch is the very batch the one-piece run feeds; its result is a ``PartialCounts``
(integer counts and per-sample records) and partial results merge exactly with ``+`` in sample
order. Whatever the split, the totals are bit-identical.

``count_shard`` is what a worker runs (Dask here; any engine that can call a function, e.g.
Ray): it keeps one probed model and session per model and options in a per-process cache (this
module's ``_SESSIONS``), so a worker builds each model's session once. Samples travel as paths
and index ranges (a ``SampleSource``), never as arrays; only counts come back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from onnx_prune import fastcount, nchwc
from onnx_prune.calibrate import ActivationStats, collect_activation_stats
from onnx_prune.constants import ConstantResolver
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.feeds import Feeder, Progress, SampleSource, SessionFactory
from onnx_prune.inputs import SkippedInput
from onnx_prune.layers import LayerScan, find_compute_layers
from onnx_prune.load import LoadedModel, load_model
from onnx_prune.probes import ProbedModel, add_probes
from onnx_prune.runtime import (
    CPU_ONLY,
    Providers,
    Session,
    SessionOptions,
    TensorSpec,
    model_file,
    open_session,
)
from onnx_prune.shapes import TensorType, infer_tensor_types

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CountOptions:
    """How samples are counted: ε, tile, graph optimizations, providers, the counting path
    (``fast`` None: the compiled kernel when it can be used) and onnxruntime's threads."""

    eps: tuple[float, ...]
    tile: tuple[int, int]
    optimize: bool = True
    providers: Providers = CPU_ONLY
    fast: bool | None = None
    threads: int | None = None


@dataclass(frozen=True)
class PartialCounts:
    """The exact totals of a range of samples; ``a + b`` is the totals of a's samples then b's."""

    stats: ActivationStats
    skipped: tuple[SkippedInput, ...]
    padded: int
    batch_size: int

    def __add__(self, other: PartialCounts) -> PartialCounts:
        """Merge the totals of the next range (exact: integer sums, records in order)."""
        return PartialCounts(
            stats=self.stats + other.stats,
            skipped=self.skipped + other.skipped,
            padded=self.padded + other.padded,
            batch_size=max(self.batch_size, other.batch_size),
        )


@dataclass(frozen=True)
class Prepared:
    """A model made ready to count: its layers, tensor types and probed copy."""

    loaded: LoadedModel
    resolver: ConstantResolver
    scan: LayerScan
    types: dict[str, TensorType]
    probed: ProbedModel
    on_host: bool
    as_written: ProbedModel | None = None

    @property
    def optimized(self) -> bool:
        """Whether ``probed`` is onnxruntime's optimized copy of the probed model (see nchwc);
        ``as_written`` then keeps the probed model itself, to fall back on."""
        return self.as_written is not None

    def session_options(self, options: CountOptions) -> SessionOptions:
        """The session options of the probed model for ``options`` (a probed model that
        onnxruntime has already optimized for this machine is not optimized again)."""
        return SessionOptions(
            optimize=options.optimize and not self.optimized,
            providers=options.providers,
            spinning=not self.on_host,
            threads=options.threads,
        )


def prepare(path: Path, options: CountOptions, *, blocked: bool = True) -> Prepared:
    """Load ``path``, find its compute layers and add the probes that count them; ``blocked``
    False: never onnxruntime's optimized copy with maps taken out blocked (for a session
    factory that is not onnxruntime's, or a prepared model used only to plan shards)."""
    loaded = load_model(path)
    resolver = ConstantResolver(loaded)
    scan = find_compute_layers(loaded.model, resolver)
    if not scan.layers:
        raise UnsupportedModelError(f"{path}: {scan.no_layer_message()}")
    types = infer_tensor_types(loaded.model)
    on_host = use_fast_path(options.fast, options.providers)
    probed = add_probes(
        loaded.model, scan.layers, eps=options.eps, tile=options.tile, types=types, on_host=on_host
    )
    copy = _blocked(loaded, probed) if blocked and on_host and options.optimize else None
    if copy is not None:
        return Prepared(loaded, resolver, scan, types, copy, on_host, as_written=probed)
    return Prepared(loaded, resolver, scan, types, probed, on_host)


def _blocked(loaded: LoadedModel, probed: ProbedModel) -> ProbedModel | None:
    """The probed model with its maps taken out in onnxruntime's blocked layout, where that
    applies (see nchwc); not for models with external data (the optimized copy would hold
    their weights inline) or models onnxruntime cannot optimize (their run will tell)."""
    if loaded.external:
        return None
    try:
        with model_file(loaded, probed.model) as source:
            own = [output.name for output in loaded.model.graph.output]
            return nchwc.take_out_blocked(source, probed, keep=own)
    except UnsupportedModelError as error:
        logger.debug("maps not taken out blocked: %s", error)
        return None


def use_fast_path(fast: bool | None, providers: Providers) -> bool:
    """Whether to count on the host with the compiled kernel (only on the CPU: with another
    provider the in-graph probes keep the maps on the device)."""
    if fast is False or providers.accelerated:
        return False
    return fastcount.available()


def count_samples(
    prepared: Prepared,
    session: Session,
    source: SampleSource,
    progress: Progress | None = None,
    *,
    threads: int | None = None,
) -> PartialCounts:
    """Run the samples of ``source`` (its whole range) through the probed session and count
    (on ``threads`` threads, None: every core); ``progress`` hears (samples done, samples in the
    range) after every batch."""
    feeder = Feeder(source, session.inputs(), constants=_constants(prepared.loaded))
    stats = collect_activation_stats(
        session,
        prepared.probed.manifest,
        prepared.scan.layers,
        feeder.batches(),
        on_batch=_counter(feeder, progress),
        threads=threads,
    )
    return PartialCounts(stats, tuple(feeder.skipped), feeder.padded, feeder.batch_size)


def count_in_one_piece(
    prepared: Prepared,
    source: SampleSource,
    options: CountOptions,
    *,
    session_factory: SessionFactory = open_session,
    progress: Progress | None = None,
) -> PartialCounts:
    """The single-process path: one session, every sample, one partial result."""
    prepared, session = open_probed(prepared, options, session_factory)
    return count_samples(prepared, session, source, progress, threads=options.threads)


def open_probed(
    prepared: Prepared, options: CountOptions, session_factory: SessionFactory = open_session
) -> tuple[Prepared, Session]:
    """A session on the probed model; when onnxruntime cannot open its own optimized copy, one
    on the probed model as written (and the prepared model that goes with it)."""
    try:
        with model_file(prepared.loaded, prepared.probed.model) as model_source:
            return prepared, session_factory(model_source, prepared.session_options(options))
    except UnsupportedModelError as error:
        if prepared.as_written is None:
            raise
        logger.debug("the optimized probed model does not open (%s): using it as written", error)
    prepared = replace(prepared, probed=prepared.as_written, as_written=None)
    with model_file(prepared.loaded, prepared.probed.model) as model_source:
        return prepared, session_factory(model_source, prepared.session_options(options))


# The shard function and its per-process cache

_SESSIONS: dict[tuple[str, int, int, CountOptions], tuple[Prepared, Session]] = {}


def count_shard(model: Path, source: SampleSource, options: CountOptions) -> PartialCounts:
    """THE shard function: the exact partial totals of ``model`` over ``source``'s sample range.

    Each process keeps one prepared model and session per (file, options), so a worker that
    counts many shards of a model builds its session once.
    """
    prepared, session = _cached_session(model, options)
    return count_samples(prepared, session, source, threads=options.threads)


def _cached_session(model: Path, options: CountOptions) -> tuple[Prepared, Session]:
    stat = model.stat()
    key = (str(model.resolve()), stat.st_mtime_ns, stat.st_size, options)
    if key not in _SESSIONS:
        _SESSIONS[key] = open_probed(prepare(model, options), options)
    return _SESSIONS[key]


# Planning shards


@dataclass(frozen=True)
class Shard:
    """One task: samples ``[start, stop)`` of the run (numbers within the source's range)."""

    index: int
    start: int
    stop: int

    @property
    def samples(self) -> int:
        """How many samples the shard holds."""
        return self.stop - self.start


def plan_shards(total: int, batch_size: int, count: int) -> tuple[Shard, ...]:
    """``total`` samples in at most ``count`` contiguous shards of whole batches, as even as
    whole batches allow (the first shards get the extra batch); deterministic."""
    batches = math.ceil(total / batch_size)
    count = max(1, min(count, batches))
    base, extra = divmod(batches, count)
    shards: list[Shard] = []
    start = 0
    for index in range(count):
        stop = min(total, start + (base + (index < extra)) * batch_size)
        shards.append(Shard(index, start, stop))
        start = stop
    return tuple(shards)


def shard_source(source: SampleSource, shard: Shard) -> SampleSource:
    """``source`` restricted to one shard (sample numbers count from the source's start)."""
    return source.sample_range(source.start + shard.start, source.start + shard.stop)


def plan_run(prepared: Prepared, source: SampleSource) -> tuple[int, int]:
    """The samples in the source's range and the batch size, as the workers' feeders will see
    them (read from the model's graph: no session needed)."""
    feeder = Feeder(source, graph_input_specs(prepared.loaded.model), constants=())
    return feeder.total, feeder.batch_size


def graph_input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The model's real inputs (initializers left out) as ``TensorSpec``s, read from the graph."""
    constants = {tensor.name for tensor in model.graph.initializer}
    return [_spec(value) for value in model.graph.input if value.name not in constants]


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type or 1))
    dims: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return TensorSpec(value.name, dtype, tuple(dims))


def _counter(feeder: Feeder, progress: Progress | None) -> Callable[[int], None] | None:
    """Turns "``n`` more samples done" into the progress callback's (done, total)."""
    if progress is None:
        return None
    done = [0]

    def advance(samples: int) -> None:
        done[0] += samples
        progress(done[0], feeder.total)

    return advance


def _constants(loaded: LoadedModel) -> set[str]:
    return {tensor.name for tensor in loaded.model.graph.initializer}


def merge(parts: Sequence[PartialCounts]) -> PartialCounts:
    """The partial results of consecutive shards, added in sample order."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
