"""Quantized models, all three forms (DESIGN.md §4): what each quantized op reads and writes.

- **QDQ**: float ops between ``QuantizeLinear``/``DequantizeLinear`` pairs; a weight is
  ``DequantizeLinear`` of a constant integer tensor.
- **QOperator**: ``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QGemm`` (and ``QLinearAdd``,
  ``QLinearGlobalAveragePool``, ...) read and write integer feature maps with constant scales and
  zero points.
- **Dynamic**: ``ConvInteger``/``MatMulInteger`` read the integer output of
  ``DynamicQuantizeLinear``, whose scale and zero point are computed at run time.

This module holds the per-op signatures (which input is the data, the weight, their scales and
zero points), the one dequantization ``(q − zero_point) × scale`` used for constants, and the
lookup of a feature map's scale and zero point. It runs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

MICROSOFT = "com.microsoft"


@dataclass(frozen=True)
class Signature:
    """Input positions of a quantized compute op (None: the op has no such input)."""

    data: int
    data_scale: int | None
    data_zero_point: int | None
    weight: int
    weight_scale: int | None
    weight_zero_point: int | None
    bias: int | None
    output_scale: int | None
    output_zero_point: int | None


SIGNATURES: Mapping[str, Signature] = {
    "QLinearConv": Signature(0, 1, 2, 3, 4, 5, 8, 6, 7),
    "QLinearMatMul": Signature(0, 1, 2, 3, 4, 5, None, 6, 7),
    "QGemm": Signature(0, 1, 2, 3, 4, 5, 6, 7, 8),
    "ConvInteger": Signature(0, None, 2, 1, None, 3, None, None, None),
    "MatMulInteger": Signature(0, None, 2, 1, None, 3, None, None, None),
}
"""The quantized compute ops; ``QGemm`` is in the com.microsoft domain, the others in ai.onnx."""

INTEGER_ACCUMULATORS = frozenset({"ConvInteger", "MatMulInteger"})
"""Ops whose output is an int32 accumulator, dequantized by a following Cast and Mul."""

# (output scale, output zero point) input positions of ops that write an integer feature map.
_OUTPUT_PARAMETERS: Mapping[str, tuple[int, int]] = {
    "QuantizeLinear": (1, 2),
    "QLinearConv": (6, 7),
    "QLinearMatMul": (6, 7),
    "QGemm": (7, 8),
    "QLinearAdd": (6, 7),
    "QLinearMul": (6, 7),
    "QLinearGlobalAveragePool": (3, 4),
    "QLinearAveragePool": (3, 4),
    "QLinearLeakyRelu": (3, 4),
    "QLinearSigmoid": (3, 4),
    "QLinearSoftmax": (3, 4),
    "QLinearConcat": (0, 1),
}
QUANTIZED_ACTIVATIONS = frozenset({"QLinearLeakyRelu", "QLinearSigmoid"})
"""com.microsoft activations on integer maps: they belong to the activation chain."""
QUANTIZED_AFFINE = frozenset({"QLinearAdd", "QLinearMul"})
"""com.microsoft binary ops on integer maps (a bias add when the other operand is constant)."""

# Ops that move integer values unchanged: their output has their input's scale and zero point.
_PASS_THROUGH = frozenset(
    {
        "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "MaxPool",
        "Slice", "Split", "Gather", "DepthToSpace", "SpaceToDepth", "Resize", "Tile", "Pad",
    }
)  # fmt: skip


def signature(node: onnx.NodeProto) -> Signature | None:
    """The signature of a quantized compute op, or None for any other node."""
    found = SIGNATURES.get(node.op_type)
    if found is None:
        return None
    domain = MICROSOFT if node.op_type == "QGemm" else ""
    if node.domain not in ({domain} if domain else {"", "ai.onnx"}):
        return None
    return found


def input_at(node: onnx.NodeProto, index: int | None) -> str | None:
    """The name of ``node``'s input at ``index``, or None when absent or empty."""
    if index is None or index >= len(node.input):
        return None
    return node.input[index] or None


def dequantize(
    values: np.ndarray,
    scale: np.ndarray | None,
    zero_point: np.ndarray | None,
    *,
    axis: int = 1,
    block_size: int = 0,
) -> np.ndarray:
    """``(q − zero_point) × scale`` in float32: exactly zero wherever ``q`` equals its zero point.

    Per tensor (scale of shape ``[]`` or ``[1]``), per axis (a 1-D scale along ``axis``) or
    blocked (opset 21: a scale of the same rank, repeated ``block_size`` times along ``axis``).
    """
    exact = np.float32 if _is_float(values.dtype) else np.int64  # float8 formats: no integer
    shifted = values.astype(exact)
    if zero_point is not None:
        shifted = shifted - _broadcast(zero_point.astype(exact), values, axis, block_size)
    if scale is None:
        return shifted.astype(np.float32)
    real: np.ndarray = shifted.astype(np.float32) * _broadcast(
        scale.astype(np.float32), values, axis, block_size
    )
    return real


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name.startswith(("float", "bfloat"))


