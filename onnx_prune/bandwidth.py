"""The bandwidth model and the dynamic-pruning simulation (DESIGN.md §2 "Load", PAPER.md).

Pure: it reads the graph, the weight scan and the calibration totals, and runs nothing. Every
figure is per sample (batch 1), per compute layer, then summed over the network.

- **Bytes** of a layer: its weights (+ bias) at their stored dtype (a quantized int8 weight is one
  byte per value), the IFM it loads and the OFM it writes at the width the deployed kernel moves:
  their graph dtype, except in quantized models, where a QDQ pair is one integer kernel (an IFM
  written by ``DequantizeLinear`` is counted at the width of its integer input, an OFM read by
  ``QuantizeLinear`` at the width of its integer output) and a ``QLinear*``/``QGemm``/
  ``*Integer`` op reads and writes its IFM's integer width (int8/uint8: one byte). With ``bits``
  every tensor is counted at ``bits`` per value instead (``bits=16`` is the paper's accounting).
  A tensor occupies whole bytes: ``ceil(values × bits / 8)``, so byte counts are integers.
- **Saved bytes**: the IFM bytes that dynamic pruning would not load, as an exact mean per sample
  (total values saved × bits / 8 / samples, a float; the JSON rounds it to whole bytes), at three
  granularities for every ε: ``channel`` (planes entirely within ε: the paper's scheme),
  ``tile`` (the paper's Algorithm 1: tiles entirely within ε, at the tile size probed) and
  ``element`` (every value within ε: the ideal of a zero-skipping DMA). Only IFM loads shrink:
  weights are static and the OFM is written whole.
- **MACs**: output values × reduction length (Conv: C_in/group × kernel; ConvTranspose: input
  values × C_out/group × kernel; Gemm/MatMul: M×K×N). Every input channel of a convolution (any
  group count, depthwise included) and every input feature of a Gemm/MatMul feeds the same number
  of MACs, so channel pruning skips MACs × (saved IFM values / IFM values); border effects of
  padding are ignored.
- **Kind**: ``depthwise`` (a grouped conv with one input channel per group), ``pointwise`` (a
  1×1 kernel), ``conv`` (any other convolution), ``fc`` (Gemm/MatMul).

Totals sum the layers whose every byte count is known. A layer whose weight could not be read,
heavy ops without a constant weight and every other op that moves data (pooling, residual adds,
concatenation, ...) are listed in ``not_analysed``, never counted as zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto

from onnx_prune.calibrate import ActivationStats, TensorStats
from onnx_prune.constants import ConstantResolver
from onnx_prune.layers import ComputeLayer, NotAnalysed, node_name
from onnx_prune.load import LoadedModel
from onnx_prune.quantization import SIGNATURES
from onnx_prune.shapes import TensorType, infer_tensor_types
from onnx_prune.weights import LayerWeights, TensorSparsity, WeightReport

Kind = Literal["depthwise", "pointwise", "conv", "fc"]
KINDS: tuple[Kind, ...] = ("depthwise", "pointwise", "conv", "fc")
Granularity = Literal["channel", "tile", "element"]
GRANULARITIES: tuple[Granularity, ...] = ("channel", "tile", "element")

ASSUMED_BITS = 32
"""The width assumed for a feature map whose dtype the graph does not declare (float32)."""

_FC_OPS = frozenset({"Gemm", "MatMul", "QLinearMatMul", "QGemm", "MatMulInteger"})
_CONV_OPS = frozenset({"Conv", "QLinearConv", "ConvInteger"})
_FREE_OPS = frozenset(
    {
        "Constant", "ConstantOfShape", "Identity", "Shape", "Size", "Reshape", "Flatten",
        "Squeeze", "Unsqueeze", "Dropout", "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip
"""Ops that move no data of their own: a QDQ pair is part of the integer kernel it wraps."""
_BITS_BY_NAME = {
    "FLOAT": 32, "DOUBLE": 64, "FLOAT16": 16, "BFLOAT16": 16, "BOOL": 8,
    "INT8": 8, "UINT8": 8, "INT16": 16, "UINT16": 16, "INT32": 32, "UINT32": 32,
    "INT64": 64, "UINT64": 64, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8,
    "FLOAT8E5M2FNUZ": 8, "FLOAT8E8M0": 8, "INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4,
    "INT2": 2, "UINT2": 2,
}  # fmt: skip
_ELEMENT_BITS = {
    int(getattr(TensorProto, name)): bits
    for name, bits in _BITS_BY_NAME.items()
    if hasattr(TensorProto, name)
}
_NOT_COMPUTE = "not a compute layer: the bandwidth model does not count its loads"
_NO_WEIGHT = "its weight is not in the weight scan: weight bytes and MACs unknown"


@dataclass(frozen=True)
class LoadBytes:
    """What one layer moves per sample: weights (None when unknown), IFM read, OFM written."""

    weights: int | None
    ifm: int
    ofm: int

    @property
    def load(self) -> int | None:
        """Weights + IFM + OFM, or None when the weight bytes are unknown."""
        return None if self.weights is None else self.weights + self.ifm + self.ofm


@dataclass(frozen=True)
class SavedBytes:
    """IFM bytes not loaded, mean per sample; each tuple is indexed like ``eps``."""

    channel: tuple[float, ...]
    tile: tuple[float, ...]
    element: tuple[float, ...]

    def of(self, granularity: Granularity) -> tuple[float, ...]:
        """The saved bytes at one granularity."""
        values: tuple[float, ...] = getattr(self, granularity)
        return values


@dataclass(frozen=True)
class LayerLoad:
    """One compute layer's bytes, MACs and simulated pruning savings, per sample."""

    name: str
    op_type: str
    kind: Kind
    ifm: str
    ofm: str
    macs: int | None
    bytes: LoadBytes
    saved: SavedBytes
    macs_skipped_channel: tuple[float, ...] | None

    @property
    def ifm_share(self) -> float | None:
        """The IFM's share of this layer's load, or None when the weight bytes are unknown."""
        load = self.bytes.load
        return _share(self.bytes.ifm, load) if load is not None else None


