"""Darknet's inference in numpy on N×C×H×W arrays, as :mod:`random_weights` calibrates with it.

It follows the same arithmetic as the ONNX graph :mod:`emit` builds (the tests check both against
a separate numpy Darknet and the real one); here it only has to be fast enough for two images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from onnx_prune.darknet.layers import (
    BATCH_NORM_EPSILON,
    LEAKY_SLOPES,
    RAMP_SLOPE,
    SELU_ALPHA,
    SELU_SCALE,
    AvgpoolLayer,
    ConnectedLayer,
    CropLayer,
    Layer,
    MaxpoolLayer,
    RouteLayer,
    ShortcutLayer,
    SoftmaxLayer,
    WeightedLayer,
)
from onnx_prune.darknet.weights_file import FloatArray, LayerArrays

_ACTIVATIONS: dict[str, Callable[[FloatArray], npt.NDArray[Any]]] = {
    "linear": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "leaky": lambda v: np.where(v > 0, v, LEAKY_SLOPES["leaky"] * v),
    "relie": lambda v: np.where(v > 0, v, LEAKY_SLOPES["relie"] * v),
    "ramp": lambda v: np.maximum(v, 0) + RAMP_SLOPE * v,
    "logistic": lambda v: 1 / (1 + np.exp(-v)),
    "loggy": lambda v: 2 / (1 + np.exp(-v)) - 1,
    "tanh": np.tanh,
    "elu": lambda v: np.where(v >= 0, v, np.expm1(np.minimum(v, 0))),
    "selu": lambda v: SELU_SCALE * np.where(v >= 0, v, SELU_ALPHA * np.expm1(np.minimum(v, 0))),
    "hardtan": lambda v: np.clip(v, -1, 1),
}


def apply_weights(layer: WeightedLayer, arrays: LayerArrays, x: FloatArray) -> FloatArray:
    """The layer's convolution or matrix product, without bias, as N×C×H×W."""
    if isinstance(layer, ConnectedLayer):
        flat = x.reshape(x.shape[0], -1) @ arrays["weights"].T
        return flat.reshape(x.shape[0], -1, 1, 1)
    pad, size, stride, groups = layer.padding, layer.size, layer.stride, layer.groups
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    n, c, height, width = windows.shape[:4]
    weights = arrays["weights"]
    if groups == 1:
        out = np.tensordot(windows, weights, axes=([1, 4, 5], [1, 2, 3]))
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    grouped = windows.reshape(n, groups, c // groups, height, width, size, size)
    kernels = weights.reshape(groups, -1, c // groups, size, size)
    out = np.einsum("ngchwij,gocij->ngohw", grouped, kernels, optimize=True)
    return np.asarray(out, dtype=np.float32).reshape(n, -1, height, width)


def finish_weighted(layer: WeightedLayer, arrays: LayerArrays, product: FloatArray) -> FloatArray:
    """Batch norm (when the layer has it), bias and activation after :func:`apply_weights`."""

    def channel(name: str) -> FloatArray:
        return arrays[name].reshape(1, -1, 1, 1)

    value = product
    if layer.batch_normalize:
        deviation = np.sqrt(channel("rolling_variance")) + np.float32(BATCH_NORM_EPSILON)
        value = (value - channel("rolling_mean")) / deviation * channel("scales")
    return activate(layer.activation, value + channel("biases"))


def activate(activation: str, x: FloatArray) -> FloatArray:
    """Darknet's activation ``activation`` of ``x``, as float32."""
    return _ACTIVATIONS[activation](x).astype(np.float32)


def forward_unweighted(layer: Layer, outputs: list[FloatArray]) -> FloatArray:
    """A layer without weights; ``outputs`` holds the input, then each earlier layer's output."""
    x = outputs[-1]
    if isinstance(layer, MaxpoolLayer):
        return _maxpool(layer, x)
    if isinstance(layer, AvgpoolLayer):
        return np.asarray(x.mean(axis=(2, 3), keepdims=True), dtype=np.float32)
    if isinstance(layer, RouteLayer):
        return np.concatenate([outputs[source + 1] for source in layer.sources], axis=1)
    if isinstance(layer, ShortcutLayer):
        return _shortcut(layer, x, outputs[layer.source + 1])
    if isinstance(layer, CropLayer):
        return _crop(layer, x)
    if isinstance(layer, SoftmaxLayer):
        return _softmax(layer, x)
    return x  # dropout, cost


def _maxpool(layer: MaxpoolLayer, x: FloatArray) -> FloatArray:
    before, after = layer.pads
    padded = np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (layer.size,) * 2, axis=(2, 3))
    pooled = windows[:, :, :: layer.stride, :: layer.stride].max(axis=(4, 5))
    return np.asarray(pooled, dtype=np.float32)


def _shortcut(layer: ShortcutLayer, previous: FloatArray, added: FloatArray) -> FloatArray:
    overlap, step = layer.overlap, layer.stride
    part = added[:, : overlap.channels, ::step, ::step][:, :, : overlap.height, : overlap.width]
    out = previous.copy()
    region = out[:, : overlap.channels, : overlap.height, : overlap.width]
    region[...] = layer.alpha * region + layer.beta * part
    return activate(layer.activation, out)


def _crop(layer: CropLayer, x: FloatArray) -> FloatArray:
    (top, left), inner = layer.offset, layer.output_shape
    cropped = x[:, :, top : top + inner.height, left : left + inner.width]
    return cropped * 2 - 1 if layer.adjust else cropped


def _softmax(layer: SoftmaxLayer, x: FloatArray) -> FloatArray:
    grouped = x.reshape(x.shape[0], layer.groups, -1) / layer.temperature
    exponentials = np.exp(grouped - grouped.max(axis=2, keepdims=True))
    probabilities = np.asarray(exponentials / exponentials.sum(axis=2, keepdims=True), np.float32)
    return probabilities.reshape(x.shape[0], -1, 1, 1)
