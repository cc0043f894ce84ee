"""The calibration run: feed batches through a probed model and keep exact running totals.

Streaming: each batch's probe outputs are reduced to integer totals (int64) at once, so memory
does not grow with the number of samples, except one small record per sample (the paper reports
per-image figures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from onnx_prune import fastcount
from onnx_prune.binding import BoundRunner, counting_pool
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.inputs import Batch
from onnx_prune.layers import ComputeLayer
from onnx_prune.probes import Probe, ProbeManifest
from onnx_prune.runtime import BatchSplitter, Session

logger = logging.getLogger(__name__)

_NOT_FINITE = (
    "a feature map holds NaN or infinite values: check the model and the input preprocessing"
)


@dataclass(frozen=True)
class TensorStats:
    """Totals over all samples for one feature map; lists are indexed like ``eps``.

    ``shape`` is one sample's shape (batch excluded). A channel is one (n, c) plane; for rank-2
    tensors every value is its own channel. ``saved_elements`` = zero channels × plane size;
    ``tile_saved_elements`` = the values in tiles entirely within ε.
    """

    tensor: str
    shape: tuple[int, ...]
    elements: int
    zeros: tuple[int, ...]
    channels: int
    zero_channels: tuple[int, ...]
    saved_elements: tuple[int, ...]
    tiles: int
    zero_tiles: tuple[int, ...]
    tile_saved_elements: tuple[int, ...]

    @property
    def plane(self) -> int:
        """Values per channel."""
        return self.elements // self.channels if self.channels else 0

    def __add__(self, other: TensorStats) -> TensorStats:
        """The totals of two disjoint sets of samples of the same tensor (exact: integers)."""
        if (other.tensor, other.shape) != (self.tensor, self.shape):
            raise ValueError(f"cannot add the totals of {other.tensor} to those of {self.tensor}")
        return TensorStats(
            tensor=self.tensor,
            shape=self.shape,
            elements=self.elements + other.elements,
            zeros=_sum(self.zeros, other.zeros),
            channels=self.channels + other.channels,
            zero_channels=_sum(self.zero_channels, other.zero_channels),
            saved_elements=_sum(self.saved_elements, other.saved_elements),
            tiles=self.tiles + other.tiles,
            zero_tiles=_sum(self.zero_tiles, other.zero_tiles),
            tile_saved_elements=_sum(self.tile_saved_elements, other.tile_saved_elements),
        )


@dataclass(frozen=True)
class SampleStats:
    """One sample's feature-map totals, summed over compute layers (IFM and OFM apart)."""

    name: str
    ifm_elements: int
    ifm_zeros: tuple[int, ...]
    ifm_saved: tuple[int, ...]
    ofm_elements: int
    ofm_zeros: tuple[int, ...]
    ofm_saved: tuple[int, ...]


@dataclass(frozen=True)
class ActivationStats:
    """Every probed tensor's totals, and the per-sample records."""

    eps: tuple[float, ...]
    tile: tuple[int, int]
    samples: int
    tensors: dict[str, TensorStats]
    per_sample: tuple[SampleStats, ...]

    def __add__(self, other: ActivationStats) -> ActivationStats:
        """The totals of this run's samples followed by ``other``'s (the shards of one run, in
        sample order): counts add exactly, per-sample records follow each other."""
        if (other.eps, other.tile, other.tensors.keys()) != (
            self.eps,
            self.tile,
            self.tensors.keys(),
        ):
            raise ValueError("cannot add activation totals measured with other ε, tile or probes")
        return ActivationStats(
            eps=self.eps,
            tile=self.tile,
            samples=self.samples + other.samples,
            tensors={name: stats + other.tensors[name] for name, stats in self.tensors.items()},
            per_sample=self.per_sample + other.per_sample,
        )


def _sum(first: tuple[int, ...], second: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a + b for a, b in zip(first, second, strict=True))


@dataclass
class _Counts:
    """Mutable running totals for one tensor."""

    shape: tuple[int, ...] = ()
    elements: int = 0
    channels: int = 0
    tiles: int = 0
    zeros: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    zero_channels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    saved: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    zero_tiles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tile_saved: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True)
