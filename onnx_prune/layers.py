"""Find the compute layers of a model (DESIGN.md §2): their weights, IFM and OFM tensor names.

A compute layer is a ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul`` whose weight is constant
(QDQ models: ``DequantizeLinear`` of a constant), or one of the quantized compute ops
(``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QGemm``, ``ConvInteger``, ``MatMulInteger``)
with a constant weight. Its IFM is the data input; its OFM is the output after the activation
chain that follows it (BatchNormalization, bias Add, Relu, Clip, x*sigmoid(x), ...; for
``ConvInteger``/``MatMulInteger`` the Cast and scale Mul that dequantize the accumulator first;
in QDQ models the ``QuantizeLinear``→``DequantizeLinear`` pair that ends it).
Every other heavy op (a ``MatMul`` of two activations, LSTMs, anything inside an ``If``/``Loop``
body) is listed as not analysed with its share of the model's weights, never counted as zero.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import onnx

from onnx_prune.constants import ConstantResolver
from onnx_prune.quantization import (
    INTEGER_ACCUMULATORS,
    QUANTIZED_ACTIVATIONS,
    QUANTIZED_AFFINE,
    SIGNATURES,
    Signature,
    input_at,
    signature,
)

FLOAT_COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
COMPUTE_OPS = FLOAT_COMPUTE_OPS | frozenset(SIGNATURES)
HEAVY_OPS = COMPUTE_OPS | frozenset(
    {
        "LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "Attention", "QAttention",
        "MultiHeadAttention", "DynamicQuantizeMatMul", "MatMulNBits", "MatMulInteger16",
        "FusedConv", "FusedGemm", "FusedMatMul", "QLinearConvTranspose", "Einsum",
        "ConvTransposeWithDynamicPads", "NhwcConv", "QLinearWhere",
    }
)  # fmt: skip
"""Compute-like ops: a model's coverage counts how many of these are analysed."""
_SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
Form = Literal["float", "qdq", "qoperator", "dynamic"]

_ACTIVATIONS = frozenset(
    {
        "BatchNormalization", "Relu", "Clip", "LeakyRelu", "PRelu", "HardSwish", "HardSigmoid",
        "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Gelu", "Mish",
        "ThresholdedRelu",
    }
)  # fmt: skip
_AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})
_MAX_GATE_OPS = 4


@dataclass(frozen=True)
class WeightRef:
    """Where a layer's weight is stored, and its zero point when it is quantized."""

    tensor: str
    zero_point: str | None = None
    scale: str | None = None
    axis: int = 0


@dataclass(frozen=True)
class ComputeLayer:
    """One compute layer: the tensors it reads and writes, and the axis of its output filters."""

    name: str
    op_type: str
    ifm: str
    output: str
    ofm: str
    weight: WeightRef
    bias: str | None
    filter_axis: int
    input_channel_axis: int
    group: int
    form: Form = "float"


@dataclass(frozen=True)
class NotAnalysed:
    """An op (or a layer's weight) that is not analysed, and why: shown, never counted as zero."""

    name: str
    op_type: str
    reason: str
    weight_share: float | None = None


@dataclass(frozen=True)
class LayerScan:
    """The compute layers of a model in graph order, the heavy ops left out, the ops seen."""

    layers: tuple[ComputeLayer, ...]
    skipped: tuple[NotAnalysed, ...]
    op_counts: tuple[tuple[str, int], ...] = ()

    def no_layer_message(self) -> str:
        """The one line that says a model has no compute layer, naming the ops it has."""
        seen = ", ".join(f"{op} ×{count}" for op, count in self.op_counts) or "no node"
        return f"no Conv/Gemm/MatMul with a constant weight; found: {seen}"


def node_name(node: onnx.NodeProto) -> str:
    """A node's name, or its first output when it is unnamed."""
    return node.name or (node.output[0] if node.output else node.op_type)


def find_compute_layers(model: onnx.ModelProto, resolver: ConstantResolver) -> LayerScan:
    """Every compute layer of ``model``'s main graph, with the heavy ops that cannot be analysed."""
    consumers = _consumers(model.graph)
    shares = _WeightShares(model)
    layers: list[ComputeLayer] = []
    skipped: list[NotAnalysed] = []
    for node in model.graph.node:
        if node.op_type not in HEAVY_OPS:
            continue
        found = _describe(node, resolver, consumers)
        if isinstance(found, str):
            skipped.append(NotAnalysed(node_name(node), node.op_type, found, shares.of(node)))
            continue
        ofm = _follow_output(_dequantized_output(found, consumers), consumers, resolver)
        layers.append(replace(found, ofm=ofm))
    skipped.extend(_in_subgraphs(model.graph, shares))
    counts = Counter(node.op_type for node in model.graph.node)
    return LayerScan(tuple(layers), tuple(skipped), tuple(counts.most_common()))