@dataclass(frozen=True)
class LoadTotal:
    """Sums over a set of fully analysed layers, per sample; tuples are indexed like ``eps``."""

    layers: int
    macs: int
    weights: int
    ifm: int
    ofm: int
    saved: SavedBytes
    macs_skipped_channel: tuple[float, ...]

    @property
    def load(self) -> int:
        """Bytes moved without pruning: weights + IFM + OFM."""
        return self.weights + self.ifm + self.ofm

    @property
    def ifm_share(self) -> float:
        """The IFMs' share of the load."""
        return _share(self.ifm, self.load)

    def pruned_load(self, granularity: Granularity) -> tuple[float, ...]:
        """Bytes moved with pruning at ``granularity``, per ε."""
        return tuple(self.load - saved for saved in self.saved.of(granularity))

    def saved_share(self, granularity: Granularity) -> tuple[float, ...]:
        """Saved bytes / the whole load (weights + IFM + OFM), per ε."""
        return tuple(_share(saved, self.load) for saved in self.saved.of(granularity))

    def ifm_saved_share(self, granularity: Granularity) -> tuple[float, ...]:
        """Saved bytes / IFM bytes (the paper's feature-map load figure), per ε."""
        return tuple(_share(saved, self.ifm) for saved in self.saved.of(granularity))

    def macs_skipped_share(self) -> tuple[float, ...]:
        """MACs skipped by channel pruning / all MACs, per ε."""
        return tuple(_share(skipped, self.macs) for skipped in self.macs_skipped_channel)


@dataclass(frozen=True)
class BandwidthReport:
    """The bandwidth model of one analysis: per layer, totals, per kind and per sample."""

    eps: tuple[float, ...]
    tile: tuple[int, int]
    samples: int
    bits: int | None
    layers: tuple[LayerLoad, ...]
    total: LoadTotal
    by_kind: Mapping[Kind, LoadTotal]
    not_analysed: tuple[NotAnalysed, ...]
    assumed_widths: tuple[str, ...]

    def layer(self, name: str) -> LayerLoad | None:
        """The layer called ``name``, or None."""
        return next((layer for layer in self.layers if layer.name == name), None)


def estimate_bandwidth(
    model: onnx.ModelProto,
    layers: Sequence[ComputeLayer],
    stats: ActivationStats,
    weights: WeightReport,
    *,
    bits: int | None = None,
    types: Mapping[str, TensorType] | None = None,
    is_constant: Callable[[str], bool] | None = None,
) -> BandwidthReport:
    """Bytes, MACs and pruning savings of every compute layer of ``model``, per sample.

    ``bits`` counts every tensor at that many bits per value (16 reproduces the paper); None
    counts each tensor at the width its deployed kernel moves (module docstring).
    ``is_constant`` is the layer scan's answer to "is this tensor constant?" (the
    ``ConstantResolver``'s); None: a resolver of ``model`` answers it.
    """
    if bits is not None and bits <= 0:
        raise ValueError(f"bits must be a positive number of bits per value, got {bits}")
    if stats.samples <= 0:
        raise ValueError("the activation statistics hold no sample: calibrate first")
    widths = _Widths(types if types is not None else infer_tensor_types(model), bits, model.graph)
    scanned = {layer.name: layer for layer in weights.layers}
    loads = tuple(_layer_load(layer, stats, scanned.get(layer.name), widths) for layer in layers)
    complete = [load for load in loads if load.bytes.weights is not None]
    width = len(stats.eps)
    return BandwidthReport(
        eps=stats.eps,
        tile=stats.tile,
        samples=stats.samples,
        bits=bits,
        layers=loads,
        total=_total(complete, width),
        by_kind={kind: _total([c for c in complete if c.kind == kind], width) for kind in KINDS},
        not_analysed=_not_analysed(model, layers, weights, loads, is_constant),
        assumed_widths=widths.assumed(),
    )


