"""The pieces of the ONNX graph that layers share: a builder that names every node, reshapes
between images and vectors, Darknet's activations, batch norm and slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.darknet.layers import (
    BATCH_NORM_EPSILON,
    LEAKY_SLOPES,
    RAMP_SLOPE,
    SELU_ALPHA,
    SELU_SCALE,
    Layer,
    Shape,
)
from onnx_prune.darknet.weights_file import LayerArrays


@dataclass(frozen=True)
class Tensor:
    """A value in the graph: its name and rank (4 for images, 2 for flat vectors)."""

    name: str
    rank: int


class GraphBuilder:
    """Collects nodes and initializers in order; every name it is given is deterministic."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []

    def constant(self, name: str, values: npt.ArrayLike, *, integer: bool = False) -> str:
        """Add an initializer (float32, or int64 when ``integer``) and return its name."""
        array = np.asarray(values, dtype=np.int64 if integer else np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(
        self, op: str, inputs: Sequence[str], name: str, *, output: str = "", **attributes: Any
    ) -> str:
        """Add a node named ``name``; its one output is ``output``, by default ``name`` too."""
        output = output or name
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attributes))
        return output

    def layer_node(self, op: str, inputs: Sequence[str], layer: Layer, **attributes: Any) -> str:
        """Add a layer's main node: named after the layer, its output ``<layer>/<op>``."""
        output = f"{layer.name}/{op.lower()}"
        return self.node(op, inputs, layer.name, output=output, **attributes)

    def rename_output(self, old: str, new: str, *, since: int) -> bool:
        """Rename ``old`` to ``new`` if a node added at position ``since`` or later produces it.

        Only the producer is changed, so ``old`` must not have been consumed yet.
        """
        for node in self.nodes[since:]:
            if node.output[0] == old:
                node.output[0] = new
                return True
        return False


def as_image(builder: GraphBuilder, tensor: Tensor, shape: Shape, prefix: str) -> Tensor:
    """``tensor`` as N×C×H×W of ``shape``: reshaped (node ``prefix/to_image``) if it is flat."""
    if tensor.rank == 4:
        return tensor
    dims = [0, shape.channels, shape.height, shape.width]
    target = builder.constant(f"{prefix}.image_shape", dims, integer=True)
    return Tensor(builder.node("Reshape", [tensor.name, target], f"{prefix}/to_image"), 4)


def as_vector(builder: GraphBuilder, tensor: Tensor, prefix: str) -> Tensor:
    """``tensor`` as N×(C·H·W): flattened (node ``prefix/flatten``) if it is an image."""
    if tensor.rank == 2:
        return tensor
    return Tensor(builder.node("Flatten", [tensor.name], f"{prefix}/flatten", axis=1), 2)


def activate(builder: GraphBuilder, activation: str, value: str, prefix: str) -> str:
    """Darknet's activation as nodes named ``prefix/<activation>``; linear adds none."""
    name = f"{prefix}/{activation}"
    simple = {"relu": "Relu", "logistic": "Sigmoid", "tanh": "Tanh"}
    if activation == "linear":
        return value
    if activation in simple:
        return builder.node(simple[activation], [value], name)
    if activation in LEAKY_SLOPES:
        return builder.node("LeakyRelu", [value], name, alpha=LEAKY_SLOPES[activation])
    if activation == "elu":
        return builder.node("Elu", [value], name, alpha=1.0)
    if activation == "selu":
        return builder.node("Selu", [value], name, alpha=SELU_ALPHA, gamma=SELU_SCALE)
    return _activate_composite(builder, activation, value, name)


def _activate_composite(builder: GraphBuilder, activation: str, value: str, name: str) -> str:
    if activation == "hardtan":
        low = builder.constant(f"{name}.min", -1.0)
        high = builder.constant(f"{name}.max", 1.0)
        return builder.node("Clip", [value, low, high], name)
    if activation == "ramp":  # relu(x) + 0.1 x
        relu = builder.node("Relu", [value], f"{name}/relu")
        slope = builder.constant(f"{name}.slope", RAMP_SLOPE)
        tenth = builder.node("Mul", [value, slope], f"{name}/mul")
        return builder.node("Add", [relu, tenth], name)
    # loggy: 2 * sigmoid(x) - 1
    sigmoid = builder.node("Sigmoid", [value], f"{name}/sigmoid")
    doubled = builder.node("Mul", [sigmoid, builder.constant(f"{name}.two", 2.0)], f"{name}/mul")
    return builder.node("Sub", [doubled, builder.constant(f"{name}.one", 1.0)], name)


def batch_norm(builder: GraphBuilder, layer: Layer, arrays: LayerArrays, value: str) -> str:
    """Darknet's batch norm as a BatchNormalization with epsilon 0.

    ONNX divides by sqrt(var + epsilon), Darknet by sqrt(var) + 1e-6, so the variance
    initializer holds (sqrt(var) + 1e-6)^2: both give the same result.
    """
    root = np.sqrt(arrays["rolling_variance"].astype(np.float64)) + BATCH_NORM_EPSILON
    inputs = [
        value,
        builder.constant(f"{layer.name}.scales", arrays["scales"]),
        builder.constant(f"{layer.name}.biases", arrays["biases"]),
        builder.constant(f"{layer.name}.rolling_mean", arrays["rolling_mean"]),
        builder.constant(f"{layer.name}.rolling_variance", np.square(root)),
    ]
    return builder.node("BatchNormalization", inputs, f"{layer.name}/batch_norm", epsilon=0.0)


def add_slice(
    builder: GraphBuilder,
    value: str,
    name: str,
    starts: list[int],
    ends: list[int],
    axes: list[int],
    steps: list[int],
    *,
    output: str = "",
) -> str:
    """A Slice node ``name`` of ``value``; its constants are named ``name.starts`` and so on."""
    inputs = [
        value,
        builder.constant(f"{name}.starts", starts, integer=True),
        builder.constant(f"{name}.ends", ends, integer=True),
        builder.constant(f"{name}.axes", axes, integer=True),
        builder.constant(f"{name}.steps", steps, integer=True),
    ]
    return builder.node("Slice", inputs, name, output=output)
