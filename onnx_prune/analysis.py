"""The whole feature-map analysis of one model: load, scan, probe, calibrate, summarise.

This is the library entry point that ``onnx-prune analyze`` and ``onnx-prune zoo`` share. It
returns data and prints nothing; progress is reported through a callback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from onnx_prune.bandwidth import BandwidthReport, estimate_bandwidth
from onnx_prune.calibrate import ActivationStats
from onnx_prune.epsmap import EpsMap, check_eps_map
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import DEFAULT_EPS, Progress, SampleSource, SessionFactory
from onnx_prune.inputs import SkippedInput
from onnx_prune.layers import ComputeLayer
from onnx_prune.load import is_random_weights
from onnx_prune.probes import DEFAULT_TILE
from onnx_prune.runtime import CPU_ONLY, Providers, open_session
from onnx_prune.shards import CountOptions, PartialCounts, Prepared, count_in_one_piece, prepare
from onnx_prune.summary import Summary, summarize
from onnx_prune.weights import WeightReport, count_zero_weights

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_EPS", "Analysis", "Progress", "SampleSource", "SessionFactory", "analyze_model"]


@dataclass(frozen=True)
class Analysis:
    """Everything measured on one model."""

    model: str
    opset: int
    random_weights: bool
    layers: tuple[ComputeLayer, ...]
    weights: WeightReport
    activations: ActivationStats
    summary: Summary
    bandwidth: BandwidthReport
    batch_size: int
    preset: str | None
    skipped_inputs: tuple[SkippedInput, ...] = field(default=())
    providers: Providers = CPU_ONLY
    padded_samples: int = 0


def analyze_model(
    path: Path,
    calibration: SampleSource,
    *,
    eps: Sequence[float] = DEFAULT_EPS,
    tile: tuple[int, int] = DEFAULT_TILE,
    bits: int | None = None,
    optimize: bool = True,
    providers: Providers | None = None,
    progress: Progress | None = None,
    session_factory: SessionFactory = open_session,
    eps_map: EpsMap | None = None,
    fast: bool | None = None,
    runner: ShardRunner | None = None,
    threads: int | None = None,
) -> Analysis:
    """Measure weight and feature-map sparsity, bandwidth and pruned loads of ``path``.

    ``bits`` counts every tensor at that width (16 reproduces the paper); None: own dtypes.
    ``optimize`` keeps onnxruntime's default graph optimizations (fused ops round a little
    differently from the unfused graph; without them plain inference is far slower).
    ``providers``: the onnxruntime execution providers (default: the CPU).
    ``eps_map`` is checked against the model's compute layers before anything runs (its ε must
    be among ``eps``: see ``epsmap.merged_eps``).
    ``fast``: count on the host with the compiled kernel (None: when numba is installed and
    the providers are the CPU's); False: count in the graph (the portable path).
    ``runner`` counts the samples in shards elsewhere (``distributed.DaskRunner``); None: here,
    in one piece. Either way the same shard code counts and the totals are identical.
    ``threads``: onnxruntime's intra-op threads and the counting threads (None: one per core).
    """
    options = CountOptions(
        eps=tuple(float(e) for e in eps),
        tile=tile,
        optimize=optimize,
        providers=providers or Providers(),
        fast=fast,
        threads=threads,
    )
    # onnxruntime's own optimized copy only for its own sessions, counted here
    blocked = runner is None and session_factory is open_session
    prepared = prepare(path, options, blocked=blocked)
    if eps_map is not None:
        check_eps_map(eps_map, (layer.ifm for layer in prepared.scan.layers), model=str(path))
    if fast is not False and not options.providers.accelerated and not prepared.on_host:
        logger.info(
            "numba is not installed: counting in the graph (slower); "
            "pip install 'onnx-prune[fast]' for the one-read counting kernel"
        )
    weights = count_zero_weights(
        prepared.loaded, eps=eps, scan=prepared.scan, resolver=prepared.resolver
    )
    if runner is None:
        partial = count_in_one_piece(
            prepared,
            calibration,
            options,
            session_factory=session_factory,
            progress=progress,
        )
    else:
        partial = runner.count(path, prepared, calibration, options, progress)
    return _analysis(path, prepared, weights, partial, calibration, options, bits)


def _analysis(
    path: Path,
    prepared: Prepared,
    weights: WeightReport,
    partial: PartialCounts,
    calibration: SampleSource,
    options: CountOptions,
    bits: int | None,
) -> Analysis:
    stats = partial.stats
    if stats.samples == 0:
        raise InputDataError("no calibration sample could be used: give readable images")
    layers = prepared.scan.layers
    return Analysis(
        model=str(path),
        opset=prepared.loaded.opset,
        random_weights=is_random_weights(prepared.loaded.model),
        layers=layers,
        weights=weights,
        activations=stats,
        summary=summarize(layers, stats),
        bandwidth=estimate_bandwidth(
            prepared.loaded.model,
            layers,
            stats,
            weights,
            bits=bits,
            types=prepared.types,
            is_constant=prepared.resolver.is_constant,
        ),
        batch_size=partial.batch_size,
        preset=None if calibration.tensors else calibration.preset,
        skipped_inputs=partial.skipped,
        padded_samples=partial.padded,
        providers=options.providers,
    )


class ShardRunner(Protocol):
    """Counts a model's samples in shards somewhere else and merges them (``+``, in order)."""

    def count(
        self,
        path: Path,
        prepared: Prepared,
        source: SampleSource,
        options: CountOptions,
        progress: Progress | None,
    ) -> PartialCounts:
        """The merged partial totals of every sample of ``source``."""
        ...