class _Widths:
    """Bits per value of each tensor: the graph's dtype, or ``bits`` for every tensor."""

    def __init__(
        self, types: Mapping[str, TensorType], bits: int | None, graph: onnx.GraphProto
    ) -> None:
        self._bits = bits
        self._types = _element_types(types) if bits is None else {}
        self._assumed: list[str] = []
        self._producers = {output: node for node in graph.node for output in node.output}
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):
                self._consumers.setdefault(name, []).append(node)

    def ifm(self, layer: ComputeLayer) -> int:
        """Bits per IFM value the layer's deployed kernel reads."""
        if self._bits is not None:
            return self._bits
        producer = self._producers.get(layer.ifm)
        if producer is not None and producer.op_type == "DequantizeLinear":
            return self.feature_map(producer.input[0])  # a QDQ pair: the integer tensor moves
        return self.feature_map(layer.ifm)

    def ofm(self, layer: ComputeLayer) -> int:
        """Bits per OFM value the layer's deployed kernel writes."""
        if self._bits is not None:
            return self._bits
        if layer.op_type in SIGNATURES:
            return self.ifm(layer)  # QLinear*/QGemm/*Integer: integer in, integer out
        producer = self._producers.get(layer.ofm)
        if producer is not None and producer.op_type == "DequantizeLinear":
            return self.feature_map(producer.input[0])  # a QDQ pair: the integer map written
        quantizers = [
            node for node in self._consumers.get(layer.ofm, []) if node.op_type == "QuantizeLinear"
        ]
        if quantizers:
            return self.feature_map(quantizers[0].output[0])
        return self.feature_map(layer.ofm)

    def feature_map(self, tensor: str) -> int:
        """Bits per value of a feature map (float32 assumed, and recorded, when unknown)."""
        if self._bits is not None:
            return self._bits
        known = _ELEMENT_BITS.get(self._types.get(tensor, 0))
        if known is None:
            if tensor not in self._assumed:
                self._assumed.append(tensor)
            return ASSUMED_BITS
        return known

    def stored(self, tensor: TensorSparsity) -> int:
        """Bits per value of a stored weight or bias, at its stored numpy dtype."""
        if self._bits is not None:
            return self._bits
        try:
            return int(np.dtype(tensor.dtype).itemsize) * 8
        except TypeError:
            return self.feature_map(tensor.tensor)

    def assumed(self) -> tuple[str, ...]:
        """The tensors whose width was assumed."""
        return tuple(self._assumed)


def _element_types(types: Mapping[str, TensorType]) -> dict[str, int]:
    """The known ONNX element type of every tensor."""
    return {
        name: found.elem_type
        for name, found in types.items()
        if found.elem_type != onnx.TensorProto.UNDEFINED
    }