class _BatchCounts:
    """One batch of one tensor: per-sample arrays [n, len(eps)] (zeros, zero channels, saved)
    and batch totals [len(eps)] (zero tiles, tile-saved elements)."""

    shape: tuple[int, ...]
    elements_per_sample: int
    channels: int
    tiles: int
    zeros: np.ndarray
    zero_channels: np.ndarray
    saved: np.ndarray
    zero_tiles: np.ndarray
    tile_saved: np.ndarray


def collect_activation_stats(
    session: Session,
    manifest: ProbeManifest,
    layers: Sequence[ComputeLayer],
    batches: Iterable[Batch],
    *,
    on_batch: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> ActivationStats:
    """Run every batch through ``session`` (a probed model) and total the probe outputs.

    Outputs are written into reused buffers where the session allows it; each batch's maps
    are counted on ``threads`` threads (None: one per core) before the next batch runs.
    """
    eps = np.asarray(manifest.eps, dtype=np.float32)
    totals = {probe.tensor: _Counts() for probe in manifest.probes}
    ifm_uses, ofm_uses = _uses(layers)
    samples: list[SampleStats] = []
    outputs = manifest.outputs()
    splitter = BatchSplitter()
    runner = BoundRunner(session, outputs)
    with counting_pool(threads) as pool:
        for batch in batches:
            arrays = _run_batch(session, runner, splitter, outputs, batch)
            results = dict(zip(outputs, arrays, strict=True))
            counted = _count_batch(pool, manifest, eps, results, batch)
            for tensor, batch_counts in counted.items():
                _accumulate(totals[tensor], batch_counts)
            samples.extend(_samples(batch.names, counted, ifm_uses, ofm_uses))
            if on_batch is not None:
                on_batch(batch.size)
    return ActivationStats(
        eps=manifest.eps,
        tile=manifest.tile,
        samples=len(samples),
        tensors={name: _freeze(name, counts) for name, counts in totals.items()},
        per_sample=tuple(samples),
    )


def _count_batch(
    pool: Executor | None,
    manifest: ProbeManifest,
    eps: np.ndarray,
    results: dict[str, np.ndarray],
    batch: Batch,
) -> dict[str, _BatchCounts]:
    """Every probe's counts of one batch, the probes shared out among ``pool``'s threads."""

    def count(probe: Probe) -> _BatchCounts:
        return _count_probe(probe, results, eps, manifest.tile, batch.size)

    probes = manifest.probes
    counts = pool.map(count, probes) if pool else map(count, probes)
    return {probe.tensor: batch_counts for probe, batch_counts in zip(probes, counts, strict=True)}


def _run_batch(
    session: Session,
    runner: BoundRunner,
    splitter: BatchSplitter,
    outputs: Sequence[str],
    batch: Batch,
) -> list[np.ndarray]:
    """Run one batch, whole or (for models that fix their batch inside) one sample at a time;
    the rows that pad a fixed batch are dropped (probe outputs hold samples on axis 0)."""
    if not outputs:
        return []  # session.run([]) would return every output of the model

    def one_by_one() -> list[np.ndarray]:
        rows = [session.run(outputs, batch.sample(row)) for row in range(batch.rows)]
        return [_join(parts) for parts in zip(*rows, strict=True)]

    arrays = splitter.run(batch.rows, lambda: runner.run(batch), one_by_one)
    if not batch.padding:
        return arrays
    return [array[: batch.size] if array.ndim else array for array in arrays]


def _join(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One output of a batch run one sample at a time (scalars, e.g. run-time scales, stacked)."""
    return np.stack(parts) if parts[0].ndim == 0 else np.concatenate(parts)


def _uses(layers: Sequence[ComputeLayer]) -> tuple[dict[str, int], dict[str, int]]:
    """How many layers load each tensor as IFM, and write it as OFM."""
    ifm: dict[str, int] = {}
    ofm: dict[str, int] = {}
    for layer in layers:
        ifm[layer.ifm] = ifm.get(layer.ifm, 0) + 1
        ofm[layer.ofm] = ofm.get(layer.ofm, 0) + 1
    return ifm, ofm


def _count_probe(
    probe: Probe,
    results: dict[str, np.ndarray],
    eps: np.ndarray,
    tile: tuple[int, int],
    samples: int,
) -> _BatchCounts:
    if probe.kind == "plane":
        counts = [results[name] for name in probe.counts]
        return _count_planes(probe, results[probe.tile_max], counts, eps, tile)
    if probe.block:
        return _count_blocked(probe, results[probe.tile_max], eps, tile)
    parameters = _this_batch(probe, results, samples)
    return _count_values(probe, results[probe.tile_max], eps, tile, samples, parameters)


def _this_batch(
    probe: Probe, results: dict[str, np.ndarray], samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """The scale and zero point of ``probe``'s map for this batch: constants, or the values its
    quantizer computed at run time (one per batch, or one per sample when run one by one)."""
    return (
        _parameter(results, probe.scale_output, probe.scale, samples),
        _parameter(results, probe.zero_point_output, probe.zero_point, samples),
    )


def _parameter(
    results: dict[str, np.ndarray], name: str | None, default: float, samples: int
) -> np.ndarray:
    if name is None:
        return np.asarray(default, np.float64)
    values = np.asarray(results[name], np.float64).reshape(-1)
    if values.size == 1:
        return values.reshape(())
    if values.size != samples:
        raise UnsupportedModelError(
            f"the run-time quantization parameter '{name}' has {values.size} values for "
            f"{samples} samples: only per-tensor quantized feature maps can be counted"
        )
    return values


def _count_planes(
    probe: Probe,
    tile_max: np.ndarray,
    above: list[np.ndarray],
    eps: np.ndarray,
    tile: tuple[int, int],
) -> _BatchCounts:
    """Counts from in-graph reductions: tile maxima of |x| and per-ε shares above ε."""
    _, channels, height, width = probe.shape
    plane = height * width
    samples = tile_max.shape[0]
    sizes = _tile_sizes(height, width, tile)
    channel_max = tile_max.reshape(samples, channels, -1).max(axis=2)
    zero_channels = np.stack(
        [np.count_nonzero(channel_max <= bound, axis=1) for bound in eps], axis=1
    ).astype(np.int64)
    zero_tiles, tile_saved = _zero_tiles(tile_max, eps, sizes)
    zeros = np.stack([plane * channels - _above_counts(a, plane) for a in above], axis=1)
    return _BatchCounts(
        shape=(channels, height, width),
        elements_per_sample=channels * plane,
        channels=channels,
        tiles=channels * sizes.size,
        zeros=zeros,
        zero_channels=zero_channels,
        saved=zero_channels * plane,
        zero_tiles=zero_tiles,
        tile_saved=tile_saved,
    )


def _zero_tiles(
    tile_max: np.ndarray, eps: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Batch totals per ε: tiles entirely within ε, and the values in them."""
    uniform = int(sizes.min()) == int(sizes.max())
    counts: list[int] = []
    saved: list[int] = []
    for bound in eps:
        within = tile_max <= bound
        counts.append(int(np.count_nonzero(within)))
        if uniform:
            saved.append(counts[-1] * int(sizes[0, 0]))
        else:
            saved.append(int((np.count_nonzero(within, axis=(0, 1)) * sizes).sum()))
    return np.asarray(counts, np.int64), np.asarray(saved, np.int64)


def _above_counts(share: np.ndarray, plane: int) -> np.ndarray:
    """Per sample, the values above ε: the planes' shares times the plane size, rounded."""
    if np.isnan(share).any():
        raise UnsupportedModelError(_NOT_FINITE)
    per_plane = np.rint(share.reshape(share.shape[0], -1).astype(np.float64) * plane)
    counts: np.ndarray = per_plane.astype(np.int64).sum(axis=1)
    return counts


def _tile_sizes(height: int, width: int, tile: tuple[int, int]) -> np.ndarray:
    """Values in each tile of an H×W plane split into tiles (edge tiles are smaller)."""
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    rows = [min(tile_h, height - start) for start in range(0, height, tile_h)]
    cols = [min(tile_w, width - start) for start in range(0, width, tile_w)]
    sizes: np.ndarray = np.outer(rows, cols).astype(np.int64)
    return sizes


def _count_values(
    probe: Probe,
    values: np.ndarray,
    eps: np.ndarray,
    tile: tuple[int, int],
    samples: int,
    parameters: tuple[np.ndarray, np.ndarray] | None = None,
) -> _BatchCounts:
    """Counts on the host for a tensor that left the session whole.

    Rank-4 maps get tile counts too; for other ranks a tile is a whole channel. ``parameters``
    (scale, zero point; scalars or one per sample) dequantize an integer map. Float32 maps go
    through the compiled kernel when it is installed, others through numpy.
    """
    if values.ndim < 2 or values.shape[0] != samples:
        raise UnsupportedModelError(
            f"feature map '{probe.tensor}' has shape {list(values.shape)}: its first axis is not "
            f"the batch of {samples} samples (e.g. a Gemm with transA=1), so it cannot be counted"
        )
    if values.dtype == np.float32 and values.size and fastcount.available():
        return _count_with_kernel(values, eps, tile)
    if parameters is None:
        parameters = (np.asarray(probe.scale), np.asarray(probe.zero_point))
    magnitude, bounds = _magnitude(values, eps, parameters)
    if not np.isfinite(magnitude).all():
        raise UnsupportedModelError(_NOT_FINITE)
    plane = int(np.prod(values.shape[2:], dtype=np.int64))
    planes = magnitude.reshape(samples, values.shape[1], plane)  # -1 cannot be told from 0 values
    zeros = np.stack([np.count_nonzero(planes <= b, axis=(1, 2)) for b in bounds], axis=1)
    channel_max = planes.max(axis=2) if plane else np.zeros(planes.shape[:2], planes.dtype)
    zero_channels = np.stack([np.count_nonzero(channel_max <= b, axis=1) for b in bounds], axis=1)
    if magnitude.ndim == 4 and plane:
        sizes = _tile_sizes(magnitude.shape[2], magnitude.shape[3], tile)
        zero_tiles, tile_saved = _zero_tiles(_host_tile_max(magnitude, tile), bounds, sizes)
    else:
        zero_tiles, tile_saved = zero_channels.sum(axis=0), zero_channels.sum(axis=0) * plane
    return _map_counts(
        values.shape,
        tile,
        zeros.astype(np.int64),
        zero_channels.astype(np.int64),
        zero_tiles,
        tile_saved,
    )


def _count_with_kernel(values: np.ndarray, eps: np.ndarray, tile: tuple[int, int]) -> _BatchCounts:
    """The same counts as the numpy path, from one read of the map (see fastcount)."""
    counts = fastcount.count_map(values, eps, tile if values.ndim == 4 else None)
    return _kernel_counts(counts, values.shape, tile)


def _count_blocked(
    probe: Probe, values: np.ndarray, eps: np.ndarray, tile: tuple[int, int]
) -> _BatchCounts:
    """The same counts from a map in onnxruntime's blocked layout (see nchwc)."""
    padded = -(-probe.channels // probe.block) * probe.block
    if (
        values.ndim != 4
        or values.shape[1] != padded
        or values.dtype != np.float32
        or not values.flags.c_contiguous
        or not values.flags.writeable
    ):
        raise UnsupportedModelError(
            f"feature map '{probe.tensor}' came out of onnxruntime as {values.dtype} "
            f"{list(values.shape)}, not in its blocked layout of {padded} channels: "
            "run with --no-optimize to count the graph as written"
        )
    counts = fastcount.count_blocked(values, probe.block, probe.channels, eps, tile)
    samples, _, height, width = values.shape
    return _kernel_counts(counts, (samples, probe.channels, height, width), tile)


def _kernel_counts(
    counts: fastcount.MapCounts, batch_shape: tuple[int, ...], tile: tuple[int, int]
) -> _BatchCounts:
    if not counts.finite:
        raise UnsupportedModelError(_NOT_FINITE)
    return _map_counts(
        batch_shape,
        tile,
        counts.zeros,
        counts.zero_channels,
        counts.zero_tiles,
        counts.tile_saved,
    )


def _map_counts(
    batch_shape: tuple[int, ...],
    tile: tuple[int, int],
    zeros: np.ndarray,
    zero_channels: np.ndarray,
    zero_tiles: np.ndarray,
    tile_saved: np.ndarray,
) -> _BatchCounts:
    """A whole map's batch counts (int64), with the sizes its shape [n, C, ...] fixes: a rank-4
    map's channels split into tiles, any other rank's channels one tile each."""
    channels = batch_shape[1]
    plane = int(np.prod(batch_shape[2:], dtype=np.int64))
    if len(batch_shape) == 4 and plane:
        tiles = channels * _tile_sizes(batch_shape[2], batch_shape[3], tile).size
    else:
        tiles = channels
    return _BatchCounts(
        shape=tuple(int(d) for d in batch_shape[1:]),
        elements_per_sample=channels * plane,
        channels=channels,
        tiles=tiles,
        zeros=zeros,
        zero_channels=zero_channels,
        saved=zero_channels * plane,
        zero_tiles=zero_tiles,
        tile_saved=tile_saved,
    )


def _magnitude(
    values: np.ndarray, eps: np.ndarray, parameters: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """|x| and the ε bounds to compare it with, in float32 (float64 for float64 maps).

    A quantized (integer) map is dequantized first, so its zero is its zero point: exactly zero
    where ``q`` equals it.
    """
    if values.dtype.kind in "iu":
        scale, zero_point = (p.reshape(p.shape + (1,) * (values.ndim - 1)) for p in parameters)
        real = (values.astype(np.float64) - zero_point) * scale
        return np.abs(real).astype(np.float32), eps
    if values.dtype == np.float64:
        return np.abs(values), eps.astype(np.float64)
    return np.abs(values.astype(np.float32)), eps


def _host_tile_max(magnitude: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Tile maxima of a non-negative [n, C, H, W] map (ragged edges padded with zeros)."""
    samples, channels, height, width = magnitude.shape
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    padded = np.pad(magnitude, ((0, 0), (0, 0), (0, -height % tile_h), (0, -width % tile_w)))
    rows, cols = padded.shape[2] // tile_h, padded.shape[3] // tile_w
    blocks = padded.reshape(samples, channels, rows, tile_h, cols, tile_w)
    maxima: np.ndarray = blocks.max(axis=(3, 5))
    return maxima


def _accumulate(totals: _Counts, batch: _BatchCounts) -> None:
    samples = batch.zeros.shape[0]
    if not totals.shape:
        totals.shape = batch.shape
        width = batch.zeros.shape[1]
        for name in ("zeros", "zero_channels", "saved", "zero_tiles", "tile_saved"):
            setattr(totals, name, np.zeros(width, np.int64))
    totals.elements += batch.elements_per_sample * samples
    totals.channels += batch.channels * samples
    totals.tiles += batch.tiles * samples
    totals.zeros += batch.zeros.sum(axis=0)
    totals.zero_channels += batch.zero_channels.sum(axis=0)
    totals.saved += batch.saved.sum(axis=0)
    totals.zero_tiles += batch.zero_tiles
    totals.tile_saved += batch.tile_saved


def _samples(
    names: Sequence[str],
    counted: dict[str, _BatchCounts],
    ifm_uses: dict[str, int],
    ofm_uses: dict[str, int],
) -> list[SampleStats]:
    ifm = _weighted(counted, ifm_uses)
    ofm = _weighted(counted, ofm_uses)
    return [
        SampleStats(
            name=name,
            ifm_elements=int(ifm[0]),
            ifm_zeros=_ints(ifm[1][index]),
            ifm_saved=_ints(ifm[2][index]),
            ofm_elements=int(ofm[0]),
            ofm_zeros=_ints(ofm[1][index]),
            ofm_saved=_ints(ofm[2][index]),
        )
        for index, name in enumerate(names)
    ]


def _weighted(
    counted: dict[str, _BatchCounts], uses: dict[str, int]
) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-sample sums over layers: elements, zeros [n, k] and saved elements [n, k]."""
    elements = sum(counted[t].elements_per_sample * n for t, n in uses.items())
    zeros = sum(counted[t].zeros * n for t, n in uses.items())
    saved = sum(counted[t].saved * n for t, n in uses.items())
    return elements, np.asarray(zeros), np.asarray(saved)


def _ints(values: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _freeze(name: str, counts: _Counts) -> TensorStats:
    return TensorStats(
        tensor=name,
        shape=counts.shape,
        elements=counts.elements,
        zeros=_ints(counts.zeros),
        channels=counts.channels,
        zero_channels=_ints(counts.zero_channels),
        saved_elements=_ints(counts.saved),
        tiles=counts.tiles,
        zero_tiles=_ints(counts.zero_tiles),
        tile_saved_elements=_ints(counts.tile_saved),
    )
