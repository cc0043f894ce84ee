"""A frozen TensorFlow GraphDef (``.pb``) of a CNN as an NCHW ONNX model, BatchNorm folded.

The file is decoded with the TensorFlow graph protobuf classes that tensorboard ships
(``tensorboard.compat.proto.graph_pb2``; the ``paper`` extra), so TensorFlow itself is not needed.
Constant subgraphs (``Const``, ``Identity``, and the ``Add``/``Mul``/``Rsqrt``/``Sub`` chains
that an unfused batch norm computes from its variables) are evaluated in numpy; the data path
from ``output`` back to the ``Placeholder`` is emitted op by op: ``Conv2D``,
``DepthwiseConv2dNative``, ``BiasAdd``, per-channel ``Mul``/``Add``/``Sub``,
``FusedBatchNorm[V3]``, ``Relu``, ``Relu6``, ``AvgPool``, ``MaxPool``, ``Squeeze``, ``Reshape``,
``MatMul``, ``Softmax``, ``Identity``. Anything else is a :class:`ConversionError` naming the op.
"SAME" padding becomes TensorFlow's exact explicit pads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx_prune.errors import ConversionError, MissingExtraError
from onnx_prune.paper.emit import FloatArray, OnnxBuilder
from onnx_prune.paper.fold import fold_into_convolutions

INPUT_NAME = "input"
PAPER_EXTRA = "pip install 'onnx-prune[paper]'"
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}
_CONSTANT_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda x: x,
    "Add": np.add,
    "AddV2": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Rsqrt": lambda x: 1 / np.sqrt(x),
    "Sqrt": np.sqrt,
}


def graph_def_class() -> Any:
    """tensorboard's GraphDef message class; a missing extra is a one-line error."""
    try:
        from tensorboard.compat.proto import graph_pb2
    except ImportError:
        raise MissingExtraError(
            f"reading a TensorFlow graph needs tensorboard's protobuf classes: {PAPER_EXTRA}"
        ) from None
    return graph_pb2.GraphDef


def read_graph_def(path: Path) -> Any:
    """The GraphDef in ``path``; a file that does not parse is a ConversionError."""
    graph = graph_def_class()()
    try:
        graph.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf raises its own DecodeError, or others on garbage
        raise ConversionError(f"{path} is not a TensorFlow GraphDef ({error})") from None
    if not graph.node:
        raise ConversionError(f"{path} is not a TensorFlow GraphDef (no nodes)")
    return graph


def tensor_value(tensor: Any) -> np.ndarray[Any, Any]:
    """A TensorFlow TensorProto as a numpy array (``tensor_content`` or the typed value lists)."""
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ConversionError(f"constant of TensorFlow dtype {tensor.dtype} is not supported")
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    field = {np.float32: "float_val", np.float64: "double_val", np.int32: "int_val"}.get(
        dtype, "int64_val"
    )
    values = np.array(getattr(tensor, field), dtype=dtype)
    count = int(np.prod(shape)) if shape else 1
    if values.size == count:
        return values.reshape(shape)
    return np.full(shape, values[-1] if values.size else 0, dtype=dtype)


def _source(name: str) -> str:
    """An input reference as the producing node's name (``x:0`` -> ``x``)."""
    return name.split(":")[0]


def convert_tf_graph(path: Path, *, output: str, name: str | None = None) -> onnx.ModelProto:
    """The ONNX model of the GraphDef in ``path`` from its Placeholder up to node ``output``."""
    graph = read_graph_def(path)
    converter = _Converter(graph, name or path.stem)
    result = converter.emit(output)
    model = converter.builder.build([result], doc=f"converted from {path.name} up to {output}")
    folded, _manifest = fold_into_convolutions(model)
    onnx.checker.check_model(folded)
    return folded


