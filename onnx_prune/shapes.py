"""What onnx's shape inference knows of every tensor of a model: element type and dims."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from onnx_prune.quantization import integer_output_types

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorType:
    """An element type (``TensorProto.UNDEFINED`` when unknown) and dims (None when unknown)."""

    elem_type: int
    shape: tuple[int | None, ...] | None

    @property
    def rank(self) -> int | None:
        """The number of dims, or None when unknown."""
        return None if self.shape is None else len(self.shape)


UNKNOWN = TensorType(TensorProto.UNDEFINED, None)


def infer_tensor_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Types of the inputs, outputs, initializers and every tensor inference can determine.

    Shape inference rejects some valid models; then only what the graph declares is known.
    Outputs of quantized ops that inference leaves untyped (often those that only com.microsoft
    ops read) take their element type from the op that writes them.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as error:  # onnx raises several kinds on graphs it cannot infer
        logger.debug("shape inference failed; using the declared types only: %s", error)
        inferred = model
    types: dict[str, TensorType] = {}
    graph = inferred.graph
    for value in (*graph.value_info, *graph.input, *graph.output):
        if value.type.HasField("tensor_type"):
            tensor_type = value.type.tensor_type
            dims = tensor_type.shape.dim if tensor_type.HasField("shape") else None
            shape = None if dims is None else tuple(d.dim_value or None for d in dims)
            types[value.name] = TensorType(int(tensor_type.elem_type), shape)
    for tensor in model.graph.initializer:
        types[tensor.name] = TensorType(int(tensor.data_type), tuple(int(d) for d in tensor.dims))
    return _with_integer_types(model.graph, types)


def _with_integer_types(
    graph: onnx.GraphProto, types: dict[str, TensorType]
) -> dict[str, TensorType]:
    known = {name: found.elem_type for name, found in types.items()}
    initializers = {tensor.name: int(tensor.data_type) for tensor in graph.initializer}
    for name, elem_type in integer_output_types(graph, known, initializers).items():
        types[name] = TensorType(elem_type, types[name].shape if name in types else None)
    return types
