"""Darknet's layers as frozen dataclasses, with the constants of Darknet's arithmetic.

The cfg parser makes them, and the weights file, the ONNX emitter and the numpy forward pass of
the random weights read them; every fact about a layer that two of those need lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

BATCH_NORM_EPSILON = 1e-6
"""Darknet's batch norm: ``(x - mean) / (sqrt(variance) + 1e-6) * scale + bias``."""

ACTIVATIONS = frozenset(
    [
        "linear",
        "relu",
        "leaky",
        "relie",
        "logistic",
        "tanh",
        "elu",
        "selu",
        "hardtan",
        "ramp",
        "loggy",
    ]
)
"""The activations the converter supports: all of Debian's Darknet but ``plse``, ``stair`` and
``lhtan``."""

LEAKY_SLOPES = {"leaky": 0.1, "relie": 0.01}
"""The slope below zero of Darknet's two leaky ReLUs."""
RAMP_SLOPE = 0.1
"""Darknet's ``ramp``: ``relu(x) + 0.1 x``."""
SELU_ALPHA, SELU_SCALE = 1.6732, 1.0507
"""Darknet's ``selu`` constants, rounded as in its ``activations.h``."""


@dataclass(frozen=True)
class Shape:
    """A Darknet layer output: channels × height × width; ``image`` is False after a softmax."""

    channels: int
    height: int
    width: int
    image: bool = True

    @property
    def size(self) -> int:
        """The number of values per image."""
        return self.channels * self.height * self.width


def overlap(previous: Shape, added: Shape) -> Shape:
    """The part of the previous layer's output a shortcut adds to (Darknet's min over sizes)."""
    return Shape(
        min(previous.channels, added.channels),
        min(previous.height, added.height),
        min(previous.width, added.width),
    )


@dataclass(frozen=True)
class Layer:
    """One Darknet layer: its index, cfg line, ONNX name and input and output shapes."""

    index: int
    line: int
    name: str
    input_shape: Shape
    output_shape: Shape
    kind: ClassVar[str] = "layer"


@dataclass(frozen=True)
class ConvolutionalLayer(Layer):
    """``[convolutional]``: conv, optional batch norm, activation."""

    filters: int
    size: int
    stride: int
    padding: int
    groups: int
    batch_normalize: bool
    activation: str
    kind: ClassVar[str] = "convolutional"


@dataclass(frozen=True)
class ConnectedLayer(Layer):
    """``[connected]``: fully connected on the flattened C,H,W input; optional batch norm."""

    outputs: int
    batch_normalize: bool
    activation: str
    kind: ClassVar[str] = "connected"


WeightedLayer = ConvolutionalLayer | ConnectedLayer
"""The layers that have arrays in the weights file."""


@dataclass(frozen=True)
class MaxpoolLayer(Layer):
    """``[maxpool]`` with Darknet's padding: ``padding // 2`` before, the rest after."""

    size: int
    stride: int
    padding: int
    kind: ClassVar[str] = "maxpool"

    @property
    def pads(self) -> tuple[int, int]:
        """The padding before (top and left) and after (bottom and right)."""
        before = self.padding // 2
        return before, self.padding - before


@dataclass(frozen=True)
class AvgpoolLayer(Layer):
    """``[avgpool]``: global average pooling."""

    kind: ClassVar[str] = "avgpool"


@dataclass(frozen=True)
class RouteLayer(Layer):
    """``[route]``: channel concatenation of earlier layers (absolute indices)."""

    sources: tuple[int, ...]
    kind: ClassVar[str] = "route"


@dataclass(frozen=True)
class ShortcutLayer(Layer):
    """``[shortcut]``: ``alpha * previous + beta * layers[source]`` over the overlap, activation."""

    source: int
    source_shape: Shape
    stride: int
    alpha: float
    beta: float
    activation: str
    kind: ClassVar[str] = "shortcut"

    @property
    def overlap(self) -> Shape:
        """The part of the previous layer's output the ``from`` layer is added to."""
        return overlap(self.input_shape, self.source_shape)


@dataclass(frozen=True)
class CropLayer(Layer):
    """``[crop]`` at inference: the centre, times 2 minus 1 unless ``noadjust``."""

    adjust: bool
    kind: ClassVar[str] = "crop"

    @property
    def offset(self) -> tuple[int, int]:
        """The first row and column of the input that the centre crop keeps."""
        inner, outer = self.output_shape, self.input_shape
        return (outer.height - inner.height) // 2, (outer.width - inner.width) // 2


@dataclass(frozen=True)
class DropoutLayer(Layer):
    """``[dropout]``: the identity at inference."""

    kind: ClassVar[str] = "dropout"


@dataclass(frozen=True)
class SoftmaxLayer(Layer):
    """``[softmax]`` over the flattened input, in ``groups`` equal groups, at ``temperature``."""

    groups: int
    temperature: float
    kind: ClassVar[str] = "softmax"


@dataclass(frozen=True)
class CostLayer(Layer):
    """``[cost]``: training only; the network's output is the layer before it."""

    kind: ClassVar[str] = "cost"


@dataclass(frozen=True)
class DarknetNetwork:
    """A parsed cfg: the input shape from ``[net]`` and the layers in Darknet's order."""

    cfg_path: Path
    input_shape: Shape
    layers: tuple[Layer, ...]

    @property
    def output_layer(self) -> Layer:
        """The layer whose output Darknet returns: the last one that is not ``[cost]``."""
        return next(layer for layer in reversed(self.layers) if not isinstance(layer, CostLayer))