class _Converter:
    """Walks the GraphDef from the output back to the input, emitting every data op once."""

    def __init__(self, graph: Any, name: str) -> None:
        self.nodes = {node.name: node for node in graph.node}
        self.builder = OnnxBuilder(name)
        self.emitted: dict[str, str] = {}
        self.constants: dict[str, np.ndarray[Any, Any] | None] = {}

    def node(self, name: str) -> Any:
        source = _source(name)
        if source not in self.nodes:
            raise ConversionError(f"the graph has no node {source!r}")
        return self.nodes[source]

    def constant(self, name: str) -> np.ndarray[Any, Any] | None:
        """The value of ``name`` when it is computed from constants only, else None."""
        source = _source(name)
        if source not in self.constants:
            self.constants[source] = self._evaluate(self.node(source))
        return self.constants[source]

    def _evaluate(self, node: Any) -> np.ndarray[Any, Any] | None:
        if node.op == "Const":
            return tensor_value(node.attr["value"].tensor)
        function = _CONSTANT_OPS.get(node.op)
        data = [name for name in node.input if not name.startswith("^")]
        if function is None or not data:
            return None
        values = [self.constant(name) for name in data]
        if any(value is None for value in values):
            return None
        return np.asarray(function(*values))

    def emit(self, name: str) -> str:
        """The ONNX tensor of data node ``name``, emitting its inputs first (iteratively)."""
        stack = [_source(name)]
        while stack:
            current = stack[-1]
            if current in self.emitted:
                stack.pop()
                continue
            pending = [
                _source(item)
                for item in self.data_inputs(self.node(current))
                if _source(item) not in self.emitted
            ]
            if pending:
                stack.extend(pending)
                continue
            self.emitted[current] = self._emit_node(self.node(current))
            stack.pop()
        return self.emitted[_source(name)]

    def data_inputs(self, node: Any) -> list[str]:
        return [
            item for item in node.input if not item.startswith("^") and self.constant(item) is None
        ]

    def _emit_node(self, node: Any) -> str:
        handler = _HANDLERS.get(node.op)
        if handler is None:
            raise ConversionError(f"TensorFlow op {node.op} (node {node.name}) is not supported")
        return handler(self, node)

    def data(self, node: Any, index: int = 0) -> str:
        return self.emitted[_source(self.data_inputs(node)[index])]

    def weight(self, node: Any) -> FloatArray:
        """The one constant input of ``node`` as float32."""
        return np.asarray(self.weight_any(node), dtype=np.float32)

    def weight_any(self, node: Any) -> np.ndarray[Any, Any]:
        """The one constant input of ``node``, of any dtype."""
        values = [self.constant(item) for item in node.input if not item.startswith("^")]
        found = [value for value in values if value is not None]
        if len(found) != 1:
            raise ConversionError(f"node {node.name} ({node.op}) needs exactly one constant input")
        return found[0]


def _attr_ints(node: Any, key: str, default: tuple[int, ...] = (1, 1, 1, 1)) -> tuple[int, ...]:
    return tuple(node.attr[key].list.i) if key in node.attr else default


def _check_nhwc(node: Any) -> None:
    layout = node.attr["data_format"].s.decode() if "data_format" in node.attr else "NHWC"
    if layout != "NHWC":
        raise ConversionError(f"node {node.name}: data_format {layout} is not supported (NHWC)")


def _placeholder(converter: _Converter, node: Any) -> str:
    dims = [dim.size for dim in node.attr["shape"].shape.dim]
    if len(dims) != 4 or min(dims[1:]) <= 0:
        raise ConversionError(f"input {node.name} must be NHWC with fixed H, W, C; got {dims}")
    return converter.builder.add_input(INPUT_NAME, (1, dims[3], dims[1], dims[2]))


def _conv(converter: _Converter, node: Any) -> str:
    _check_nhwc(node)
    kernel = converter.weight(node)
    strides, dilations = _attr_ints(node, "strides"), _attr_ints(node, "dilations")
    if node.op == "DepthwiseConv2dNative":
        height, width, channels, multiplier = kernel.shape
        weight = kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        group = int(channels)
    else:
        weight, group = kernel.transpose(3, 2, 0, 1), 1
    return converter.builder.conv(
        node.name,
        converter.data(node),
        np.ascontiguousarray(weight),
        strides=(strides[1], strides[2]),
        padding=node.attr["padding"].s.decode(),
        dilations=(dilations[1], dilations[2]),
        group=group,
    )


