"""Cut a convolutional body out of an ONNX classifier: NCHW input, a chosen last tensor.

A pure graph pass on a copy, for exports such as tf2onnx's that read an NHWC image through a
leading ``Transpose(perm=[0, 3, 1, 2])``: the new graph input takes the transpose's output
(``[N, C, H, W]``, with the given H and W), the nodes that ``output`` does not depend on (a
task head) are dropped, and so are the initializers nothing reads any more.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from onnx_prune.errors import ConversionError

NHWC_TO_NCHW = [0, 3, 1, 2]


def cut_body(
    model: onnx.ModelProto, *, output: str, size: tuple[int, int], input_name: str = "input"
) -> onnx.ModelProto:
    """A copy of ``model`` from its NHWC input's transpose up to tensor ``output``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    transpose = _input_transpose(graph)
    channels = _channels(graph, transpose.input[0])
    kept = _ancestors(graph, output, stop=transpose.output[0])
    nodes = [node for index, node in enumerate(graph.node) if index in kept]
    for node in nodes:
        node.input[:] = [input_name if item == transpose.output[0] else item for item in node.input]
    used = {item for node in nodes for item in node.input}
    initializers = [item for item in graph.initializer if item.name in used]
    new_graph = helper.make_graph(
        nodes,
        graph.name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", channels, *size])],
        [],
        initializers,
    )
    graph.CopyFrom(new_graph)
    del copy.opset_import[:]
    copy.opset_import.extend(op for op in model.opset_import if op.domain in ("", "ai.onnx"))
    graph.output.append(_output_info(copy, output))
    onnx.checker.check_model(copy)
    return copy


def _output_info(model: onnx.ModelProto, output: str) -> onnx.ValueInfoProto:
    """The inferred type of ``output``, its batch axis named ``N``."""
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    info = next((item for item in inferred if item.name == output), None)
    if info is None:
        raise ConversionError(f"cannot infer the shape of {output!r}")
    result = onnx.ValueInfoProto()
    result.CopyFrom(info)
    result.type.tensor_type.shape.dim[0].dim_param = "N"
    return result


def _input_transpose(graph: onnx.GraphProto) -> onnx.NodeProto:
    inputs = {item.name for item in graph.input} - {item.name for item in graph.initializer}
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in inputs:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm == NHWC_TO_NCHW:
                found: onnx.NodeProto = node
                return found
    raise ConversionError("the model has no Transpose(perm=[0, 3, 1, 2]) of an NHWC input")


def _channels(graph: onnx.GraphProto, name: str) -> int:
    info = next(item for item in graph.input if item.name == name)
    dims = info.type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[3].dim_value:
        raise ConversionError(f"input {name} is not NHWC with a fixed channel count")
    return int(dims[3].dim_value)


def _ancestors(graph: onnx.GraphProto, output: str, *, stop: str) -> set[int]:
    """The positions of the nodes ``output`` depends on, not looking past tensor ``stop``."""
    producers = {item: index for index, node in enumerate(graph.node) for item in node.output}
    if output not in producers:
        raise ConversionError(f"the model has no tensor {output!r}")
    kept: set[int] = set()
    pending = [output]
    while pending:
        index = producers.get(pending.pop())
        if index is None or index in kept:
            continue
        kept.add(index)
        pending.extend(item for item in graph.node[index].input if item != stop)
    return kept
