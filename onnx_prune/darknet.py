"""Convert a Darknet network (``.cfg`` and ``.weights``) to ONNX; write random Darknet weights.

The semantics are those of pjreddie's Darknet as Debian packages it (git 2018-09-14), checked
against that binary by the tests: the cfg grammar, each layer's arithmetic at inference and the
weights-file layout. Darknet's own quirks are kept, because the paper's numbers come from them:

- batch norm divides by ``sqrt(variance) + 1e-6`` (the epsilon sits outside the square root);
- ``[maxpool]`` pads ``size - 1`` by default, ``padding // 2`` before and the rest after;
- ``[crop]`` takes the centre and maps the input from [0, 1] to [-1, 1] (unless ``noadjust``);
- ``[shortcut]`` between layers of different sizes adds the overlapping channels, subsampling the
  larger input (Darknet's ResNet-50 has such shortcuts instead of projection convolutions).

``transpose=1`` in a ``[connected]`` section (the paper authors' fork, in their alexnet.cfg) only
selects the in-memory layout of their gemm: the weights file and the arithmetic are unchanged,
and Debian's Darknet ignores the option, so the converter does too.

The ONNX model (opset 13) has one input ``input`` of shape ``[N, C, H, W]`` (RGB in [0, 1], as
Darknet feeds it) and one output ``output``, the last non-cost layer. Each Darknet layer that
computes something has a main node named after its index, e.g. ``layer_003_convolutional``;
batch norm and activation follow as ``layer_003_convolutional/batch_norm`` and
``layer_003_convolutional/leaky``, and the layer's last tensor (Darknet's layer output) is named
``layer_003_convolutional`` too. ``[dropout]``, ``[cost]`` and one-input ``[route]`` layers are
identities at inference and emit no node.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.errors import ConversionError
from onnx_prune.load import RANDOM_WEIGHTS_KEY

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

OPSET = 13
OUTPUT_NAME = "output"
INPUT_NAME = "input"
BATCH_NORM_EPSILON = 1e-6
"""Darknet's batch norm: ``(x - mean) / (sqrt(variance) + 1e-6) * scale + bias``."""

RANDOM_REVISION = int.from_bytes(b"RAND", "little")
"""The header ``revision`` :func:`write_random_weights` writes; Darknet ignores the field."""

