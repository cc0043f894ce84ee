"""A small Darknet in plain numpy, written from Darknet's C source, to check the converter against.

It knows only what the tests use and shares no code with ``onnx_prune.darknet``: networks are
lists of ``(kind, options)`` pairs that render to a cfg, parameters are drawn on first use, the
weights file is written here in Darknet's order, and each layer follows the C loops
(``forward_*_layer`` in Darknet's ``src/``) rather than the converter's ONNX graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Section = tuple[str, dict[str, object]]
Array = np.ndarray

FLT_MAX = np.float32(3.4028234663852886e38)


def cfg_text(sections: Sequence[Section], *, height: int, width: int, channels: int = 3) -> str:
    """The cfg file for ``sections`` after a ``[net]`` of the given input size."""
    lines = ["[net]", f"height={height}", f"width={width}", f"channels={channels}", ""]
    for kind, options in sections:
        lines.append(f"[{kind}]")
        lines.extend(f"{key}={value}" for key, value in options.items())
        lines.append("")
    return "\n".join(lines)


class Parameters:
    """Each layer's arrays by Darknet name, drawn from ``rng`` the first time they are asked for."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.arrays: dict[int, dict[str, Array]] = {}
        self._rng = rng

    def get(self, index: int, name: str, shape: tuple[int, ...]) -> Array:
        layer = self.arrays.setdefault(index, {})
        if name not in layer:
            layer[name] = self._draw(name, shape)
        return layer[name]

    def _draw(self, name: str, shape: tuple[int, ...]) -> Array:
        rng = self._rng
        if name == "weights":
            fan_in = math.prod(shape[1:])
            values = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif name == "scales":
            values = rng.uniform(0.5, 1.5, shape)
        elif name == "rolling_variance":
            values = rng.uniform(0.2, 2.0, shape)
        else:  # biases, rolling_mean
            values = rng.normal(0.0, 0.2, shape)
        return values.astype(np.float32)


@dataclass(frozen=True)
class Header:
    """A weights file's header: its version, whether "seen" is 64-bit, and whether connected
    weights are stored as [inputs, outputs] (as Darknet reads them when major or minor > 1000)."""

    version: tuple[int, int, int] = (0, 2, 0)
    wide_seen: bool = True
    transposed: bool = False


CURRENT_HEADER = Header()
OLD_HEADER = Header((0, 1, 0), wide_seen=False)
TRANSPOSED_HEADER = Header((1001, 0, 0), wide_seen=False, transposed=True)


_ORDER = {
    "convolutional": ("biases", "scales", "rolling_mean", "rolling_variance", "weights"),
    "connected": ("biases", "weights", "scales", "rolling_mean", "rolling_variance"),
}


def write_weights(
    path: Path,
    sections: Sequence[Section],
    parameters: Parameters,
    *,
    header: Header = CURRENT_HEADER,
) -> int:
    """Write the weights file in Darknet's layout; return how many floats it holds."""
    arrays: list[Array] = []
    for index, (kind, _) in enumerate(sections):
        for name in _ORDER.get(kind, ()):
            if name in parameters.arrays.get(index, {}):
                value = parameters.arrays[index][name]
                if header.transposed and kind == "connected" and name == "weights":
                    value = value.T  # old files store [inputs, outputs]
                arrays.append(np.ascontiguousarray(value, dtype="<f4").reshape(-1))
    with path.open("wb") as file:
        np.array(header.version, "<i4").tofile(file)
        np.array([12345], "<i8" if header.wide_seen else "<i4").tofile(file)
        for array in arrays:
            array.tofile(file)
    return sum(array.size for array in arrays)


def forward(sections: Sequence[Section], parameters: Parameters, image: Array) -> list[Array]:
    """Run one C×H×W image through the network; return every layer's output (C×H×W or flat)."""
    outputs: list[Array] = []
    x = image.astype(np.float32)
    for index, (kind, options) in enumerate(sections):
        x = _LAYERS[kind](index, options, parameters, x, outputs)
        outputs.append(x)
    return outputs


def _option(options: dict[str, object], key: str, default: object) -> object:
    return options.get(key, default)


def _int(options: dict[str, object], key: str, default: int) -> int:
    return int(str(_option(options, key, default)))


def _float(options: dict[str, object], key: str, default: float) -> float:
    return float(str(_option(options, key, default)))


def activate(x: Array, activation: str) -> Array:
    """Darknet's activations.h, element by element."""
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        table: dict[str, Array] = {
            "linear": x,
            "relu": x * (x > 0),
            "leaky": np.where(x > 0, x, 0.1 * x),
            "relie": np.where(x > 0, x, 0.01 * x),
            "ramp": x * (x > 0) + 0.1 * x,
            "logistic": 1.0 / (1.0 + np.exp(-x)),
            "loggy": 2.0 / (1.0 + np.exp(-x)) - 1,
            "tanh": np.tanh(x),
            "elu": (x >= 0) * x + (x < 0) * (np.exp(np.minimum(x, 0)) - 1),
            "selu": (x >= 0) * 1.0507 * x
            + (x < 0) * 1.0507 * 1.6732 * (np.exp(np.minimum(x, 0)) - 1),
            "hardtan": np.clip(x, -1, 1),
        }
    return table[activation].astype(np.float32)


