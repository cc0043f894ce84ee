"""A Keras functional CNN saved as HDF5 (``.h5``) as an NCHW ONNX model, BatchNorm folded.

Read with h5py (the ``paper`` extra), so neither Keras nor TensorFlow is needed. The model config
(``model_config``, Keras 2 or Keras 3 layout) gives the layers and their inbound tensors; nested
functional models (a pretrained backbone inside a classifier) are flattened. The weights are read
from ``model_weights/.../<layer>/<weight>``. Supported layers: InputLayer, Conv2D,
DepthwiseConv2D, BatchNormalization, ReLU, Activation (linear, relu, relu6, softmax),
ZeroPadding2D, Add, GlobalAveragePooling2D, Dropout, Dense. "same" padding is TensorFlow's,
exact. Anything else is a :class:`ConversionError` naming the layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx_prune.errors import ConversionError, MissingExtraError
from onnx_prune.paper.emit import FloatArray, OnnxBuilder
from onnx_prune.paper.fold import fold_into_convolutions
from onnx_prune.paper.tf_graph import INPUT_NAME, PAPER_EXTRA

Weights = dict[str, FloatArray]


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the flattened model: class, name, config and the layer names it reads."""

    kind: str
    name: str
    config: dict[str, Any]
    inputs: tuple[str, ...]


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise MissingExtraError(f"reading a Keras .h5 model needs h5py: {PAPER_EXTRA}") from None
    return h5py


def read_keras_h5(path: Path) -> tuple[list[KerasLayer], str, dict[str, Weights]]:
    """The layers in order, the output layer's name and every layer's weights."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as file:
            config = json.loads(_text(file.attrs["model_config"]))
            weights = _read_weights(file["model_weights"])
    except (OSError, KeyError, ValueError) as error:
        raise ConversionError(f"{path} is not a Keras HDF5 model ({error})") from None
    layers, outputs = _flatten(config, {})
    if len(outputs) != 1:
        raise ConversionError(f"{path}: models with {len(outputs)} outputs are not supported")
    return layers, outputs[0], weights


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_weights(group: Any) -> dict[str, Weights]:
    """``{layer: {weight: array}}``: a dataset's parent folder names its layer."""
    found: dict[str, Weights] = {}

    def visit(name: str, item: Any) -> None:
        if hasattr(item, "shape") and "/" in name:
            parts = name.split("/")
            found.setdefault(parts[-2], {})[parts[-1].split(":")[0]] = np.asarray(
                item[()], dtype=np.float32
            )

    group.visititems(visit)
    return found


def _history(argument: Any) -> Iterator[str]:
    """The layer names a Keras 3 call argument or a Keras 2 inbound entry refers to."""
    if isinstance(argument, dict) and argument.get("class_name") == "__keras_tensor__":
        yield str(argument["config"]["keras_history"][0])
    elif isinstance(argument, list) and argument and isinstance(argument[0], str):
        yield argument[0]  # Keras 2: [layer, node, tensor, kwargs]
    elif isinstance(argument, list):
        for item in argument:
            yield from _history(item)


def _inbound(layer: dict[str, Any]) -> tuple[str, ...]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ConversionError(f"layer {layer['config']['name']} is called twice: not supported")
    if not nodes:
        return ()
    node = nodes[0]
    return tuple(_history(node["args"] if isinstance(node, dict) else node))


def _flatten(config: dict[str, Any], rename: dict[str, str]) -> tuple[list[KerasLayer], list[str]]:
    """Layers of a functional config with nested models inlined; ``rename`` maps their inputs."""
    body = config["config"]
    layers: list[KerasLayer] = []
    alias = dict(rename)
    for layer in body["layers"]:
        name = layer["config"]["name"]
        inputs = tuple(alias.get(item, item) for item in _inbound(layer))
        if layer["class_name"] in ("Functional", "Model", "Sequential"):
            inner_inputs = [str(entry[0]) for entry in _layer_refs(layer["config"]["input_layers"])]
            inner, outputs = _flatten(layer, dict(zip(inner_inputs, inputs, strict=True)))
            layers.extend(inner)
            alias[name] = outputs[0]
            continue
        if layer["class_name"] == "InputLayer" and name in alias:
            continue
        layers.append(KerasLayer(layer["class_name"], name, layer["config"], inputs))
    outputs = [
        alias.get(str(entry[0]), str(entry[0])) for entry in _layer_refs(body["output_layers"])
    ]
    return layers, outputs


def _layer_refs(value: Any) -> list[list[Any]]:
    """``[name, node, tensor]`` or a list of them, always as a list."""
    return [value] if value and isinstance(value[0], str) else list(value)


def convert_keras_h5(path: Path, *, name: str | None = None) -> onnx.ModelProto:
    """The ONNX model of the Keras model in ``path``, input ``input`` [N, 3, H, W]."""
    layers, output, weights = read_keras_h5(path)
    builder = OnnxBuilder(name or path.stem)
    tensors: dict[str, str] = {}
    for layer in layers:
        handler = _HANDLERS.get(layer.kind)
        if handler is None:
            raise ConversionError(f"Keras layer {layer.kind} ({layer.name}) is not supported")
        sources = [tensors[item] for item in layer.inputs]
        tensors[layer.name] = handler(builder, layer, sources, weights.get(layer.name, {}))
    model = builder.build([tensors[output]], doc=f"converted from {path.name}")
    folded, _manifest = fold_into_convolutions(model)
    onnx.checker.check_model(folded)
    return folded


Handler = Callable[[OnnxBuilder, KerasLayer, list[str], Weights], str]