_ALIASES = {
    "conv": "convolutional",
    "conn": "connected",
    "max": "maxpool",
    "avg": "avgpool",
    "soft": "softmax",
    "network": "net",
}
# Options every Darknet layer reads that only matter for training.
_TRAINING_OPTIONS = frozenset(
    {"truth", "onlyforward", "stopbackward", "dontsave", "learning_rate", "smooth"}
)
# Options that change which floats the weights file holds for a layer.
_LOADING_OPTIONS = ("dontload", "numload", "dontloadscales")
_ACTIVATIONS = frozenset(
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
_HEADER_INTS = 3


# --------------------------------------------------------------------------------------------
# The cfg file


@dataclass(frozen=True)
class _Option:
    key: str
    value: str
    line: int


@dataclass(frozen=True)
class _Section:
    path: Path
    kind: str
    line: int
    options: tuple[_Option, ...]

    def find(self, key: str) -> _Option | None:
        """The first option named ``key`` (Darknet uses the first of duplicates)."""
        return next((option for option in self.options if option.key == key), None)

    def error(self, message: str, *, line: int | None = None) -> ConversionError:
        """An error naming the cfg file, the line and this section."""
        return ConversionError(f"{self.path}:{line or self.line}: [{self.kind}] {message}")


def _read_sections(cfg_path: Path) -> list[_Section]:
    text = _read_cfg_text(cfg_path)
    sections: list[_Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())  # Darknet strips every whitespace character
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append(_start_section(cfg_path, line, number))
        elif not sections:
            raise ConversionError(
                f"{cfg_path}:{number}: option {line!r} comes before any [section]: "
                "a Darknet cfg starts with [net]"
            )
        else:
            section = sections[-1]
            sections[-1] = _add_option(section, line, number)
    return sections


def _read_cfg_text(cfg_path: Path) -> str:
    if not cfg_path.is_file():
        raise ConversionError(f"{cfg_path}: no such Darknet cfg file: check the path")
    try:
        return cfg_path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ConversionError(f"{cfg_path}: cannot read the cfg file: {error.strerror}") from None


def _start_section(cfg_path: Path, line: str, number: int) -> _Section:
    if not line.endswith("]") or len(line) < 3:
        raise ConversionError(f"{cfg_path}:{number}: {line!r} is not a [section] header")
    kind = line[1:-1].lower()
    return _Section(cfg_path, _ALIASES.get(kind, kind), number, ())


def _add_option(section: _Section, line: str, number: int) -> _Section:
    key, separator, value = line.partition("=")
    if not separator or not key:
        raise section.error(f"expected key=value, found {line!r}", line=number)
    if section.kind != "net" and section.find(key) is not None:
        raise section.error(f"option {key!r} is given twice: keep one", line=number)
    return _Section(
        section.path, section.kind, section.line, (*section.options, _Option(key, value, number))
    )


def _get_int(section: _Section, key: str, default: int) -> int:
    option = section.find(key)
    if option is None:
        return default
    try:
        return int(option.value)
    except ValueError:
        raise section.error(f"{key}={option.value} is not an integer", line=option.line) from None


def _get_float(section: _Section, key: str, default: float) -> float:
    option = section.find(key)
    if option is None:
        return default
    try:
        return float(option.value)
    except ValueError:
        raise section.error(f"{key}={option.value} is not a number", line=option.line) from None


def _get_activation(section: _Section, default: str) -> str:
    option = section.find("activation")
    if option is None:
        return default
    if option.value not in _ACTIVATIONS:
        raise section.error(
            f"activation={option.value} is not supported (supported: "
            f"{', '.join(sorted(_ACTIVATIONS))})",
            line=option.line,
        )
    return option.value


def _check_options(section: _Section, used: str, *, ignored: str = "") -> None:
    """Refuse options the converter does not know, and non-default weight-loading options."""
    known = set(used.split()) | set(ignored.split()) | _TRAINING_OPTIONS | set(_LOADING_OPTIONS)
    for option in section.options:
        if option.key not in known:
            raise section.error(
                f"option {option.key!r} is not supported by the converter (it reads: "
                f"{', '.join(used.split()) or 'no options'}); remove it or convert another way",
                line=option.line,
            )
    for key in _LOADING_OPTIONS:
        _require_default(section, key, 0)


def _require_default(section: _Section, key: str, default: int) -> None:
    option = section.find(key)
    if option is not None and _get_int(section, key, default) != default:
        raise section.error(
            f"{key}={option.value} is not supported by the converter; remove it",
            line=option.line,
        )


# --------------------------------------------------------------------------------------------
# Parsed layers


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


@dataclass(frozen=True)
class MaxpoolLayer(Layer):
    """``[maxpool]`` with Darknet's padding: ``padding // 2`` before, the rest after."""

    size: int
    stride: int
    padding: int
    kind: ClassVar[str] = "maxpool"


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


@dataclass(frozen=True)
class CropLayer(Layer):
    """``[crop]`` at inference: the centre, times 2 minus 1 unless ``noadjust``."""

    adjust: bool
    kind: ClassVar[str] = "crop"


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


@dataclass(frozen=True)
class _Context:
    """What a layer parser needs besides its section: its index, name and earlier outputs."""

    index: int
    name: str
    shapes: tuple[Shape, ...]  # the [net] input first, then one per earlier layer

    @property
    def input_shape(self) -> Shape:
        return self.shapes[-1]


def parse_darknet_cfg(cfg_path: Path) -> DarknetNetwork:
    """Parse a Darknet cfg into layers with their shapes, refusing what cannot be converted."""
    sections = _read_sections(Path(cfg_path))
    if not sections or sections[0].kind != "net":
        raise ConversionError(f"{cfg_path}: the first section must be [net] (or [network])")
    shapes = [_parse_net(sections[0])]
    width = max(3, len(str(len(sections) - 2)))
    layers: list[Layer] = []
    for index, section in enumerate(sections[1:]):
        name = f"layer_{index:0{width}d}_{section.kind}"
        layer = _parse_layer(section, _Context(index, name, tuple(shapes)))
        layers.append(layer)
        shapes.append(layer.output_shape)
    if all(isinstance(layer, CostLayer) for layer in layers):
        raise ConversionError(f"{cfg_path}: no layer after [net] but [cost]: nothing to convert")
    return DarknetNetwork(Path(cfg_path), shapes[0], tuple(layers))


def _parse_net(section: _Section) -> Shape:
    shape = Shape(
        _get_int(section, "channels", 0),
        _get_int(section, "height", 0),
        _get_int(section, "width", 0),
    )
    if min(shape.channels, shape.height, shape.width) <= 0:
        raise section.error("height, width and channels must all be given and positive")
    return shape


def _parse_layer(section: _Section, context: _Context) -> Layer:
    parser = _PARSERS.get(section.kind)
    if parser is None:
        raise section.error(
            f"layers of type [{section.kind}] are not supported by the converter "
            f"(supported: {', '.join(_PARSERS)}); use a cfg without them"
        )
    return parser(section, context)


def _base(
    section: _Section, context: _Context, output: Shape
) -> tuple[int, int, str, Shape, Shape]:
    """The fields every layer has, in :class:`Layer`'s order."""
    return context.index, section.line, context.name, context.input_shape, output


def _require_image(section: _Section, context: _Context) -> Shape:
    shape = context.input_shape
    if not shape.image:
        raise section.error("the layer before it must output an image, not a softmax vector")
    return shape


def _parse_convolutional(section: _Section, context: _Context) -> Layer:
    _check_options(
        section,
        "filters size stride pad padding groups activation batch_normalize binary xnor flipped",
        ignored="dot",
    )
    for key in ("binary", "xnor", "flipped"):
        _require_default(section, key, 0)
    shape = _require_image(section, context)
    size = _get_int(section, "size", 1)
    filters = _get_int(section, "filters", 1)
    stride = _get_int(section, "stride", 1)
    groups = _get_int(section, "groups", 1)
    padding = size // 2 if _get_int(section, "pad", 0) else _get_int(section, "padding", 0)
    _check_convolution(section, shape, filters, size, stride, groups, padding)
    out_height = (shape.height + 2 * padding - size) // stride + 1
    out_width = (shape.width + 2 * padding - size) // stride + 1
    return ConvolutionalLayer(
        *_base(section, context, Shape(filters, out_height, out_width)),
        filters=filters,
        size=size,
        stride=stride,
        padding=padding,
        groups=groups,
        batch_normalize=bool(_get_int(section, "batch_normalize", 0)),
        activation=_get_activation(section, "logistic"),
    )


def _check_convolution(
    section: _Section, shape: Shape, filters: int, size: int, stride: int, groups: int, padding: int
) -> None:
    if min(filters, size, stride, groups) <= 0 or padding < 0:
        raise section.error("filters, size, stride and groups must be positive, padding >= 0")
    if shape.channels % groups or filters % groups:
        raise section.error(
            f"groups={groups} must divide both the {shape.channels} input channels "
            f"and filters={filters}"
        )
    if min(shape.height, shape.width) + 2 * padding < size:
        raise section.error(
            f"size={size} is larger than the padded {shape.height}x{shape.width} input"
        )


def _parse_connected(section: _Section, context: _Context) -> Layer:
    # `transpose` comes from the paper authors' fork: a memory layout for their gemm; the
    # weights file keeps Darknet's [outputs, inputs] order, so the network is the same.
    _check_options(section, "output activation batch_normalize", ignored="transpose")
    outputs = _get_int(section, "output", 1)
    if outputs <= 0:
        raise section.error(f"output={outputs} must be positive")
    return ConnectedLayer(
        *_base(section, context, Shape(outputs, 1, 1)),
        outputs=outputs,
        batch_normalize=bool(_get_int(section, "batch_normalize", 0)),
        activation=_get_activation(section, "logistic"),
    )


def _parse_maxpool(section: _Section, context: _Context) -> Layer:
    _check_options(section, "size stride padding")
    shape = _require_image(section, context)
    stride = _get_int(section, "stride", 1)
    size = _get_int(section, "size", stride)
    padding = _get_int(section, "padding", size - 1)
    if min(size, stride) <= 0 or padding < 0 or padding - padding // 2 >= size:
        raise section.error(
            f"size={size}, stride={stride}, padding={padding}: size and stride must be "
            "positive and padding at least 0 and below 2*size"
        )
    out_height = (shape.height + padding - size) // stride + 1
    out_width = (shape.width + padding - size) // stride + 1
    if min(out_height, out_width) <= 0:
        raise section.error(f"size={size} is larger than the {shape.height}x{shape.width} input")
    return MaxpoolLayer(
        *_base(section, context, Shape(shape.channels, out_height, out_width)),
        size=size,
        stride=stride,
        padding=padding,
    )


def _parse_avgpool(section: _Section, context: _Context) -> Layer:
    _check_options(section, "")
    shape = _require_image(section, context)
    return AvgpoolLayer(*_base(section, context, Shape(shape.channels, 1, 1)))


def _parse_route(section: _Section, context: _Context) -> Layer:
    _check_options(section, "layers")
    option = section.find("layers")
    if option is None:
        raise section.error("a [route] needs layers=..., e.g. layers=-1,-4")
    sources = tuple(
        _resolve_index(section, context, text, option) for text in option.value.split(",")
    )
    shapes = [context.shapes[source + 1] for source in sources]
    first = shapes[0]
    if any(
        (s.height, s.width, s.image) != (first.height, first.width, first.image) for s in shapes
    ):
        sizes = ", ".join(f"{s.channels}x{s.height}x{s.width}" for s in shapes)
        raise section.error(
            f"layers={option.value} have different sizes ({sizes})", line=option.line
        )
    output = Shape(sum(s.channels for s in shapes), first.height, first.width, first.image)
    return RouteLayer(*_base(section, context, output), sources=sources)


def _resolve_index(section: _Section, context: _Context, text: str, option: _Option) -> int:
    try:
        index = int(text)
    except ValueError:
        raise section.error(
            f"{option.key}={option.value}: {text!r} is not a layer index", line=option.line
        ) from None
    absolute = context.index + index if index < 0 else index
    if not 0 <= absolute < context.index:
        raise section.error(
            f"{option.key}={option.value}: layer {index} is not an earlier layer "
            f"(this is layer {context.index})",
            line=option.line,
        )
    return absolute


def _parse_shortcut(section: _Section, context: _Context) -> Layer:
    _check_options(section, "from activation alpha beta")
    option = section.find("from")
    if option is None:
        raise section.error("a [shortcut] needs from=..., e.g. from=-3")
    source = _resolve_index(section, context, option.value, option)
    previous = _require_image(section, context)
    added = context.shapes[source + 1]
    stride = _shortcut_stride(section, previous, added)
    alpha = _get_float(section, "alpha", 1.0)
    if alpha != 1.0 and _overlap(previous, added) != previous:
        raise section.error("alpha other than 1 is supported only between layers of equal size")
    return ShortcutLayer(
        *_base(section, context, previous),
        source=source,
        source_shape=added,
        stride=stride,
        alpha=alpha,
        beta=_get_float(section, "beta", 1.0),
        activation=_get_activation(section, "linear"),
    )


def _overlap(previous: Shape, added: Shape) -> Shape:
    """The part of the previous layer's output a shortcut adds to (Darknet's min over sizes)."""
    return Shape(
        min(previous.channels, added.channels),
        min(previous.height, added.height),
        min(previous.width, added.width),
    )


def _shortcut_stride(section: _Section, previous: Shape, added: Shape) -> int:
    """Darknet's subsampling step from the ``from`` layer to the previous one (1 when equal)."""
    if not added.image:
        raise section.error("from= must name a layer that outputs an image")
    stride = (added.width // previous.width, added.height // previous.height)
    sample = (previous.width // added.width, previous.height // added.height)
    if stride[0] != stride[1] or sample[0] != sample[1]:
        raise section.error("from= names a layer whose width and height scale differently")
    if sample[0] > 1:
        raise section.error(
            f"from= names a {added.width}x{added.height} layer, smaller than the previous "
            f"layer's {previous.width}x{previous.height}: upsampling shortcuts are not supported"
        )
    return max(1, stride[0])


def _parse_crop(section: _Section, context: _Context) -> Layer:
    _check_options(
        section,
        "crop_height crop_width noadjust",
        ignored="flip angle saturation exposure shift",
    )
    shape = _require_image(section, context)
    height = _get_int(section, "crop_height", 1)
    width = _get_int(section, "crop_width", 1)
    if not (0 < height <= shape.height and 0 < width <= shape.width):
        raise section.error(
            f"crop {height}x{width} must fit in the {shape.height}x{shape.width} input"
        )
    return CropLayer(
        *_base(section, context, Shape(shape.channels, height, width)),
        adjust=not _get_int(section, "noadjust", 0),
    )


def _parse_dropout(section: _Section, context: _Context) -> Layer:
    _check_options(section, "", ignored="probability")
    return DropoutLayer(*_base(section, context, context.input_shape))


def _parse_softmax(section: _Section, context: _Context) -> Layer:
    _check_options(section, "groups temperature spatial", ignored="noloss")
    _require_default(section, "spatial", 0)
    inputs = context.input_shape.size
    groups = _get_int(section, "groups", 1)
    temperature = _get_float(section, "temperature", 1.0)
    if groups <= 0 or inputs % groups or temperature <= 0:
        raise section.error(
            f"groups={groups} must divide the {inputs} inputs, and temperature must be positive"
        )
    return SoftmaxLayer(
        *_base(section, context, Shape(inputs, 1, 1, image=False)),
        groups=groups,
        temperature=temperature,
    )


def _parse_cost(section: _Section, context: _Context) -> Layer:
    _check_options(section, "", ignored="type scale ratio noobject_scale thresh")
    shape = context.input_shape
    return CostLayer(*_base(section, context, Shape(shape.size, 1, 1, image=False)))


_PARSERS: dict[str, Callable[[_Section, _Context], Layer]] = {
    "convolutional": _parse_convolutional,
    "connected": _parse_connected,
    "maxpool": _parse_maxpool,
    "avgpool": _parse_avgpool,
    "route": _parse_route,
    "shortcut": _parse_shortcut,
    "crop": _parse_crop,
    "dropout": _parse_dropout,
    "softmax": _parse_softmax,
    "cost": _parse_cost,
}


# --------------------------------------------------------------------------------------------
# The weights file


@dataclass(frozen=True)
class _Block:
    """One array of a layer in the weights file, in file order."""

    layer: Layer
    name: str  # biases, scales, rolling_mean, rolling_variance or weights
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _Header:
    major: int
    minor: int
    revision: int
    size: int  # bytes, including the "seen" counter

    @property
    def transposed(self) -> bool:
        """Darknet reads connected weights as [inputs, outputs] when major or minor > 1000."""
        return self.major > 1000 or self.minor > 1000


def _weight_blocks(layer: Layer) -> tuple[_Block, ...]:
    """The arrays Darknet reads for ``layer``, in its order (conv and connected differ)."""
    if isinstance(layer, ConvolutionalLayer):
        n = layer.filters
        kernel = (n, layer.input_shape.channels // layer.groups, layer.size, layer.size)
        norm = _batch_norm_blocks(layer, n) if layer.batch_normalize else ()
        return (_Block(layer, "biases", (n,)), *norm, _Block(layer, "weights", kernel))
    if isinstance(layer, ConnectedLayer):
        n = layer.outputs
        norm = _batch_norm_blocks(layer, n) if layer.batch_normalize else ()
        matrix = (n, layer.input_shape.size)
        return (_Block(layer, "biases", (n,)), _Block(layer, "weights", matrix), *norm)
    return ()


def _batch_norm_blocks(layer: Layer, n: int) -> tuple[_Block, ...]:
    names = ("scales", "rolling_mean", "rolling_variance")
    return tuple(_Block(layer, name, (n,)) for name in names)


def _all_blocks(network: DarknetNetwork) -> list[_Block]:
    return [block for layer in network.layers for block in _weight_blocks(layer)]


def _read_header(weights_path: Path) -> _Header:
    try:
        with weights_path.open("rb") as file:
            raw = file.read(4 * _HEADER_INTS + 8)
    except FileNotFoundError:
        raise ConversionError(
            f"{weights_path}: no such Darknet weights file: check the path"
        ) from None
    except OSError as error:
        raise ConversionError(
            f"{weights_path}: cannot read the weights file: {error.strerror}"
        ) from None
    if len(raw) < 4 * _HEADER_INTS + 4:
        raise ConversionError(
            f"{weights_path} is {len(raw)} bytes long, too short for a Darknet weights header: "
            "is it a .weights file?"
        )
    major, minor, revision = (int(v) for v in np.frombuffer(raw, "<i4", count=_HEADER_INTS))
    if not (0 <= major <= 2000 and 0 <= minor <= 2000):
        raise ConversionError(
            f"{weights_path} does not start with a Darknet weights header (major={major}, "
            f"minor={minor}): is it a .weights file?"
        )
    wide_seen = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    return _Header(major, minor, revision, 4 * _HEADER_INTS + (8 if wide_seen else 4))


def _load_floats(weights_path: Path, network: DarknetNetwork, header: _Header) -> FloatArray:
    payload = weights_path.stat().st_size - header.size
    blocks = _all_blocks(network)
    needed = sum(block.count for block in blocks)
    if payload % 4:
        raise ConversionError(
            f"{weights_path}: {payload} bytes after the header are not a whole number of float32 "
            "values: the file is truncated or not a Darknet weights file"
        )
    _check_float_count(weights_path, network, blocks, payload // 4, needed)
    if needed == 0:
        return np.zeros(0, np.float32)
    return np.memmap(weights_path, dtype="<f4", mode="r", offset=header.size, shape=(needed,))


def _check_float_count(
    weights_path: Path, network: DarknetNetwork, blocks: list[_Block], found: int, needed: int
) -> None:
    if found > needed:
        raise ConversionError(
            f"{weights_path} is {found - needed} floats long for {network.cfg_path} (the cfg "
            f"needs {needed}, the file has {found}): use the weights file made for this cfg"
        )
    if found < needed:
        end = _block_at(blocks, found)
        raise ConversionError(
            f"{weights_path} is {needed - found} floats short for {network.cfg_path} (the cfg "
            f"needs {needed}, the file has {found}; it ends in the {end.name} of "
            f"{end.layer.name}, cfg line {end.layer.line}): use the weights file made for this cfg"
        )


def _block_at(blocks: list[_Block], position: int) -> _Block:
    offset = 0
    for block in blocks:
        offset += block.count
        if offset > position:
            return block
    return blocks[-1]


def _read_weights(
    weights_path: Path, network: DarknetNetwork
) -> tuple[_Header, dict[int, dict[str, FloatArray]]]:
    """The header and each layer's arrays, checked against the cfg's float count."""
    header = _read_header(weights_path)
    floats = _load_floats(weights_path, network, header)
    arrays: dict[int, dict[str, FloatArray]] = {}
    offset = 0
    for block in _all_blocks(network):
        values = np.array(floats[offset : offset + block.count], dtype=np.float32)
        arrays.setdefault(block.layer.index, {})[block.name] = _shaped(block, values, header)
        offset += block.count
    return header, arrays


def _shaped(block: _Block, values: FloatArray, header: _Header) -> FloatArray:
    if header.transposed and isinstance(block.layer, ConnectedLayer) and block.name == "weights":
        outputs, inputs = block.shape
        return np.ascontiguousarray(values.reshape(inputs, outputs).T)
    return values.reshape(block.shape)


# --------------------------------------------------------------------------------------------
# The ONNX graph


@dataclass(frozen=True)
class _Tensor:
    """A value in the graph: its name and rank (4 for images, 2 for flat vectors)."""

    name: str
    rank: int


class _GraphBuilder:
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


def _as_image(builder: _GraphBuilder, tensor: _Tensor, shape: Shape, prefix: str) -> _Tensor:
    if tensor.rank == 4:
        return tensor
    dims = [0, shape.channels, shape.height, shape.width]
    target = builder.constant(f"{prefix}.image_shape", dims, integer=True)
    return _Tensor(builder.node("Reshape", [tensor.name, target], f"{prefix}/to_image"), 4)


def _as_vector(builder: _GraphBuilder, tensor: _Tensor, prefix: str) -> _Tensor:
    if tensor.rank == 2:
        return tensor
    return _Tensor(builder.node("Flatten", [tensor.name], f"{prefix}/flatten", axis=1), 2)


def _activate(builder: _GraphBuilder, activation: str, value: str, prefix: str) -> str:
    """Darknet's activation as nodes named ``prefix/<activation>``; linear adds none."""
    name = f"{prefix}/{activation}"
    simple = {"relu": "Relu", "logistic": "Sigmoid", "tanh": "Tanh"}
    if activation == "linear":
        return value
    if activation in simple:
        return builder.node(simple[activation], [value], name)
    if activation in ("leaky", "relie"):
        slope = 0.1 if activation == "leaky" else 0.01
        return builder.node("LeakyRelu", [value], name, alpha=slope)
    if activation == "elu":
        return builder.node("Elu", [value], name, alpha=1.0)
    if activation == "selu":
        return builder.node("Selu", [value], name, alpha=1.6732, gamma=1.0507)
    return _activate_composite(builder, activation, value, name)


def _activate_composite(builder: _GraphBuilder, activation: str, value: str, name: str) -> str:
    if activation == "hardtan":
        low = builder.constant(f"{name}.min", -1.0)
        high = builder.constant(f"{name}.max", 1.0)
        return builder.node("Clip", [value, low, high], name)
    if activation == "ramp":  # relu(x) + 0.1 x
        relu = builder.node("Relu", [value], f"{name}/relu")
        slope = builder.constant(f"{name}.slope", 0.1)
        tenth = builder.node("Mul", [value, slope], f"{name}/mul")
        return builder.node("Add", [relu, tenth], name)
    # loggy: 2 * sigmoid(x) - 1
    sigmoid = builder.node("Sigmoid", [value], f"{name}/sigmoid")
    doubled = builder.node("Mul", [sigmoid, builder.constant(f"{name}.two", 2.0)], f"{name}/mul")
    return builder.node("Sub", [doubled, builder.constant(f"{name}.one", 1.0)], name)


def _batch_norm(
    builder: _GraphBuilder, layer: Layer, arrays: dict[str, FloatArray], value: str
) -> str:
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


def _emit_convolutional(
    builder: _GraphBuilder, layer: ConvolutionalLayer, arrays: dict[str, FloatArray], x: _Tensor
) -> _Tensor:
    x = _as_image(builder, x, layer.input_shape, layer.name)
    inputs = [x.name, builder.constant(f"{layer.name}.weights", arrays["weights"])]
    if not layer.batch_normalize:
        inputs.append(builder.constant(f"{layer.name}.biases", arrays["biases"]))
    value = builder.layer_node(
        "Conv",
        inputs,
        layer,
        kernel_shape=[layer.size, layer.size],
        strides=[layer.stride, layer.stride],
        pads=[layer.padding] * 4,
        group=layer.groups,
    )
    if layer.batch_normalize:
        value = _batch_norm(builder, layer, arrays, value)
    return _Tensor(_activate(builder, layer.activation, value, layer.name), 4)


def _emit_connected(
    builder: _GraphBuilder, layer: ConnectedLayer, arrays: dict[str, FloatArray], x: _Tensor
) -> _Tensor:
    x = _as_vector(builder, x, layer.name)
    inputs = [x.name, builder.constant(f"{layer.name}.weights", arrays["weights"])]
    if not layer.batch_normalize:
        inputs.append(builder.constant(f"{layer.name}.biases", arrays["biases"]))
    value = builder.layer_node("Gemm", inputs, layer, transB=1)
    if layer.batch_normalize:
        value = _batch_norm(builder, layer, arrays, value)
    return _Tensor(_activate(builder, layer.activation, value, layer.name), 2)


def _emit_maxpool(builder: _GraphBuilder, layer: MaxpoolLayer, x: _Tensor) -> _Tensor:
    x = _as_image(builder, x, layer.input_shape, layer.name)
    before, after = layer.padding // 2, layer.padding - layer.padding // 2
    name = builder.layer_node(
        "MaxPool",
        [x.name],
        layer,
        kernel_shape=[layer.size, layer.size],
        strides=[layer.stride, layer.stride],
        pads=[before, before, after, after],
    )
    return _Tensor(name, 4)


def _emit_avgpool(builder: _GraphBuilder, layer: AvgpoolLayer, x: _Tensor) -> _Tensor:
    x = _as_image(builder, x, layer.input_shape, layer.name)
    return _Tensor(builder.layer_node("GlobalAveragePool", [x.name], layer), 4)


def _emit_route(
    builder: _GraphBuilder, layer: RouteLayer, sources: Sequence[_Tensor], shapes: Sequence[Shape]
) -> _Tensor:
    if len(sources) == 1:
        return sources[0]
    parts = []
    image = layer.output_shape.image and any(source.rank == 4 for source in sources)
    for position, (tensor, shape) in enumerate(zip(sources, shapes, strict=True)):
        prefix = f"{layer.name}/input_{position}"
        parts.append(
            _as_image(builder, tensor, shape, prefix)
            if image
            else _as_vector(builder, tensor, prefix)
        )
    name = builder.layer_node("Concat", [part.name for part in parts], layer, axis=1)
    return _Tensor(name, parts[0].rank)


def _emit_shortcut(
    builder: _GraphBuilder, layer: ShortcutLayer, previous: _Tensor, added: _Tensor
) -> _Tensor:
    base = _as_image(builder, previous, layer.input_shape, f"{layer.name}/previous").name
    added = _as_image(builder, added, layer.source_shape, f"{layer.name}/from")
    addend = _shortcut_addend(builder, layer, added.name)
    if layer.alpha != 1.0:
        alpha = builder.constant(f"{layer.name}.alpha", layer.alpha)
        base = builder.node("Mul", [base, alpha], f"{layer.name}/alpha")
    value = builder.layer_node("Add", [base, addend], layer)
    return _Tensor(_activate(builder, layer.activation, value, layer.name), 4)


def _shortcut_addend(builder: _GraphBuilder, layer: ShortcutLayer, added: str) -> str:
    """The ``from`` input, cut and subsampled to the overlap, zero-padded to the output shape."""
    overlap, target, step = (
        _overlap(layer.input_shape, layer.source_shape),
        layer.input_shape,
        layer.stride,
    )
    ends = [overlap.channels, overlap.height * step, overlap.width * step]
    source = layer.source_shape
    if step > 1 or ends != [source.channels, source.height, source.width]:
        added = _slice(
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


def _slice(
    builder: _GraphBuilder,
    value: str,
    name: str,
    starts: list[int],
    ends: list[int],
    axes: list[int],
    steps: list[int],
    *,
    output: str = "",
) -> str:
    inputs = [
        value,
        builder.constant(f"{name}.starts", starts, integer=True),
        builder.constant(f"{name}.ends", ends, integer=True),
        builder.constant(f"{name}.axes", axes, integer=True),
        builder.constant(f"{name}.steps", steps, integer=True),
    ]
    return builder.node("Slice", inputs, name, output=output)


def _emit_crop(builder: _GraphBuilder, layer: CropLayer, x: _Tensor) -> _Tensor:
    value = _as_image(builder, x, layer.input_shape, layer.name).name
    inner, outer = layer.output_shape, layer.input_shape
    top, left = (outer.height - inner.height) // 2, (outer.width - inner.width) // 2
    if (inner.height, inner.width) != (outer.height, outer.width):
        ends = [top + inner.height, left + inner.width]
        output = f"{layer.name}/slice"
        value = _slice(builder, value, layer.name, [top, left], ends, [2, 3], [1, 1], output=output)
    if layer.adjust:  # Darknet maps [0, 1] to [-1, 1]
        doubled = builder.node(
            "Mul", [value, builder.constant(f"{layer.name}.scale", 2.0)], f"{layer.name}/scale"
        )
        value = builder.node(
            "Sub", [doubled, builder.constant(f"{layer.name}.one", 1.0)], f"{layer.name}/shift"
        )
    return _Tensor(value, 4)


def _emit_softmax(builder: _GraphBuilder, layer: SoftmaxLayer, x: _Tensor) -> _Tensor:
    value = _as_vector(builder, x, layer.name).name
    if layer.temperature != 1.0:
        temperature = builder.constant(f"{layer.name}.temperature", layer.temperature)
        value = builder.node("Div", [value, temperature], f"{layer.name}/temperature")
    if layer.groups == 1:
        return _Tensor(builder.layer_node("Softmax", [value], layer, axis=-1), 2)
    grouped = builder.constant(f"{layer.name}.grouped_shape", [0, layer.groups, -1], integer=True)
    flat = builder.constant(f"{layer.name}.flat_shape", [0, -1], integer=True)
    value = builder.node("Reshape", [value, grouped], f"{layer.name}/groups")
    value = builder.layer_node("Softmax", [value], layer, axis=-1)
    return _Tensor(builder.node("Reshape", [value, flat], f"{layer.name}/ungroup"), 2)


def _emit_layer(
    builder: _GraphBuilder,
    layer: Layer,
    arrays: dict[str, FloatArray],
    outputs: Sequence[_Tensor],
    shapes: Sequence[Shape],
) -> _Tensor:
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


def _build_graph(
    network: DarknetNetwork, arrays: dict[int, dict[str, FloatArray]]
) -> tuple[_GraphBuilder, _Tensor]:
    """All nodes; each layer's last tensor is renamed to the layer's name (or ``output``)."""
    builder = _GraphBuilder()
    outputs = [_Tensor(INPUT_NAME, 4)]
    shapes = [network.input_shape]
    final = network.output_layer.index
    for layer in network.layers:
        start = len(builder.nodes)
        tensor = _emit_layer(builder, layer, arrays.get(layer.index, {}), outputs, shapes)
        wanted = OUTPUT_NAME if layer.index == final else layer.name
        if builder.rename_output(tensor.name, wanted, since=start):
            tensor = _Tensor(wanted, tensor.rank)
        outputs.append(tensor)
        shapes.append(layer.output_shape)
    result = outputs[final + 1]
    if result.name != OUTPUT_NAME:  # the output layer emitted no node (e.g. a final dropout)
        result = _Tensor(builder.node("Identity", [result.name], OUTPUT_NAME), result.rank)
    return builder, result


def _make_model(
    network: DarknetNetwork, builder: _GraphBuilder, result: _Tensor, doc: str
) -> onnx.ModelProto:
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


def convert_darknet(cfg_path: Path, weights_path: Path) -> onnx.ModelProto:
    """Convert a Darknet cfg and its weights file to an ONNX model (opset 13).

    The model's input is ``input`` ``[N, C, H, W]``, RGB in [0, 1]; its output ``output`` is the
    network's last non-cost layer (the softmax probabilities of a classifier). A weights file
    written by :func:`write_random_weights` is marked as random in the model's metadata.
    Raises :class:`ConversionError` for a missing or malformed file, an unsupported layer or
    option, or a weights file whose size does not match the cfg.
    """
    cfg_path, weights_path = Path(cfg_path), Path(weights_path)
    network = parse_darknet_cfg(cfg_path)
    header, arrays = _read_weights(weights_path, network)
    builder, result = _build_graph(network, arrays)
    doc = f"Converted by onnx-prune from Darknet {cfg_path.name} with {weights_path.name}"
    model = _make_model(network, builder, result, doc)
    if header.revision == RANDOM_REVISION:
        helper.set_model_props(model, {RANDOM_WEIGHTS_KEY: "true"})
    logger.info("converted %s (%d layers) with %s", cfg_path, len(network.layers), weights_path)
    return model


# --------------------------------------------------------------------------------------------
# Random weights

LOGIT_SPREAD = 3.0
"""Standard deviation of the softmax input that random weights are calibrated to."""
_CALIBRATION_IMAGES = 2


def write_random_weights(cfg_path: Path, out_path: Path, *, seed: int = 0) -> None:
    """Write a Darknet weights file of random values for ``cfg_path`` (deterministic in ``seed``).

    Weights start He-scaled (normal, standard deviation ``sqrt(2 / fan_in)``), then are
    calibrated on two synthetic images, layer by layer (LSUV-style): batch norm gets the
    measured mean and variance of its input (with scales in [0.75, 1.25] and biases near 0),
    a layer without batch norm is scaled to unit variance, and the last conv/connected layer is
    scaled so that the softmax input has a standard deviation of :data:`LOGIT_SPREAD`. So deep
    networks neither vanish nor overflow and the softmax has a clear top-5. The header's revision
    is :data:`RANDOM_REVISION`: Darknet ignores it, :func:`convert_darknet` marks the model random.
    """
    network = parse_darknet_cfg(Path(cfg_path))
    rng = np.random.default_rng(seed)
    parameters = _random_parameters(network, rng)
    _calibrate(network, parameters, _calibration_images(network.input_shape, rng))
    try:
        with Path(out_path).open("wb") as file:
            np.array([0, 2, RANDOM_REVISION], "<i4").tofile(file)
            np.array([0], "<i8").tofile(file)
            for block in _all_blocks(network):
                parameters[block.layer.index][block.name].astype("<f4", copy=False).tofile(file)
    except OSError as error:
        raise ConversionError(
            f"{out_path}: cannot write the weights file: {error.strerror}"
        ) from None


def _random_parameters(
    network: DarknetNetwork, rng: np.random.Generator
) -> dict[int, dict[str, FloatArray]]:
    parameters: dict[int, dict[str, FloatArray]] = {}
    for block in _all_blocks(network):
        values = _random_values(rng, block).reshape(block.shape)
        parameters.setdefault(block.layer.index, {})[block.name] = values
    return parameters


def _random_values(rng: np.random.Generator, block: _Block) -> FloatArray:
    layer = block.layer
    if block.name == "weights" and isinstance(layer, ConvolutionalLayer | ConnectedLayer):
        values = rng.standard_normal(block.count, dtype=np.float32)
        values *= np.float32(math.sqrt(2.0 / _fan_in(layer)))
        return values
    if block.name == "scales":
        return rng.uniform(0.75, 1.25, block.count).astype(np.float32)
    if block.name == "rolling_variance":
        return np.ones(block.count, np.float32)
    return (0.05 * rng.standard_normal(block.count)).astype(np.float32)  # biases, rolling_mean


def _fan_in(layer: ConvolutionalLayer | ConnectedLayer) -> int:
    if isinstance(layer, ConnectedLayer):
        return layer.input_shape.size
    return layer.input_shape.channels // layer.groups * layer.size * layer.size


def _calibration_images(shape: Shape, rng: np.random.Generator) -> FloatArray:
    """Blocky random images in [0, 1] with a little noise: enough structure for statistics."""
    count, block = _CALIBRATION_IMAGES, 16
    coarse = rng.uniform(
        0, 1, (count, shape.channels, shape.height // block + 1, shape.width // block + 1)
    )
    images = coarse.repeat(block, axis=2).repeat(block, axis=3)[:, :, : shape.height, : shape.width]
    images += rng.normal(0, 0.05, images.shape)
    return np.clip(images, 0, 1).astype(np.float32)


def _calibrate(
    network: DarknetNetwork, parameters: dict[int, dict[str, FloatArray]], images: FloatArray
) -> None:
    """Run the network in numpy, fixing each weighted layer's statistics on the way (in place)."""
    outputs = [images]
    for layer in network.layers:
        arrays = parameters.get(layer.index, {})
        if isinstance(layer, ConvolutionalLayer | ConnectedLayer):
            linear = _linear(layer, arrays, outputs[-1])
            _normalize_statistics(layer, arrays, linear)
            outputs.append(_finish_weighted(layer, arrays, linear))
        else:
            outputs.append(_forward(layer, outputs))
    _spread_logits(network, parameters, outputs)


def _normalize_statistics(
    layer: ConvolutionalLayer | ConnectedLayer, arrays: dict[str, FloatArray], linear: FloatArray
) -> None:
    """Batch norm gets the measured statistics; other layers are scaled to unit variance."""
    if layer.batch_normalize:
        variance = linear.var(axis=(0, 2, 3))
        arrays["rolling_mean"][:] = linear.mean(axis=(0, 2, 3))
        arrays["rolling_variance"][:] = np.maximum(
            variance, max(0.05 * float(variance.mean()), 1e-6)
        )
        return
    deviation = float(linear.std())
    if deviation > 0:
        arrays["weights"] /= np.float32(deviation)
        linear /= np.float32(deviation)


def _spread_logits(
    network: DarknetNetwork, parameters: dict[int, dict[str, FloatArray]], outputs: list[FloatArray]
) -> None:
    """Scale the last weighted layer so that the last softmax's input has LOGIT_SPREAD."""
    softmaxes = [layer for layer in network.layers if isinstance(layer, SoftmaxLayer)]
    weighted = [layer.index for layer in network.layers if layer.index in parameters]
    if not softmaxes or not weighted:
        return
    logits = outputs[softmaxes[-1].index].reshape(_CALIBRATION_IMAGES, -1)
    spread = float(logits.std(axis=1).mean())
    if spread > 0:
        arrays = parameters[weighted[-1]]
        factor = np.float32(LOGIT_SPREAD / spread)
        for name in ("scales" if "scales" in arrays else "weights", "biases"):
            arrays[name] *= factor  # batch norm's output scales with its scales, not weights


def _linear(
    layer: ConvolutionalLayer | ConnectedLayer, arrays: dict[str, FloatArray], x: FloatArray
) -> FloatArray:
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


def _finish_weighted(
    layer: ConvolutionalLayer | ConnectedLayer, arrays: dict[str, FloatArray], linear: FloatArray
) -> FloatArray:
    def channel(name: str) -> FloatArray:
        return arrays[name].reshape(1, -1, 1, 1)

    value = linear
    if layer.batch_normalize:
        deviation = np.sqrt(channel("rolling_variance")) + np.float32(BATCH_NORM_EPSILON)
        value = (value - channel("rolling_mean")) / deviation * channel("scales")
    return _numpy_activation(layer.activation, value + channel("biases"))


def _numpy_activation(activation: str, x: FloatArray) -> FloatArray:
    functions: dict[str, Callable[[FloatArray], npt.NDArray[Any]]] = {
        "linear": lambda v: v,
        "relu": lambda v: np.maximum(v, 0),
        "leaky": lambda v: np.where(v > 0, v, 0.1 * v),
        "relie": lambda v: np.where(v > 0, v, 0.01 * v),
        "ramp": lambda v: np.maximum(v, 0) + 0.1 * v,
        "logistic": lambda v: 1 / (1 + np.exp(-v)),
        "loggy": lambda v: 2 / (1 + np.exp(-v)) - 1,
        "tanh": np.tanh,
        "elu": lambda v: np.where(v >= 0, v, np.expm1(np.minimum(v, 0))),
        "selu": lambda v: 1.0507 * np.where(v >= 0, v, 1.6732 * np.expm1(np.minimum(v, 0))),
        "hardtan": lambda v: np.clip(v, -1, 1),
    }
    return functions[activation](x).astype(np.float32)


def _forward(layer: Layer, outputs: list[FloatArray]) -> FloatArray:
    """A layer without weights, in numpy, on N×C×H×W arrays (``outputs`` starts with the input)."""
    x = outputs[-1]
    if isinstance(layer, MaxpoolLayer):
        before, after = layer.padding // 2, layer.padding - layer.padding // 2
        padded = np.pad(
            x, ((0, 0), (0, 0), (before, after), (before, after)), constant_values=-np.inf
        )
        windows = np.lib.stride_tricks.sliding_window_view(padded, (layer.size,) * 2, axis=(2, 3))
        pooled = windows[:, :, :: layer.stride, :: layer.stride].max(axis=(4, 5))
        return np.asarray(pooled, dtype=np.float32)
    if isinstance(layer, AvgpoolLayer):
        return np.asarray(x.mean(axis=(2, 3), keepdims=True), dtype=np.float32)
    if isinstance(layer, RouteLayer):
        return np.concatenate([outputs[source + 1] for source in layer.sources], axis=1)
    if isinstance(layer, ShortcutLayer):
        return _numpy_shortcut(layer, x, outputs[layer.source + 1])
    if isinstance(layer, CropLayer):
        return _numpy_crop(layer, x)
    if isinstance(layer, SoftmaxLayer):
        return _numpy_softmax(layer, x)
    return x  # dropout, cost


def _numpy_shortcut(layer: ShortcutLayer, previous: FloatArray, added: FloatArray) -> FloatArray:
    overlap, step = _overlap(layer.input_shape, layer.source_shape), layer.stride
    part = added[:, : overlap.channels, ::step, ::step][:, :, : overlap.height, : overlap.width]
    out = previous.copy()
    region = out[:, : overlap.channels, : overlap.height, : overlap.width]
    region[...] = layer.alpha * region + layer.beta * part
    return _numpy_activation(layer.activation, out)


def _numpy_crop(layer: CropLayer, x: FloatArray) -> FloatArray:
    inner, outer = layer.output_shape, layer.input_shape
    top, left = (outer.height - inner.height) // 2, (outer.width - inner.width) // 2
    cropped = x[:, :, top : top + inner.height, left : left + inner.width]
    return cropped * 2 - 1 if layer.adjust else cropped


def _numpy_softmax(layer: SoftmaxLayer, x: FloatArray) -> FloatArray:
    grouped = x.reshape(x.shape[0], layer.groups, -1) / layer.temperature
    exponentials = np.exp(grouped - grouped.max(axis=2, keepdims=True))
    probabilities = np.asarray(exponentials / exponentials.sum(axis=2, keepdims=True), np.float32)
    return probabilities.reshape(x.shape[0], -1, 1, 1)