def _batch_norm(index: int, parameters: Parameters, x: Array, n: int) -> Array:
    """normalize_cpu, scale_bias, add_bias: the epsilon is added after the square root."""
    mean = parameters.get(index, "rolling_mean", (n,))
    variance = parameters.get(index, "rolling_variance", (n,))
    scales = parameters.get(index, "scales", (n,))
    shape = (n,) + (1,) * (x.ndim - 1)
    x = (x - mean.reshape(shape)) / (np.sqrt(variance.reshape(shape)) + np.float32(0.000001))
    scaled: Array = x * scales.reshape(shape)
    return scaled


def _convolutional(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, _: list[Array]
) -> Array:
    channels, height, width = x.shape
    n, size = _int(options, "filters", 1), _int(options, "size", 1)
    stride, groups = _int(options, "stride", 1), _int(options, "groups", 1)
    pad = size // 2 if _int(options, "pad", 0) else _int(options, "padding", 0)
    weights = parameters.get(index, "weights", (n, channels // groups, size, size))
    biases = parameters.get(index, "biases", (n,))
    out_h, out_w = (height + 2 * pad - size) // stride + 1, (width + 2 * pad - size) // stride + 1
    padded = np.zeros((channels, height + 2 * pad, width + 2 * pad), np.float64)
    padded[:, pad : pad + height, pad : pad + width] = x
    out = np.zeros((n, out_h, out_w), np.float64)
    per_group_in, per_group_out = channels // groups, n // groups
    for f in range(n):
        group = f // per_group_out
        for c in range(per_group_in):
            plane = padded[group * per_group_in + c]
            for i in range(size):
                for j in range(size):
                    rows = plane[i : i + stride * out_h : stride, j : j + stride * out_w : stride]
                    out[f] += weights[f, c, i, j] * rows
    out = out.astype(np.float32)
    if _int(options, "batch_normalize", 0):
        out = _batch_norm(index, parameters, out, n)
    out = out + biases.reshape(n, 1, 1)
    return activate(out, str(_option(options, "activation", "logistic")))


def _connected(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, _: list[Array]
) -> Array:
    inputs, n = x.size, _int(options, "output", 1)
    weights = parameters.get(index, "weights", (n, inputs))  # Darknet's [outputs, inputs]
    biases = parameters.get(index, "biases", (n,))
    out = (weights.astype(np.float64) @ x.reshape(-1).astype(np.float64)).astype(np.float32)
    if _int(options, "batch_normalize", 0):
        out = _batch_norm(index, parameters, out, n)
    out = out + biases
    return activate(out, str(_option(options, "activation", "logistic")))


def _maxpool(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, _: list[Array]
) -> Array:
    stride = _int(options, "stride", 1)
    size = _int(options, "size", stride)
    pad = _int(options, "padding", size - 1)
    channels, height, width = x.shape
    out_h, out_w = (height + pad - size) // stride + 1, (width + pad - size) // stride + 1
    offset = -(pad // 2)
    out = np.full((channels, out_h, out_w), -FLT_MAX, np.float32)
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    row, col = offset + i * stride + n, offset + j * stride + m
                    if 0 <= row < height and 0 <= col < width:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, row, col])
    return out


def _avgpool(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, _: list[Array]
) -> Array:
    mean: Array = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    return mean.astype(np.float32)


def _earlier(index: int, text: str) -> int:
    value = int(text)
    return index + value if value < 0 else value


def _route(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, outputs: list[Array]
) -> Array:
    sources = [_earlier(index, text) for text in str(options["layers"]).split(",")]
    return np.concatenate([outputs[source] for source in sources], axis=0)


def _shortcut(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, outputs: list[Array]
) -> Array:
    """shortcut_cpu: ``add`` is the ``from`` layer (w1, h1, c1), ``out`` the previous one."""
    add = outputs[_earlier(index, str(options["from"]))]
    out = x.copy()
    c1, h1, w1 = add.shape
    c2, h2, w2 = out.shape
    stride, sample = max(1, w1 // w2), max(1, w2 // w1)
    s1, s2 = _float(options, "alpha", 1.0), _float(options, "beta", 1.0)
    for k in range(min(c1, c2)):
        for j in range(min(h1, h2)):
            for i in range(min(w1, w2)):
                value = s1 * out[k, j * sample, i * sample] + s2 * add[k, j * stride, i * stride]
                out[k, j * sample, i * sample] = value
    return activate(out, str(_option(options, "activation", "linear")))


def _crop(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, _: list[Array]
) -> Array:
    out_h, out_w = _int(options, "crop_height", 1), _int(options, "crop_width", 1)
    _, height, width = x.shape
    dh, dw = (height - out_h) // 2, (width - out_w) // 2
    scale, trans = (1.0, 0.0) if _int(options, "noadjust", 0) else (2.0, -1.0)
    return (x[:, dh : dh + out_h, dw : dw + out_w] * scale + trans).astype(np.float32)


def _identity(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, _: list[Array]
) -> Array:
    return x


def _softmax(
    index: int, options: dict[str, object], parameters: Parameters, x: Array, _: list[Array]
) -> Array:
    groups, temperature = _int(options, "groups", 1), _float(options, "temperature", 1.0)
    flat = x.reshape(groups, -1).astype(np.float64)
    largest = flat.max(axis=1, keepdims=True)
    exponentials = np.exp(flat / temperature - largest / temperature)
    probabilities: Array = exponentials / exponentials.sum(axis=1, keepdims=True)
    return probabilities.reshape(-1).astype(np.float32)


_LAYERS = {
    "convolutional": _convolutional,
    "connected": _connected,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "route": _route,
    "shortcut": _shortcut,
    "crop": _crop,
    "dropout": _identity,
    "cost": _identity,
    "softmax": _softmax,
}
