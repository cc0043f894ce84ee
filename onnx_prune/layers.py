"""Find the compute layers of a model (DESIGN.md §2): their weights, IFM and OFM tensor names.

A compute layer is a ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul`` (or their ``QLinear``
forms) whose weight is constant. Its IFM is the data input; its OFM is the output after the
activation chain that follows it (BatchNormalization, bias Add, Relu, Clip, x*sigmoid(x), ...).
Heavy ops whose weight is not constant are listed as not analysed, never counted as zero.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import onnx

from onnx_prune.constants import ConstantResolver

COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul"})

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


@dataclass(frozen=True)
class NotAnalysed:
    """An op (or a layer's weight) that is not analysed, and why: shown, never counted as zero."""

    name: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class LayerScan:
    """The compute layers of a model in graph order, and the heavy ops left out."""

    layers: tuple[ComputeLayer, ...]
    skipped: tuple[NotAnalysed, ...]


def node_name(node: onnx.NodeProto) -> str:
    """A node's name, or its first output when it is unnamed."""
    return node.name or (node.output[0] if node.output else node.op_type)


def find_compute_layers(model: onnx.ModelProto, resolver: ConstantResolver) -> LayerScan:
    """Every compute layer of ``model``'s main graph, with the heavy ops that cannot be analysed."""
    consumers = _consumers(model.graph)
    layers: list[ComputeLayer] = []
    skipped: list[NotAnalysed] = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or node.domain not in ("", "ai.onnx"):
            continue
        found = _describe(node, resolver)
        if isinstance(found, str):
            skipped.append(NotAnalysed(node_name(node), node.op_type, found))
            continue
        ofm = follow_activations(node.output[0], consumers, resolver)
        layers.append(_with_ofm(found, ofm))
    return LayerScan(tuple(layers), tuple(skipped))


def _with_ofm(layer: ComputeLayer, ofm: str) -> ComputeLayer:
    return replace(layer, ofm=ofm)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            if name:
                consumers[name].append(node)
    return consumers


def _describe(node: onnx.NodeProto, resolver: ConstantResolver) -> ComputeLayer | str:
    """The layer for ``node``, or the reason it cannot be analysed."""
    if node.op_type in ("QLinearConv", "QLinearMatMul"):
        return _quantized_layer(node, resolver)
    data, weight_name, bias, filter_axis, input_axis = _roles(node, resolver)
    if weight_name is None:
        return "weight is not a constant (both operands are computed at run time)"
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
        inputs = list(producer.input) + [""] * 3
        axis = _int_attribute(producer, "axis", 1)
        return WeightRef(inputs[0], inputs[2] or None, inputs[1] or None, axis)
    return WeightRef(name)


def _quantized_layer(node: onnx.NodeProto, resolver: ConstantResolver) -> ComputeLayer | str:
    inputs = list(node.input) + [""] * 9
    if not resolver.is_constant(inputs[3]):
        return "weight is not a constant (both operands are computed at run time)"
    is_conv = node.op_type == "QLinearConv"
    weight = WeightRef(inputs[3], inputs[5] or None, inputs[4] or None, 0 if is_conv else 1)
    return ComputeLayer(
        name=node_name(node),
        op_type=node.op_type,
        ifm=inputs[0],
        output=node.output[0],
        ofm=node.output[0],
        weight=weight,
        bias=(inputs[8] or None) if is_conv else None,
        filter_axis=0 if is_conv else -1,
        input_channel_axis=1 if is_conv else -2,
        group=_int_attribute(node, "group", 1),
    )


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
        chained = user.op_type in _ACTIVATIONS and user.input[0] == tensor
        if chained or (user.op_type in _AFFINE and _other_is_constant(user, tensor, resolver)):
            return str(user.output[0])
        return None
    if len(users) == 2:
        return _gated_output(tensor, users, consumers, resolver)
    return None


def _other_is_constant(node: onnx.NodeProto, tensor: str, resolver: ConstantResolver) -> bool:
    others = [name for name in node.input if name != tensor]
    return len(others) == 1 and resolver.is_constant(others[0])


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