def _broadcast(parameter: np.ndarray, values: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against ``values``."""
    if parameter.size == 1:
        return parameter.reshape(())
    if values.ndim == 0:
        raise ValueError(f"a per-axis parameter of shape {list(parameter.shape)} on a scalar")
    axis %= values.ndim
    if block_size > 0 and parameter.ndim == values.ndim:
        return np.repeat(parameter, block_size, axis=axis)[
            tuple(slice(0, size) for size in values.shape)
        ]
    if parameter.ndim != 1 or parameter.size != values.shape[axis]:
        raise ValueError(
            f"a parameter of shape {list(parameter.shape)} does not match axis {axis} of a "
            f"tensor of shape {list(values.shape)}"
        )
    shape = [1] * values.ndim
    shape[axis] = parameter.size
    return parameter.reshape(shape)


@dataclass(frozen=True)
class FeatureMapQuantization:
    """How an integer feature map dequantizes: constants, or tensors computed at run time.

    ``scale_tensor``/``zero_point_tensor`` name run-time tensors (the outputs of
    ``DynamicQuantizeLinear``); when set they take the place of ``scale``/``zero_point``.
    """

    scale: float = 1.0
    zero_point: float = 0.0
    scale_tensor: str | None = None
    zero_point_tensor: str | None = None


ConstantValue = Callable[[str], "np.ndarray | None"]
"""The value of a constant tensor, or None when the tensor is not a constant."""


def feature_map_quantization(
    tensor: str,
    producers: Mapping[str, onnx.NodeProto],
    consumers: Mapping[str, list[onnx.NodeProto]],
    constant: ConstantValue,
) -> FeatureMapQuantization | None:
    """The scale and zero point of the integer feature map ``tensor``, or None when unknown.

    From the op that writes it (``QuantizeLinear``, ``QLinear*``, ``DynamicQuantizeLinear``,
    through ops that move integers unchanged), else from a quantized op that reads it.
    """
    seen: set[str] = set()
    current = tensor
    while current not in seen:
        seen.add(current)
        node = producers.get(current)
        if node is None:
            break
        if node.op_type == "DynamicQuantizeLinear" and len(node.output) >= 3:
            return FeatureMapQuantization(
                scale_tensor=node.output[1], zero_point_tensor=node.output[2]
            )
        if node.op_type in _OUTPUT_PARAMETERS:
            scale_index, zero_index = _OUTPUT_PARAMETERS[node.op_type]
            return _constant_parameters(node, scale_index, zero_index, constant)
        if node.op_type not in _PASS_THROUGH or not node.input:
            break
        current = node.input[0]
    return _from_consumers(tensor, consumers, constant)


def _from_consumers(
    tensor: str, consumers: Mapping[str, list[onnx.NodeProto]], constant: ConstantValue
) -> FeatureMapQuantization | None:
    for node in consumers.get(tensor, []):
        found = signature(node)
        if found is not None and input_at(node, found.data) == tensor:
            return _constant_parameters(node, found.data_scale, found.data_zero_point, constant)
        if node.op_type == "DequantizeLinear" and node.input[0] == tensor:
            return _constant_parameters(node, 1, 2, constant)
    return None


def _constant_parameters(
    node: onnx.NodeProto, scale_index: int | None, zero_index: int | None, constant: ConstantValue
) -> FeatureMapQuantization | None:
    scale_name, zero_name = input_at(node, scale_index), input_at(node, zero_index)
    scale = constant(scale_name) if scale_name else np.ones((), np.float32)
    zero_point = constant(zero_name) if zero_name else np.zeros((), np.int64)
    if scale is None or zero_point is None or scale.size != 1 or zero_point.size != 1:
        return None  # computed at run time, or per channel: not a per-tensor feature map
    return FeatureMapQuantization(
        scale=float(np.asarray(scale).reshape(-1)[0]),
        zero_point=float(np.asarray(zero_point).reshape(-1)[0]),
    )


def integer_output_types(
    graph: onnx.GraphProto, known: Mapping[str, int], initializer_types: Mapping[str, int]
) -> dict[str, int]:
    """Element types of quantized ops' outputs that shape inference left unknown.

    Tensors consumed only by com.microsoft ops are often untyped: the type comes from the op that
    writes them (its output zero point's type, uint8 by default, int32 for accumulators).
    """
    types = dict(known)
    found: dict[str, int] = {}
    for node in graph.node:
        for index, output in enumerate(node.output):
            if output and types.get(output, TensorProto.UNDEFINED) == TensorProto.UNDEFINED:
                elem_type = _output_type(node, index, types, initializer_types)
                if elem_type != TensorProto.UNDEFINED:
                    types[output] = found[output] = elem_type
    return found


def _output_type(
    node: onnx.NodeProto, index: int, types: Mapping[str, int], initializers: Mapping[str, int]
) -> int:
    op_type = node.op_type
    if op_type == "DynamicQuantizeLinear":
        return TensorProto.FLOAT if index == 1 else TensorProto.UINT8
    if op_type in INTEGER_ACCUMULATORS:
        return TensorProto.INT32
    if op_type == "DequantizeLinear":
        return initializers.get(input_at(node, 1) or "", TensorProto.FLOAT)
    if op_type in _OUTPUT_PARAMETERS:
        zero_point = input_at(node, _OUTPUT_PARAMETERS[op_type][1])
        if op_type == "QGemm" and input_at(node, 7) is None:
            return TensorProto.FLOAT  # QGemm without an output scale writes float
        return initializers.get(zero_point or "", TensorProto.UINT8)
    if op_type in _PASS_THROUGH and node.input:
        return types.get(node.input[0], TensorProto.UNDEFINED)
    return TensorProto.UNDEFINED
