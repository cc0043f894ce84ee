"""The whole feature-map analysis of one model: load, scan, probe, calibrate, summarise.

This is the library entry point that ``onnx-prune analyze`` and ``onnx-prune zoo`` share. It
returns data and prints nothing; progress is reported through a callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from onnx_prune.bandwidth import BandwidthReport, estimate_bandwidth
from onnx_prune.calibrate import ActivationStats, collect_activation_stats
from onnx_prune.constants import ConstantResolver
from onnx_prune.epsmap import EpsMap, check_eps_map
from onnx_prune.errors import InputDataError, UnsupportedModelError
from onnx_prune.inputs import (
    Batch,
    SkippedInput,
    check_input_shape,
    find_images,
    get_preset,
    image_size_for,
    iter_image_batches,
    iter_tensor_batches,
    open_tensor_inputs,
)
from onnx_prune.layers import ComputeLayer, find_compute_layers
from onnx_prune.load import LoadedModel, is_random_weights, load_model
from onnx_prune.probes import DEFAULT_TILE, add_probes
from onnx_prune.runtime import (
    CPU_ONLY,
    ModelSource,
    Providers,
    Session,
    SessionOptions,
    TensorSpec,
    fixed_batch,
    model_file,
    open_session,
)
from onnx_prune.shapes import infer_tensor_types
from onnx_prune.summary import Summary, summarize
from onnx_prune.weights import WeightReport, count_zero_weights

logger = logging.getLogger(__name__)

DEFAULT_EPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)

Progress = Callable[[int, int], None]
SessionFactory = Callable[[ModelSource, SessionOptions], Session]


@dataclass(frozen=True)
class Calibration:
    """Where calibration samples come from: image files/folders, or a .npy/.npz of tensors."""

    images: tuple[Path, ...] = ()
    tensors: Path | None = None
    preset: str = "imagenet"
    size: tuple[int, int] | None = None
    batch_size: int = 8
    limit: int | None = None
    strict: bool = False


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


def analyze_model(
    path: Path,
    calibration: Calibration,
    *,
    eps: Sequence[float] = DEFAULT_EPS,
    tile: tuple[int, int] = DEFAULT_TILE,
    bits: int | None = None,
    optimize: bool = True,
    providers: Providers | None = None,
    progress: Progress | None = None,
    session_factory: SessionFactory = open_session,
    eps_map: EpsMap | None = None,
) -> Analysis:
    """Measure weight and feature-map sparsity, bandwidth and pruned loads of ``path``.

    ``bits`` counts every tensor at that width (16 reproduces the paper); None: own dtypes.
    ``optimize`` keeps onnxruntime's default graph optimizations (fused ops round a little
    differently from the unfused graph; without them plain inference is far slower).
    ``providers``: the onnxruntime execution providers (default: the CPU).
    ``eps_map`` is checked against the model's compute layers before anything runs (its ε must
    be among ``eps``: see ``epsmap.merged_eps``).
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
    probed = add_probes(loaded.model, scan.layers, eps=eps, tile=tile, types=types)
    with model_file(loaded, probed.model) as source:
        session = session_factory(source, SessionOptions(optimize=optimize, providers=providers))
        feeds = _Feeds(loaded, session.inputs(), calibration)
        stats = collect_activation_stats(
            session, probed.manifest, scan.layers, feeds.batches(progress), on_batch=feeds.advance
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
        batch_size=feeds.batch_size,
        preset=None if calibration.tensors else calibration.preset,
        skipped_inputs=tuple(feeds.skipped),
        providers=providers,
    )


class _Feeds:
    """Turns the calibration source into batches that fit the model's inputs."""

    def __init__(
        self, loaded: LoadedModel, specs: Sequence[TensorSpec], calibration: Calibration
    ) -> None:
        initializers = {tensor.name for tensor in loaded.model.graph.initializer}
        self.specs = [spec for spec in specs if spec.name not in initializers]
        self.calibration = calibration
        self.batch_size = _batch_size(self.specs, calibration.batch_size)
        self.skipped: list[SkippedInput] = []
        self.done = 0
        self.total = 0
        self._progress: Progress | None = None

    def batches(self, progress: Progress | None) -> Iterator[Batch]:
        """Batches checked against the model's input shapes."""
        self._progress = progress
        source = self._source()
        self._check_whole_batches()
        for batch in source:
            self.skipped.extend(batch.skipped)
            for spec in self.specs:
                array = batch.arrays[spec.name]
                check_input_shape(spec.name, spec.shape, tuple(array.shape))
            yield batch

    def advance(self, samples: int) -> None:
        """Count ``samples`` more as done and report progress."""
        self.done += samples
        if self._progress is not None:
            self._progress(self.done, self.total)

    def _source(self) -> Iterator[Batch]:
        calibration = self.calibration
        if calibration.tensors is not None:
            tensors = open_tensor_inputs(calibration.tensors, [s.name for s in self.specs])
            self.total = min(tensors.count, calibration.limit or tensors.count)
            return iter_tensor_batches(tensors, self.batch_size, limit=calibration.limit)
        spec = self._image_input()
        files = find_images(list(calibration.images))
        self.total = min(len(files), calibration.limit or len(files))
        size = image_size_for(spec.shape, calibration.size, name=spec.name)
        preset = get_preset(calibration.preset)
        return iter_image_batches(
            files,
            preset,
            size,
            self.batch_size,
            input_name=spec.name,
            strict=calibration.strict,
            limit=calibration.limit,
        )

    def _check_whole_batches(self) -> None:
        """A model that fixes its batch above 1 can only take whole batches."""
        fixed = fixed_batch(self.specs)
        if fixed is not None and fixed > 1 and self.total % fixed:
            raise InputDataError(
                f"the model fixes its batch at {fixed} and {self.total} samples leave a last "
                f"batch of {self.total % fixed}: give --limit {self.total - self.total % fixed} "
                f"(a multiple of {fixed})"
            )

    def _image_input(self) -> TensorSpec:
        if len(self.specs) != 1:
            described = ", ".join(f"'{s.name}' {list(s.shape)}" for s in self.specs)
            raise InputDataError(
                f"the model has {len(self.specs)} inputs ({described}): images can feed only "
                "one; give --inputs FILE.npz with one array per input name"
            )
        return self.specs[0]


def _batch_size(specs: Sequence[TensorSpec], requested: int) -> int:
    """The requested batch size, or the batch the model fixes (e.g. 1) in its first input dim."""
    fixed = fixed_batch(specs)
    if fixed is None:
        return requested
    if fixed != requested:
        logger.info("the model fixes its batch at %d; using batches of %d", fixed, fixed)
    return fixed