def _input(builder: OnnxBuilder, layer: KerasLayer, _x: list[str], _w: Weights) -> str:
    shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
    if not shape or len(shape) != 4 or None in shape[1:]:
        raise ConversionError(f"input {layer.name} must be NHWC with fixed H, W, C; got {shape}")
    return builder.add_input(INPUT_NAME, (1, int(shape[3]), int(shape[1]), int(shape[2])))


def _activation(builder: OnnxBuilder, name: str, x: str, activation: str) -> str:
    if activation == "linear":
        return x
    if activation in ("relu", "relu6"):
        return builder.clip(f"{name}/{activation}", x, 0.0, 6.0 if activation == "relu6" else None)
    if activation == "softmax":
        return builder.node("Softmax", [x], f"{name}/softmax", builder.shapes[x], axis=-1)
    raise ConversionError(f"activation {activation!r} of layer {name} is not supported")


def _conv(builder: OnnxBuilder, layer: KerasLayer, x: list[str], weights: Weights) -> str:
    config = layer.config
    if config.get("data_format", "channels_last") != "channels_last":
        raise ConversionError(f"layer {layer.name}: only channels_last is supported")
    if layer.kind == "DepthwiseConv2D":
        kernel = weights.get("depthwise_kernel", weights.get("kernel"))
        if kernel is None:
            raise ConversionError(f"layer {layer.name}: no depthwise kernel in the weights")
        height, width, channels, multiplier = kernel.shape
        weight = kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        group = int(channels)
    else:
        weight, group = weights["kernel"].transpose(3, 2, 0, 1), int(config.get("groups", 1))
    out = builder.conv(
        layer.name,
        x[0],
        np.ascontiguousarray(weight),
        strides=tuple(config["strides"]),
        padding=config["padding"],
        dilations=tuple(config.get("dilation_rate", (1, 1))),
        group=group,
    )
    if config.get("use_bias", True):
        out = builder.channel_affine(f"{layer.name}/bias", out, shift=weights["bias"])
    return _activation(builder, layer.name, out, config.get("activation", "linear"))


def _batch_norm(builder: OnnxBuilder, layer: KerasLayer, x: list[str], weights: Weights) -> str:
    axis = layer.config.get("axis", -1)
    if axis not in (-1, 3, [3], [-1]):
        raise ConversionError(f"layer {layer.name}: batch norm over axis {axis} is not supported")
    channels = builder.shapes[x[0]][1]
    gamma = weights.get("gamma", np.ones(channels, np.float32))
    beta = weights.get("beta", np.zeros(channels, np.float32))
    scale = gamma / np.sqrt(weights["moving_variance"] + float(layer.config.get("epsilon", 1e-3)))
    shift = beta - weights["moving_mean"] * scale
    return builder.channel_affine(
        layer.name, x[0], scale=scale.astype(np.float32), shift=shift.astype(np.float32)
    )


def _relu(builder: OnnxBuilder, layer: KerasLayer, x: list[str], _w: Weights) -> str:
    config = layer.config
    if config.get("negative_slope") or config.get("threshold"):
        raise ConversionError(
            f"layer {layer.name}: ReLU with a slope or threshold is not supported"
        )
    high = config.get("max_value")
    return builder.clip(layer.name, x[0], 0.0, None if high is None else float(high))


def _activation_layer(builder: OnnxBuilder, layer: KerasLayer, x: list[str], _w: Weights) -> str:
    return _activation(builder, layer.name, x[0], layer.config["activation"])


def _zero_padding(builder: OnnxBuilder, layer: KerasLayer, x: list[str], _w: Weights) -> str:
    padding = layer.config["padding"]
    if isinstance(padding, int):
        padding = [[padding, padding], [padding, padding]]
    (top, bottom), (left, right) = padding
    return builder.pad(layer.name, x[0], [top, left, bottom, right])


def _add(builder: OnnxBuilder, layer: KerasLayer, x: list[str], _w: Weights) -> str:
    if len(x) != 2:
        raise ConversionError(f"layer {layer.name}: Add of {len(x)} inputs is not supported")
    return builder.node("Add", x, layer.name, builder.shapes[x[0]])


def _global_pool(builder: OnnxBuilder, layer: KerasLayer, x: list[str], _w: Weights) -> str:
    batch, channels = builder.shapes[x[0]][:2]
    pooled = builder.node("GlobalAveragePool", x, layer.name, (batch, channels, 1, 1))
    if layer.config.get("keepdims"):
        return pooled
    return builder.flatten(f"{layer.name}/flatten", pooled)


def _dropout(_builder: OnnxBuilder, _layer: KerasLayer, x: list[str], _w: Weights) -> str:
    return x[0]


def _dense(builder: OnnxBuilder, layer: KerasLayer, x: list[str], weights: Weights) -> str:
    if len(builder.shapes[x[0]]) != 2:
        raise ConversionError(f"layer {layer.name}: Dense on a feature map is not supported")
    bias = weights.get("bias") if layer.config.get("use_bias", True) else None
    out = builder.dense(layer.name, x[0], weights["kernel"], bias)
    return _activation(builder, layer.name, out, layer.config.get("activation", "linear"))


_HANDLERS: dict[str, Handler] = {
    "InputLayer": _input,
    "Conv2D": _conv,
    "DepthwiseConv2D": _conv,
    "BatchNormalization": _batch_norm,
    "ReLU": _relu,
    "Activation": _activation_layer,
    "ZeroPadding2D": _zero_padding,
    "Add": _add,
    "GlobalAveragePooling2D": _global_pool,
    "Dropout": _dropout,
    "Dense": _dense,
}