def _in_subgraphs(graph: onnx.GraphProto, shares: _WeightShares) -> Iterator[NotAnalysed]:
    """Heavy ops inside ``If``/``Loop``/``Scan`` bodies: listed, with their share of weights."""
    for owner, attribute, body in _subgraphs(graph):
        for node in _all_nodes(body):
            if node.op_type in HEAVY_OPS:
                reason = (
                    f"inside the '{attribute}' of {owner.op_type} '{node_name(owner)}': "
                    "subgraphs are not analysed"
                )
                yield NotAnalysed(node_name(node), node.op_type, reason, shares.of(node))


def _subgraphs(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, str, onnx.GraphProto]]:
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield node, attribute.name, attribute.g
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                yield from ((node, attribute.name, body) for body in attribute.graphs)


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs nested in it."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    yield from _all_nodes(body)


class _WeightShares:
    """Each op's share of the model's weight values (initializers and ``Constant`` tensors,
    subgraphs included), so that what is not analysed says how much of the model it is."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._sizes: dict[str, int] = {}
        graphs = [model.graph] + [body for _, _, body in _all_subgraphs(model.graph)]
        for graph in graphs:
            for tensor in graph.initializer:
                self._sizes[tensor.name] = int(np.prod(tensor.dims, dtype=np.int64))
            for node in graph.node:
                if node.op_type == "Constant" and node.output:
                    self._sizes[node.output[0]] = _constant_size(node)
        self._total = sum(self._sizes.values())

    def of(self, node: onnx.NodeProto) -> float | None:
        """The share of all weight values that ``node`` reads directly (None: no weights)."""
        if not self._total:
            return None
        return sum(self._sizes.get(name, 0) for name in dict.fromkeys(node.input)) / self._total


def _all_subgraphs(
    graph: onnx.GraphProto,
) -> Iterator[tuple[onnx.NodeProto, str, onnx.GraphProto]]:
    for owner, attribute, body in _subgraphs(graph):
        yield owner, attribute, body
        yield from _all_subgraphs(body)


def _constant_size(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "value" and attribute.type == onnx.AttributeProto.TENSOR:
            return int(np.prod(attribute.t.dims, dtype=np.int64))
    return 0


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            if name:
                consumers[name].append(node)
    return consumers


_NOT_CONSTANT = "weight is not a constant (both operands are computed at run time)"


def _describe(
    node: onnx.NodeProto, resolver: ConstantResolver, consumers: dict[str, list[onnx.NodeProto]]
) -> ComputeLayer | str:
    """The layer for ``node``, or the reason it cannot be analysed."""
    quantized = signature(node)
    if quantized is not None:
        return _quantized_layer(node, quantized, resolver, consumers)
    if node.op_type not in FLOAT_COMPUTE_OPS or node.domain not in ("", "ai.onnx"):
        return f"{node.op_type} is not a layer the analysis knows: its loads are not counted"
    data, weight_name, bias, filter_axis, input_axis = _roles(node, resolver)
    if weight_name is None:
        return _NOT_CONSTANT
    weight = _weight_ref(weight_name, resolver)
    return ComputeLayer(
        name=node_name(node),
        op_type=node.op_type,
        ifm=data,
        output=node.output[0],
        ofm=node.output[0],
        weight=weight,
        bias=bias,
        filter_axis=filter_axis,
        input_channel_axis=input_axis,
        group=_int_attribute(node, "group", 1),
        form="qdq" if weight.tensor != weight_name else "float",
    )


def _roles(
    node: onnx.NodeProto, resolver: ConstantResolver
) -> tuple[str, str | None, str | None, int, int]:
    """(data input, weight input, bias input, filter axis, input-channel axis) of a float op."""
    inputs = list(node.input) + [""] * 3
    bias = inputs[2] or None
    if node.op_type == "Conv":
        return inputs[0], _constant(inputs[1], resolver), bias, 0, 1
    if node.op_type == "ConvTranspose":
        return inputs[0], _constant(inputs[1], resolver), bias, 1, 0
    if node.op_type == "Gemm":
        trans_b = _int_attribute(node, "transB", 0)
        axes = (0, 1) if trans_b else (1, 0)
        return inputs[0], _constant(inputs[1], resolver), bias, *axes
    if resolver.is_constant(inputs[1]):  # MatMul(x, W): output features are W's columns
        return inputs[0], inputs[1], None, -1, -2
    if resolver.is_constant(inputs[0]):  # MatMul(W, x): output features are W's rows
        return inputs[1], inputs[0], None, -2, -1
    return inputs[0], None, None, 0, 0


def _constant(name: str, resolver: ConstantResolver) -> str | None:
    return name if name and resolver.is_constant(name) else None


def _weight_ref(name: str, resolver: ConstantResolver) -> WeightRef:
    """Look through a ``DequantizeLinear`` to the stored integer weight and its zero point."""
    producer = resolver.producer(name)
    if producer is not None and producer.op_type == "DequantizeLinear":
        axis = _int_attribute(producer, "axis", 1)
        return WeightRef(producer.input[0], input_at(producer, 2), input_at(producer, 1), axis)
    return WeightRef(name)


def _quantized_layer(
    node: onnx.NodeProto,
    quantized: Signature,
    resolver: ConstantResolver,
    consumers: dict[str, list[onnx.NodeProto]],
) -> ComputeLayer | str:
    """A QLinearConv, QLinearMatMul, QGemm, ConvInteger or MatMulInteger layer."""
    weight_name = input_at(node, quantized.weight)
    if weight_name is None or not resolver.is_constant(weight_name):
        return _NOT_CONSTANT
    filter_axis, input_axis = _quantized_axes(node)
    scale = input_at(node, quantized.weight_scale)
    if node.op_type in INTEGER_ACCUMULATORS:
        scale = _accumulator_weight_scale(node, consumers, resolver)
    weight = WeightRef(weight_name, input_at(node, quantized.weight_zero_point), scale, filter_axis)
    return ComputeLayer(
        name=node_name(node),
        op_type=node.op_type,
        ifm=node.input[quantized.data],
        output=node.output[0],
        ofm=node.output[0],
        weight=weight,
        bias=input_at(node, quantized.bias),
        filter_axis=filter_axis,
        input_channel_axis=input_axis,
        group=_int_attribute(node, "group", 1),
        form="dynamic" if node.op_type in INTEGER_ACCUMULATORS else "qoperator",
    )


def _quantized_axes(node: onnx.NodeProto) -> tuple[int, int]:
    """(filter axis, input-channel axis) of a quantized op's weight (per-channel scales lie
    along the filter axis)."""
    if node.op_type in ("QLinearConv", "ConvInteger"):
        return 0, 1
    if node.op_type == "QGemm" and _int_attribute(node, "transB", 0):
        return 0, 1
    return -1, -2


def _accumulator_weight_scale(
    node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], resolver: ConstantResolver
) -> str | None:
    """The constant weight scale of a ConvInteger/MatMulInteger, as onnxruntime's dynamic
    quantizer writes it: accumulator -> Cast -> Mul(·, Mul(input scale, weight scale))."""
    scaled = _dequantize_nodes(node.output[0], consumers)
    if len(scaled) < 2:
        return None
    multiplier = next((name for name in scaled[1].input if name != scaled[0].output[0]), "")
    if resolver.is_constant(multiplier):
        return multiplier
    product = resolver.producer(multiplier)
    if product is None or product.op_type != "Mul":
        return None
    return next((name for name in product.input if resolver.is_constant(name)), None)


def _dequantize_nodes(
    accumulator: str, consumers: dict[str, list[onnx.NodeProto]]
) -> list[onnx.NodeProto]:
    """The Cast and Mul (single consumers) that turn an int32 accumulator into real values."""
    found: list[onnx.NodeProto] = []
    tensor = accumulator
    for op_type in ("Cast", "Mul"):
        users = consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type != op_type:
            break
        found.append(users[0])
        tensor = users[0].output[0]
    return found


def _follow_output(
    tensor: str, consumers: dict[str, list[onnx.NodeProto]], resolver: ConstantResolver
) -> str:
    """The activation chain from ``tensor``, through the QDQ pairs that split it."""
    while True:
        end = follow_activations(tensor, consumers, resolver)
        dequantized = _through_qdq_pair(end, consumers)
        if dequantized == end:
            return end
        tensor = dequantized


def _through_qdq_pair(tensor: str, consumers: dict[str, list[onnx.NodeProto]]) -> str:
    """In QDQ models the layer's output is quantized at once: the OFM is the dequantized tensor
    the next layers read (exactly the values of the integer map written), not the float one."""
    users = consumers.get(tensor, [])
    if len(users) != 1 or users[0].op_type != "QuantizeLinear":
        return tensor
    dequantizers = [
        node
        for node in consumers.get(users[0].output[0], [])
        if node.op_type == "DequantizeLinear" and node.input[0] == users[0].output[0]
    ]
    return str(dequantizers[0].output[0]) if dequantizers else tensor


def _dequantized_output(layer: ComputeLayer, consumers: dict[str, list[onnx.NodeProto]]) -> str:
    """Where the activation chain starts: after the dequantizing Cast and Mul of an accumulator."""
    if layer.op_type not in INTEGER_ACCUMULATORS:
        return layer.output
    nodes = _dequantize_nodes(layer.output, consumers)
    return str(nodes[-1].output[0]) if nodes else layer.output


def _int_attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def follow_activations(
    tensor: str,
    consumers: dict[str, list[onnx.NodeProto]],
    resolver: ConstantResolver,
) -> str:
    """The tensor at the end of the activation chain that starts at ``tensor``."""
    seen = {tensor}
    while True:
        following = _next_in_chain(tensor, consumers.get(tensor, []), consumers, resolver)
        if following is None or following in seen:  # a cycle ends the chain (load refuses them)
            return tensor
        seen.add(following)
        tensor = following


def _next_in_chain(
    tensor: str,
    users: list[onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    resolver: ConstantResolver,
) -> str | None:
    if len(users) == 1:
        user = users[0]
        chained = user.op_type in _ACTIVATIONS | QUANTIZED_ACTIVATIONS and user.input[0] == tensor
        if chained or (user.op_type in _AFFINE and _other_is_constant(user, tensor, resolver)):
            return str(user.output[0])
        if user.op_type in QUANTIZED_AFFINE and _quantized_other_is_constant(
            user, tensor, resolver
        ):
            return str(user.output[0])
        return None
    if len(users) == 2:
        return _gated_output(tensor, users, consumers, resolver)
    return None


def _other_is_constant(node: onnx.NodeProto, tensor: str, resolver: ConstantResolver) -> bool:
    others = [name for name in node.input if name != tensor]
    return len(others) == 1 and resolver.is_constant(others[0])


def _quantized_other_is_constant(
    node: onnx.NodeProto, tensor: str, resolver: ConstantResolver
) -> bool:
    """QLinearAdd/QLinearMul (A, A scale, A zero point, B, ...): B is constant when A is ours."""
    other = input_at(node, 3) if node.input[0] == tensor else input_at(node, 0)
    return other is not None and resolver.is_constant(other)


def _gated_output(
    tensor: str,
    users: list[onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    resolver: ConstantResolver,
) -> str | None:
    """The output of x * gate(x), or None.

    The gate is a chain of activations and constant affine ops starting at x: Sigmoid (SiLU,
    Swish), HardSigmoid, or HardSwish written out as clip(x + 3, 0, 6) / 6 (paddle2onnx).
    """
    products = [user for user in users if user.op_type == "Mul" and tensor in user.input]
    others = [user for user in users if user not in products]
    if len(products) != 1 or len(others) != 1:
        return None
    product = products[0]
    gate = _follow_gate(tensor, others[0], consumers, resolver, stop=product)
    if gate is not None and set(product.input) == {tensor, gate}:
        return str(product.output[0])
    return None


def _follow_gate(
    tensor: str,
    first: onnx.NodeProto,
    consumers: dict[str, list[onnx.NodeProto]],
    resolver: ConstantResolver,
    *,
    stop: onnx.NodeProto,
) -> str | None:
    """The tensor a gate chain ends in just before ``stop``, following single consumers."""
    node, current = first, tensor
    for _ in range(_MAX_GATE_OPS):
        is_activation = node.op_type in _ACTIVATIONS and node.input[0] == current
        is_affine = node.op_type in _AFFINE and _other_is_constant(node, current, resolver)
        if not (is_activation or is_affine):
            return None
        current = str(node.output[0])
        following = consumers.get(current, [])
        if following == [stop]:
            return current
        if len(following) != 1:
            return None
        node = following[0]
    return None
