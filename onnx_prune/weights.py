"""Static weight sparsity: per compute layer, exact counts of weights within each ε of zero.

Counts are exact integers. ε is compared in the tensor's own dtype (``|w| <= ε``, inclusive; −0.0
is zero, NaN never is). A quantized weight's zero is its zero point, and ε applies to the
dequantized value ``(q − zero_point) × scale``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnx_prune.constants import ConstantFoldingError, ConstantResolver
from onnx_prune.layers import ComputeLayer, LayerScan, NotAnalysed, WeightRef, find_compute_layers
from onnx_prune.load import LoadedModel, is_random_weights
from onnx_prune.quantization import dequantize


@dataclass(frozen=True)
class TensorSparsity:
    """Zero counts of one stored tensor; ``zeros[i]`` is the count for ``eps[i]``."""

    tensor: str
    shape: tuple[int, ...]
    dtype: str
    elements: int
    zeros: tuple[int, ...]
    filters: int | None = None
    zero_filters: int | None = None
    zero_input_channels: int | None = None
    quantized: bool = False


@dataclass(frozen=True)
class LayerWeights:
    """The weight and bias sparsity of one compute layer; ``bias_unresolved`` says why a bias
    the layer has could not be read (the weight is still counted)."""

    name: str
    op_type: str
    weight: TensorSparsity
    bias: TensorSparsity | None
    bias_unresolved: str | None = None


@dataclass(frozen=True)
class Coverage:
    """How many compute-like ops were analysed (``layers``) of all found (``of``)."""

    layers: int
    of: int

    @property
    def complete(self) -> bool:
        """True when every compute-like op was analysed."""
        return self.layers == self.of


@dataclass(frozen=True)
class SparsityTotal:
    """Sums over a set of layers' weights (biases excluded)."""

    layers: int
    elements: int
    zeros: tuple[int, ...]
    filters: int
    zero_filters: int


@dataclass(frozen=True)
class WeightReport:
    """The static weight scan of one model."""

    model: str
    eps: tuple[float, ...]
    layers: tuple[LayerWeights, ...]
    unresolved: tuple[NotAnalysed, ...]
    random_weights: bool = False

    def total(self, op_type: str | None = None) -> SparsityTotal:
        """Totals over all layers, or over the layers of one op type."""
        chosen = [layer for layer in self.layers if op_type in (None, layer.op_type)]
        return SparsityTotal(
            layers=len(chosen),
            elements=sum(layer.weight.elements for layer in chosen),
            zeros=tuple(
                sum(layer.weight.zeros[i] for layer in chosen) for i in range(len(self.eps))
            ),
            filters=sum(layer.weight.filters or 0 for layer in chosen),
            zero_filters=sum(layer.weight.zero_filters or 0 for layer in chosen),
        )

    def op_types(self) -> list[str]:
        """The op types present, in first-seen order."""
        return list(dict.fromkeys(layer.op_type for layer in self.layers))

    @property
    def coverage(self) -> Coverage:
        """Layers whose weights were scanned, of every compute-like op found."""
        return Coverage(len(self.layers), len(self.layers) + len(self.unresolved))


def count_zero_weights(
    loaded: LoadedModel,
    *,
    eps: Sequence[float] = (0.0,),
    scan: LayerScan | None = None,
    resolver: ConstantResolver | None = None,
) -> WeightReport:
    """Scan every compute layer's weight and bias of ``loaded`` at each ε."""
    resolver = resolver or ConstantResolver(loaded)
    scan = scan or find_compute_layers(loaded.model, resolver)
    layers: list[LayerWeights] = []
    unresolved = list(scan.skipped)
    for layer in scan.layers:
        try:
            layers.append(_scan_layer(layer, resolver, tuple(eps)))
        except ConstantFoldingError as error:
            unresolved.append(NotAnalysed(layer.name, layer.op_type, str(error)))
    return WeightReport(
        model=str(loaded.path),
        eps=tuple(float(e) for e in eps),
        layers=tuple(layers),
        unresolved=tuple(unresolved),
        random_weights=is_random_weights(loaded.model),
    )


