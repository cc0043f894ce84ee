"""Fold per-channel ``Mul``/``Add`` (batch norm, bias) and zero ``Pad`` nodes into convolutions.

A pure graph pass on a copy: a ``Conv`` whose only consumer multiplies or adds a constant of one
value per output channel takes it into its weights and bias; a zero ``Pad`` of H and W whose only
consumer is a ``Conv`` becomes that convolution's pads. The arithmetic is the same up to float
rounding; the converted models are checked against numpy forward passes in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_prune.paper.emit import FloatArray


@dataclass(frozen=True)
class FoldManifest:
    """What the pass folded: per-channel scales and shifts, and zero pads."""

    affine: int
    pads: int


class _Graph:
    """The graph's nodes, consumers and initializers, edited in place (on a copy)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.values = {item.name: numpy_helper.to_array(item) for item in self.graph.initializer}
        self.outputs = {item.name for item in self.graph.output}

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        return [node for node in self.graph.node if tensor in node.input]

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        return next((node for node in self.graph.node if tensor in node.output), None)

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers(tensor)
        if len(users) != 1 or tensor in self.outputs:
            return None
        return users[0]

    def remove(self, node: onnx.NodeProto) -> None:
        """Drop ``node``; its consumers read its input instead."""
        source, target = node.input[0], node.output[0]
        for user in self.consumers(target):
            user.input[:] = [source if name == target else name for name in user.input]
        self.graph.node.remove(node)

    def write_values(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        del self.graph.initializer[:]
        for name, value in self.values.items():
            if name in used:
                self.graph.initializer.append(numpy_helper.from_array(value, name))


def fold_into_convolutions(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FoldManifest]:
    """A copy of ``model`` with batch norm, biases and zero pads folded into its Conv nodes."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = _Graph(copy)
    pads = sum(_fold_pad(graph, node) for node in list(graph.graph.node) if node.op_type == "Pad")
    affine = 0
    for node in list(graph.graph.node):
        if node.op_type == "Conv":
            while _fold_affine(graph, node):
                affine += 1
    graph.write_values()
    return copy, FoldManifest(affine=affine, pads=pads)


def _channel_vector(value: FloatArray | None, channels: int) -> FloatArray | None:
    """``value`` as one number per channel when it is a scalar or shaped [1?, C, 1, 1]."""
    if value is None or value.dtype != np.float32:
        return None
    squeezed = value.reshape(-1) if value.size in (1, channels) else None
    if squeezed is None or (value.ndim >= 3 and value.shape[-2:] != (1, 1)):
        return None
    if value.ndim == 4 and value.shape[0] != 1:
        return None
    return np.broadcast_to(squeezed, (channels,)).astype(np.float32)


def _fold_affine(graph: _Graph, conv: onnx.NodeProto) -> bool:
    user = graph.sole_consumer(conv.output[0])
    if user is None or user.op_type not in ("Mul", "Add"):
        return False
    other = user.input[1] if user.input[0] == conv.output[0] else user.input[0]
    weight = graph.values[conv.input[1]]
    vector = _channel_vector(graph.values.get(other), int(weight.shape[0]))
    if vector is None:
        return False
    bias = (
        graph.values[conv.input[2]]
        if len(conv.input) > 2
        else np.zeros(weight.shape[0], np.float32)
    )
    if user.op_type == "Mul":
        weight = weight * vector.reshape(-1, 1, 1, 1)
        bias = bias * vector
    else:
        bias = bias + vector
    graph.values[conv.input[1]] = weight.astype(np.float32)
    bias_name = conv.input[2] if len(conv.input) > 2 else f"{conv.name}.bias"
    graph.values[bias_name] = bias.astype(np.float32)
    if len(conv.input) < 3:
        conv.input.append(bias_name)
    conv.output[0], user.output[0] = user.output[0], conv.output[0]
    _drop_passthrough(graph, user)
    return True


def _drop_passthrough(graph: _Graph, node: onnx.NodeProto) -> None:
    """Remove a node whose output (now dangling) nobody reads."""
    graph.graph.node.remove(node)


def _fold_pad(graph: _Graph, pad: onnx.NodeProto) -> bool:
    conv = graph.sole_consumer(pad.output[0])
    amounts = graph.values.get(pad.input[1]) if len(pad.input) > 1 else None
    if conv is None or conv.op_type != "Conv" or amounts is None or not _zero_pad(graph, pad):
        return False
    begin, end = amounts.reshape(2, -1)
    if begin[:2].any() or end[:2].any():
        return False
    attrs = {attr.name: attr for attr in conv.attribute}
    old = list(attrs["pads"].ints) if "pads" in attrs else [0] * (2 * (len(begin) - 2))
    spatial = len(begin) - 2
    new = [old[i] + int(begin[2 + i]) for i in range(spatial)]
    new += [old[spatial + i] + int(end[2 + i]) for i in range(spatial)]
    for attr in list(conv.attribute):
        if attr.name in ("pads", "auto_pad"):
            conv.attribute.remove(attr)
    conv.attribute.append(onnx.helper.make_attribute("pads", new))
    graph.remove(pad)
    return True


def _zero_pad(graph: _Graph, pad: onnx.NodeProto) -> bool:
    mode = next((attr.s for attr in pad.attribute if attr.name == "mode"), b"constant")
    if mode != b"constant":
        return False
    if len(pad.input) > 2 and pad.input[2]:
        value = graph.values.get(pad.input[2])
        return value is not None and not value.any()
    return True