def _layer_load(
    layer: ComputeLayer, stats: ActivationStats, scanned: LayerWeights | None, widths: _Widths
) -> LayerLoad:
    ifm, ofm = stats.tensors[layer.ifm], stats.tensors[layer.ofm]
    samples = stats.samples
    ifm_bits = widths.ifm(layer)
    shape = scanned.weight.shape if scanned is not None else None
    macs = _macs(layer, shape, ifm.elements // samples, ofm.elements // samples)
    return LayerLoad(
        name=layer.name,
        op_type=layer.op_type,
        kind=_kind(layer, shape),
        ifm=layer.ifm,
        ofm=layer.ofm,
        macs=macs,
        bytes=LoadBytes(
            weights=_weight_bytes(scanned, widths),
            ifm=_bytes(ifm.elements // samples, ifm_bits),
            ofm=_bytes(ofm.elements // samples, widths.ofm(layer)),
        ),
        saved=_saved_bytes(ifm, ifm_bits, samples),
        macs_skipped_channel=_macs_skipped(macs, ifm),
    )


def _bytes(elements: int, bits: int) -> int:
    """Whole bytes that ``elements`` values of ``bits`` bits occupy."""
    return -(-elements * bits // 8)


def _weight_bytes(scanned: LayerWeights | None, widths: _Widths) -> int | None:
    if scanned is None:
        return None
    tensors = [scanned.weight] + ([scanned.bias] if scanned.bias is not None else [])
    return sum(_bytes(tensor.elements, widths.stored(tensor)) for tensor in tensors)


def _saved_bytes(ifm: TensorStats, bits: int, samples: int) -> SavedBytes:
    """Mean bytes per sample in the IFM's zero channels, zero tiles and zero values."""

    def mean(totals: tuple[int, ...]) -> tuple[float, ...]:
        return tuple(total * bits / (8 * samples) for total in totals)

    return SavedBytes(
        channel=mean(ifm.saved_elements),
        tile=mean(ifm.tile_saved_elements),
        element=mean(ifm.zeros),
    )


def _macs(
    layer: ComputeLayer, shape: tuple[int, ...] | None, ifm_values: int, ofm_values: int
) -> int | None:
    """Multiply-accumulates per sample, or None when the weight's shape is unknown."""
    if shape is None or len(shape) < 2:
        return None
    if layer.op_type in _CONV_OPS:
        return ofm_values * int(np.prod(shape[1:]))
    if layer.op_type == "ConvTranspose":
        return ifm_values * int(np.prod(shape[1:]))
    return ofm_values * shape[layer.input_channel_axis]


def _macs_skipped(macs: int | None, ifm: TensorStats) -> tuple[float, ...] | None:
    """Mean MACs per sample whose input channel was pruned: MACs × saved share of the IFM."""
    if macs is None:
        return None
    return tuple(
        macs * saved / ifm.elements if ifm.elements else 0.0 for saved in ifm.saved_elements
    )


def _kind(layer: ComputeLayer, shape: tuple[int, ...] | None) -> Kind:
    if layer.op_type in _FC_OPS:
        return "fc"
    if shape is None or layer.op_type not in _CONV_OPS:
        return "conv"
    if layer.group > 1 and len(shape) > 1 and shape[1] == 1:
        return "depthwise"
    if len(shape) > 2 and all(size == 1 for size in shape[2:]):
        return "pointwise"
    return "conv"


def _total(loads: Sequence[LayerLoad], width: int) -> LoadTotal:
    """Sums over ``loads``, which must all have known weight bytes and MACs."""

    def column(values: Sequence[tuple[float, ...] | None]) -> tuple[float, ...]:
        return tuple(sum(v[k] for v in values if v is not None) for k in range(width))

    return LoadTotal(
        layers=len(loads),
        macs=sum(load.macs or 0 for load in loads),
        weights=sum(load.bytes.weights or 0 for load in loads),
        ifm=sum(load.bytes.ifm for load in loads),
        ofm=sum(load.bytes.ofm for load in loads),
        saved=SavedBytes(
            **{g: column([load.saved.of(g) for load in loads]) for g in GRANULARITIES}
        ),
        macs_skipped_channel=column([load.macs_skipped_channel for load in loads]),
    )


def _not_analysed(
    model: onnx.ModelProto,
    layers: Sequence[ComputeLayer],
    weights: WeightReport,
    loads: Sequence[LayerLoad],
    is_constant: Callable[[str], bool] | None,
) -> tuple[NotAnalysed, ...]:
    """Unresolved heavy ops and weights, then every other op that moves data, in graph order."""
    listed = list(weights.unresolved)
    names = {item.name for item in listed}
    for load in loads:
        if load.bytes.weights is None and load.name not in names:
            listed.append(NotAnalysed(load.name, load.op_type, _NO_WEIGHT))
            names.add(load.name)
    constant = is_constant or ConstantResolver(LoadedModel(Path(), model)).is_constant
    covered = _covered_nodes(model.graph, layers, constant)
    for node in model.graph.node:
        name = node_name(node)
        if name in names or name in covered or node.op_type in _FREE_OPS:
            continue
        if all(constant(output) for output in node.output if output):
            continue
        listed.append(NotAnalysed(name, node.op_type, _NOT_COMPUTE))
    return tuple(listed)


def _covered_nodes(
    graph: onnx.GraphProto, layers: Sequence[ComputeLayer], constant: Callable[[str], bool]
) -> set[str]:
    """The names of the compute nodes and of the activation chains that follow them."""
    producers = {output: node for node in graph.node for output in node.output}
    covered = {layer.name for layer in layers}
    for layer in layers:
        covered.update(_chain_nodes(layer, producers, constant))
    return covered


def _chain_nodes(
    layer: ComputeLayer, producers: Mapping[str, onnx.NodeProto], constant: Callable[[str], bool]
) -> set[str]:
    """The nodes between a layer's raw output and its OFM (their other inputs are constants)."""
    found: set[str] = set()
    pending = [layer.ofm]
    seen: set[str] = set()
    while pending:
        tensor = pending.pop()
        if tensor == layer.output or tensor in seen or constant(tensor):
            continue
        seen.add(tensor)
        node = producers.get(tensor)
        if node is not None:
            found.add(node_name(node))
            pending.extend(name for name in node.input if name)
    return found


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0