def _affine(converter: _Converter, node: Any) -> str:
    x = converter.data(node)
    if len(converter.data_inputs(node)) == 2:
        if node.op not in ("Add", "AddV2"):
            raise ConversionError(
                f"node {node.name}: {node.op} of two feature maps is not supported"
            )
        shape = converter.builder.shapes[x]
        return converter.builder.node("Add", [x, converter.data(node, 1)], node.name, shape)
    value = converter.weight(node)
    if node.op == "Mul":
        return converter.builder.channel_affine(node.name, x, scale=value)
    if node.op == "Sub":
        return converter.builder.channel_affine(node.name, x, shift=-value)
    return converter.builder.channel_affine(node.name, x, shift=value)


def _fused_batch_norm(converter: _Converter, node: Any) -> str:
    inputs = [item for item in node.input if not item.startswith("^")]
    gamma, beta, mean, variance = (converter.constant(item) for item in inputs[1:5])
    if any(value is None for value in (gamma, beta, mean, variance)):
        raise ConversionError(f"node {node.name}: batch norm statistics must be constants")
    epsilon = node.attr["epsilon"].f if "epsilon" in node.attr else 1e-3
    scale = np.asarray(gamma) / np.sqrt(np.asarray(variance) + epsilon)
    shift = np.asarray(beta) - np.asarray(mean) * scale
    return converter.builder.channel_affine(
        node.name,
        converter.data(node),
        scale=scale.astype(np.float32),
        shift=shift.astype(np.float32),
    )


def _relu(converter: _Converter, node: Any) -> str:
    high = 6.0 if node.op == "Relu6" else None
    return converter.builder.clip(node.name, converter.data(node), 0.0, high)


def _pool(converter: _Converter, node: Any) -> str:
    _check_nhwc(node)
    ksize, strides = _attr_ints(node, "ksize"), _attr_ints(node, "strides")
    op = "AveragePool" if node.op == "AvgPool" else "MaxPool"
    return converter.builder.pool(
        op,
        node.name,
        converter.data(node),
        kernel=(ksize[1], ksize[2]),
        strides=(strides[1], strides[2]),
        padding=node.attr["padding"].s.decode(),
    )


def _squeeze(converter: _Converter, node: Any) -> str:
    x = converter.data(node)
    shape = converter.builder.shapes[x]
    dims = _attr_ints(node, "squeeze_dims", ()) or tuple(
        axis
        for axis, size in enumerate((shape[0], shape[2], shape[3], shape[1]))
        if size == 1 and axis
    )
    if len(shape) != 4 or sorted(dims) != [1, 2] or shape[2:] != (1, 1):
        raise ConversionError(f"node {node.name}: only squeezing a 1x1 map to [N, C] is supported")
    return converter.builder.flatten(node.name, x)


def _reshape(converter: _Converter, node: Any) -> str:
    x = converter.data(node)
    shape = converter.builder.shapes[x]
    target = [int(value) for value in converter.weight_any(node)]
    if len(shape) != 2 or len(target) != 2 or target[1] not in (-1, shape[1]):
        raise ConversionError(f"node {node.name}: only reshapes of [N, C] to [-1, C] are supported")
    return converter.builder.node("Identity", [x], node.name, shape)


def _matmul(converter: _Converter, node: Any) -> str:
    if node.attr["transpose_a"].b or node.attr["transpose_b"].b:
        raise ConversionError(f"node {node.name}: transposed MatMul is not supported")
    return converter.builder.dense(node.name, converter.data(node), converter.weight(node), None)


def _softmax(converter: _Converter, node: Any) -> str:
    x = converter.data(node)
    return converter.builder.node("Softmax", [x], node.name, converter.builder.shapes[x], axis=-1)


def _identity(converter: _Converter, node: Any) -> str:
    return converter.data(node)


_HANDLERS: dict[str, Callable[[_Converter, Any], str]] = {
    "Placeholder": _placeholder,
    "Conv2D": _conv,
    "DepthwiseConv2dNative": _conv,
    "BiasAdd": _affine,
    "Add": _affine,
    "AddV2": _affine,
    "Sub": _affine,
    "Mul": _affine,
    "FusedBatchNorm": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm,
    "Relu": _relu,
    "Relu6": _relu,
    "AvgPool": _pool,
    "MaxPool": _pool,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "MatMul": _matmul,
    "Softmax": _softmax,
    "Identity": _identity,
    "PlaceholderWithDefault": _identity,
}
