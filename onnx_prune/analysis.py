"""The whole feature-map analysis of one model: load, scan, probe, calibrate, summarise.

This is the library entry point that ``onnx-prune analyze`` and ``onnx-prune zoo`` share. It
returns data and prints nothing; progress is reported through a callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from onnx_prune import fastcount
from onnx_prune.bandwidth import BandwidthReport, estimate_bandwidth
from onnx_prune.calibrate import ActivationStats, collect_activation_stats
from onnx_prune.constants import ConstantResolver
from onnx_prune.epsmap import EpsMap, check_eps_map
from onnx_prune.errors import InputDataError, UnsupportedModelError
from onnx_prune.feeds import DEFAULT_EPS, Feeder, Progress, SampleSource, SessionFactory
from onnx_prune.inputs import SkippedInput
from onnx_prune.layers import ComputeLayer, find_compute_layers
from onnx_prune.load import is_random_weights, load_model
from onnx_prune.probes import DEFAULT_TILE, add_probes
from onnx_prune.runtime import CPU_ONLY, Providers, SessionOptions, model_file, open_session
from onnx_prune.shapes import infer_tensor_types
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
    """
    providers = providers or Providers()
    loaded = load_model(path)
    resolver = ConstantResolver(loaded)
    scan = find_compute_layers(loaded.model, resolver)
    if not scan.layers:
        raise UnsupportedModelError(f"{path}: {scan.no_layer_message()}")
    if eps_map is not None:
        check_eps_map(eps_map, (layer.ifm for layer in scan.layers), model=str(path))
    weights = count_zero_weights(loaded, eps=eps, scan=scan, resolver=resolver)
    types = infer_tensor_types(loaded.model)
    on_host = _use_fast_path(fast, providers)
    probed = add_probes(loaded.model, scan.layers, eps=eps, tile=tile, types=types, on_host=on_host)
    with model_file(loaded, probed.model) as source:
        options = SessionOptions(optimize=optimize, providers=providers, spinning=not on_host)
        session = session_factory(source, options)
        constants = {tensor.name for tensor in loaded.model.graph.initializer}
        feeder = Feeder(calibration, session.inputs(), constants=constants)
        stats = collect_activation_stats(
            session,
            probed.manifest,
            scan.layers,
            feeder.batches(),
            on_batch=_counter(feeder, progress),
        )
    if stats.samples == 0:
        raise InputDataError("no calibration sample could be used: give readable images")
    return Analysis(
        model=str(path),
        opset=loaded.opset,
        random_weights=is_random_weights(loaded.model),
        layers=scan.layers,
        weights=weights,
        activations=stats,
        summary=summarize(scan.layers, stats),
        bandwidth=estimate_bandwidth(
            loaded.model,
            scan.layers,
            stats,
            weights,
            bits=bits,
            types=types,
            is_constant=resolver.is_constant,
        ),
        batch_size=feeder.batch_size,
        preset=None if calibration.tensors else calibration.preset,
        skipped_inputs=tuple(feeder.skipped),
        padded_samples=feeder.padded,
        providers=providers,
    )


def _use_fast_path(fast: bool | None, providers: Providers) -> bool:
    """Whether to count on the host with the compiled kernel; says so once when it cannot.

    Only on the CPU: with another execution provider the in-graph probes keep the maps on the
    device and only small tensors cross to the host.
    """
    if fast is False or providers.accelerated:
        return False
    if fastcount.available():
        return True
    logger.info(
        "numba is not installed: counting in the graph (slower); "
        "pip install 'onnx-prune[fast]' for the one-read counting kernel"
    )
    return False


def _counter(feeder: Feeder, progress: Progress | None) -> Callable[[int], None]:
    """Turns "``n`` more samples done" into the progress callback's (done, total)."""
    done = [0]

    def advance(samples: int) -> None:
        done[0] += samples
        if progress is not None:
            progress(done[0], feeder.total)

    return advance
