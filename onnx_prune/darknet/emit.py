"""Build the ONNX graph of a parsed network with its weights: one emitter per layer kind.

Each layer that computes something has a main node named after the layer; its last tensor is
renamed to the layer's name (the network's output to ``output``), so every Darknet layer output
can be probed by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from onnx_prune.darknet.graph import (
    GraphBuilder,
    Tensor,
    activate,
    add_slice,
    as_image,
    as_vector,
    batch_norm,
)
from onnx_prune.darknet.layers import (
    AvgpoolLayer,
    ConnectedLayer,
    ConvolutionalLayer,
    CropLayer,
    DarknetNetwork,
    Layer,
    MaxpoolLayer,
    RouteLayer,
    Shape,
    ShortcutLayer,
    SoftmaxLayer,
    WeightedLayer,
)
from onnx_prune.darknet.weights_file import LayerArrays, Parameters

OPSET = 13
OUTPUT_NAME = "output"
INPUT_NAME = "input"


def build_model(network: DarknetNetwork, parameters: Parameters, doc: str) -> onnx.ModelProto:
    """The ONNX model (opset 13, IR 8) of ``network`` with ``parameters`` as initializers."""
    builder, result = _build_graph(network, parameters)
    shape = network.input_shape
    graph_input = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.FLOAT, ["N", shape.channels, shape.height, shape.width]
    )
    out = network.output_layer.output_shape
    dims: list[str | int] = ["N", out.size]
    if result.rank == 4:
        dims = ["N", out.channels, out.height, out.width]
    graph_output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)
    graph = helper.make_graph(
        builder.nodes, network.cfg_path.stem, [graph_input], [graph_output], builder.initializers
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnx-prune",
        doc_string=doc,
    )
    model.ir_version = 8
    return model


def _build_graph(network: DarknetNetwork, parameters: Parameters) -> tuple[GraphBuilder, Tensor]:
    """All nodes; each layer's last tensor is renamed to the layer's name (or ``output``)."""
    builder = GraphBuilder()
    outputs = [Tensor(INPUT_NAME, 4)]
    shapes = [network.input_shape]
    final = network.output_layer.index
    for layer in network.layers:
        start = len(builder.nodes)
        tensor = _emit_layer(builder, layer, parameters.get(layer.index, {}), outputs, shapes)
        wanted = OUTPUT_NAME if layer.index == final else layer.name
        if builder.rename_output(tensor.name, wanted, since=start):
            tensor = Tensor(wanted, tensor.rank)
        outputs.append(tensor)
        shapes.append(layer.output_shape)
    result = outputs[final + 1]
    if result.name != OUTPUT_NAME:  # the output layer emitted no node (e.g. a final dropout)
        result = Tensor(builder.node("Identity", [result.name], OUTPUT_NAME), result.rank)
    return builder, result


def _emit_layer(
    builder: GraphBuilder,
    layer: Layer,
    arrays: LayerArrays,
    outputs: Sequence[Tensor],
    shapes: Sequence[Shape],
) -> Tensor:
    """Emit ``layer``; ``outputs`` and ``shapes`` hold the input first, then earlier layers."""
    previous = outputs[-1]
    if isinstance(layer, ConvolutionalLayer):
        return _emit_convolutional(builder, layer, arrays, previous)
    if isinstance(layer, ConnectedLayer):
        return _emit_connected(builder, layer, arrays, previous)
    if isinstance(layer, MaxpoolLayer):
        return _emit_maxpool(builder, layer, previous)
    if isinstance(layer, AvgpoolLayer):
        return _emit_avgpool(builder, layer, previous)
    if isinstance(layer, RouteLayer):
        sources = [outputs[index + 1] for index in layer.sources]
        return _emit_route(builder, layer, sources, [shapes[index + 1] for index in layer.sources])
    if isinstance(layer, ShortcutLayer):
        return _emit_shortcut(builder, layer, previous, outputs[layer.source + 1])
    if isinstance(layer, CropLayer):
        return _emit_crop(builder, layer, previous)
    if isinstance(layer, SoftmaxLayer):
        return _emit_softmax(builder, layer, previous)
    return previous  # dropout and cost: the identity at inference


def _emit_convolutional(
    builder: GraphBuilder, layer: ConvolutionalLayer, arrays: LayerArrays, x: Tensor
) -> Tensor:
    x = as_image(builder, x, layer.input_shape, layer.name)
    value = _emit_weighted(
        builder,
        layer,
        arrays,
        x,
        "Conv",
        kernel_shape=[layer.size, layer.size],
        strides=[layer.stride, layer.stride],
        pads=[layer.padding] * 4,
        group=layer.groups,
    )
    return Tensor(value, 4)


def _emit_connected(
    builder: GraphBuilder, layer: ConnectedLayer, arrays: LayerArrays, x: Tensor
) -> Tensor:
    x = as_vector(builder, x, layer.name)
    return Tensor(_emit_weighted(builder, layer, arrays, x, "Gemm", transB=1), 2)


def _emit_weighted(
    builder: GraphBuilder,
    layer: WeightedLayer,
    arrays: LayerArrays,
    x: Tensor,
    op: str,
    **attributes: object,
) -> str:
    """Conv or Gemm, then batch norm (which holds the biases) or the biases, then activation."""
    inputs = [x.name, builder.constant(f"{layer.name}.weights", arrays["weights"])]
    if not layer.batch_normalize:
        inputs.append(builder.constant(f"{layer.name}.biases", arrays["biases"]))
    value = builder.layer_node(op, inputs, layer, **attributes)
    if layer.batch_normalize:
        value = batch_norm(builder, layer, arrays, value)
    return activate(builder, layer.activation, value, layer.name)


def _emit_maxpool(builder: GraphBuilder, layer: MaxpoolLayer, x: Tensor) -> Tensor:
    x = as_image(builder, x, layer.input_shape, layer.name)
    before, after = layer.pads
    name = builder.layer_node(
        "MaxPool",
        [x.name],
        layer,
        kernel_shape=[layer.size, layer.size],
        strides=[layer.stride, layer.stride],
        pads=[before, before, after, after],
    )
    return Tensor(name, 4)


def _emit_avgpool(builder: GraphBuilder, layer: AvgpoolLayer, x: Tensor) -> Tensor:
    x = as_image(builder, x, layer.input_shape, layer.name)
    return Tensor(builder.layer_node("GlobalAveragePool", [x.name], layer), 4)


def _emit_route(
    builder: GraphBuilder, layer: RouteLayer, sources: Sequence[Tensor], shapes: Sequence[Shape]
) -> Tensor:
    if len(sources) == 1:
        return sources[0]
    parts = []
    image = layer.output_shape.image and any(source.rank == 4 for source in sources)
    for position, (tensor, shape) in enumerate(zip(sources, shapes, strict=True)):
        prefix = f"{layer.name}/input_{position}"
        parts.append(
            as_image(builder, tensor, shape, prefix)
            if image
            else as_vector(builder, tensor, prefix)
        )
    name = builder.layer_node("Concat", [part.name for part in parts], layer, axis=1)
    return Tensor(name, parts[0].rank)


def _emit_shortcut(
    builder: GraphBuilder, layer: ShortcutLayer, previous: Tensor, added: Tensor
) -> Tensor:
    base = as_image(builder, previous, layer.input_shape, f"{layer.name}/previous").name
    added = as_image(builder, added, layer.source_shape, f"{layer.name}/from")
    addend = _shortcut_addend(builder, layer, added.name)
    if layer.alpha != 1.0:
        alpha = builder.constant(f"{layer.name}.alpha", layer.alpha)
        base = builder.node("Mul", [base, alpha], f"{layer.name}/alpha")
    value = builder.layer_node("Add", [base, addend], layer)
    return Tensor(activate(builder, layer.activation, value, layer.name), 4)


def _shortcut_addend(builder: GraphBuilder, layer: ShortcutLayer, added: str) -> str:
    """The ``from`` input, cut and subsampled to the overlap, zero-padded to the output shape."""
    overlap, target, step, source = (
        layer.overlap,
        layer.input_shape,
        layer.stride,
        layer.source_shape,
    )
    ends = [overlap.channels, overlap.height * step, overlap.width * step]
    if step > 1 or ends != [source.channels, source.height, source.width]:
        added = add_slice(
            builder, added, f"{layer.name}/from_slice", [0, 0, 0], ends, [1, 2, 3], [1, step, step]
        )
    if layer.beta != 1.0:
        beta = builder.constant(f"{layer.name}.beta", layer.beta)
        added = builder.node("Mul", [added, beta], f"{layer.name}/beta")
    missing = [
        target.channels - overlap.channels,
        target.height - overlap.height,
        target.width - overlap.width,
    ]
    if any(missing):
        pads = builder.constant(f"{layer.name}.pads", [0, 0, 0, 0, 0, *missing], integer=True)
        added = builder.node("Pad", [added, pads], f"{layer.name}/from_pad")
    return added


def _emit_crop(builder: GraphBuilder, layer: CropLayer, x: Tensor) -> Tensor:
    value = as_image(builder, x, layer.input_shape, layer.name).name
    inner, outer = layer.output_shape, layer.input_shape
    top, left = layer.offset
    if (inner.height, inner.width) != (outer.height, outer.width):
        ends = [top + inner.height, left + inner.width]
        output = f"{layer.name}/slice"
        value = add_slice(
            builder, value, layer.name, [top, left], ends, [2, 3], [1, 1], output=output
        )
    if layer.adjust:  # Darknet maps [0, 1] to [-1, 1]
        doubled = builder.node(
            "Mul", [value, builder.constant(f"{layer.name}.scale", 2.0)], f"{layer.name}/scale"
        )
        value = builder.node(
            "Sub", [doubled, builder.constant(f"{layer.name}.one", 1.0)], f"{layer.name}/shift"
        )
    return Tensor(value, 4)


def _emit_softmax(builder: GraphBuilder, layer: SoftmaxLayer, x: Tensor) -> Tensor:
    value = as_vector(builder, x, layer.name).name
    if layer.temperature != 1.0:
        temperature = builder.constant(f"{layer.name}.temperature", layer.temperature)
        value = builder.node("Div", [value, temperature], f"{layer.name}/temperature")
    if layer.groups == 1:
        return Tensor(builder.layer_node("Softmax", [value], layer, axis=-1), 2)
    grouped = builder.constant(f"{layer.name}.grouped_shape", [0, layer.groups, -1], integer=True)
    flat = builder.constant(f"{layer.name}.flat_shape", [0, -1], integer=True)
    value = builder.node("Reshape", [value, grouped], f"{layer.name}/groups")
    value = builder.layer_node("Softmax", [value], layer, axis=-1)
    return Tensor(builder.node("Reshape", [value, flat], f"{layer.name}/ungroup"), 2)