def _scan_layer(
    layer: ComputeLayer, resolver: ConstantResolver, eps: tuple[float, ...]
) -> LayerWeights:
    weight = _scan_weight(layer.weight, layer, resolver, eps)
    if not layer.bias:
        return LayerWeights(layer.name, layer.op_type, weight, None)
    if not resolver.is_constant(layer.bias):
        reason = f"bias '{layer.bias}' is computed at run time"
        return LayerWeights(layer.name, layer.op_type, weight, None, reason)
    try:
        bias = _tensor_sparsity(layer.bias, resolver.value(layer.bias), eps)
    except ConstantFoldingError as error:
        return LayerWeights(layer.name, layer.op_type, weight, None, str(error))
    return LayerWeights(layer.name, layer.op_type, weight, bias)


def _scan_weight(
    ref: WeightRef, layer: ComputeLayer, resolver: ConstantResolver, eps: tuple[float, ...]
) -> TensorSparsity:
    values = resolver.value(ref.tensor)
    stored_dtype = str(values.dtype)
    quantized = ref.zero_point is not None or ref.scale is not None or values.dtype.kind in "iuV"
    if quantized:
        values = _dequantize(values, ref, resolver)
    nonzero = values != 0
    counted = _tensor_sparsity(
        ref.tensor, values, eps, dtype=stored_dtype, quantized=quantized, nonzero=nonzero
    )
    filters, zero_filters = _zero_slices(nonzero, layer.filter_axis)
    _, zero_inputs = _zero_slices(nonzero, layer.input_channel_axis)
    return TensorSparsity(
        **{
            **counted.__dict__,
            "filters": filters,
            "zero_filters": zero_filters,
            "zero_input_channels": zero_inputs,
        }
    )


def _dequantize(values: np.ndarray, ref: WeightRef, resolver: ConstantResolver) -> np.ndarray:
    """``(q − zero_point) × scale``: exactly zero where ``q`` equals its zero point."""
    zero_point = resolver.value(ref.zero_point) if ref.zero_point else None
    scale = resolver.value(ref.scale) if ref.scale else None
    try:
        return dequantize(values, scale, zero_point, axis=ref.axis)
    except ValueError as error:
        raise ConstantFoldingError(f"'{ref.tensor}' cannot be dequantized: {error}") from None


def _tensor_sparsity(
    name: str,
    values: np.ndarray,
    eps: tuple[float, ...],
    *,
    dtype: str | None = None,
    quantized: bool = False,
    nonzero: np.ndarray | None = None,
) -> TensorSparsity:
    return TensorSparsity(
        tensor=name,
        shape=tuple(int(d) for d in values.shape),
        dtype=dtype or str(values.dtype),
        elements=int(values.size),
        zeros=_count(values, values != 0 if nonzero is None else nonzero, eps),
        quantized=quantized,
    )


def count_near_zero(values: np.ndarray, eps: Sequence[float]) -> tuple[int, ...]:
    """Exact counts of ``|x| <= ε`` for each ε (NaN is never counted, −0.0 always is)."""
    return _count(values, values != 0, eps)


def _count(values: np.ndarray, nonzero: np.ndarray, eps: Sequence[float]) -> tuple[int, ...]:
    """Counts per ε; ``nonzero`` (``values != 0``) is shared with the zero-slice scan."""
    exact = values.size - int(np.count_nonzero(nonzero))
    magnitude = np.abs(values) if any(bound != 0 for bound in eps) else values
    return tuple(
        exact if bound == 0 else int(np.count_nonzero(magnitude <= bound)) for bound in eps
    )


def _zero_slices(nonzero: np.ndarray, axis: int) -> tuple[int | None, int | None]:
    """(slices along ``axis``, slices entirely exactly zero); None for scalars and vectors."""
    if nonzero.ndim < 2:
        return None, None
    axis %= nonzero.ndim
    others = tuple(a for a in range(nonzero.ndim) if a != axis)
    return int(nonzero.shape[axis]), int(np.count_nonzero(~nonzero.any(axis=others)))
