"""Parse a Darknet cfg into a :class:`DarknetNetwork`: each layer with its shapes and options.

Each ``[section]`` after ``[net]`` becomes one layer dataclass; its output shape follows
Darknet's ``make_*_layer``. What the converter cannot reproduce exactly (an unknown layer or
option, a non-default weight-loading option, an upsampling shortcut) is refused with the file,
line and section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnx_prune.darknet.layers import (
    AvgpoolLayer,
    ConnectedLayer,
    ConvolutionalLayer,
    CostLayer,
    CropLayer,
    DarknetNetwork,
    DropoutLayer,
    Layer,
    MaxpoolLayer,
    RouteLayer,
    Shape,
    ShortcutLayer,
    SoftmaxLayer,
    overlap,
)
from onnx_prune.darknet.sections import (
    Option,
    Section,
    check_options,
    get_activation,
    get_float,
    get_int,
    read_sections,
    require_default,
    require_option,
)
from onnx_prune.errors import ConversionError


@dataclass(frozen=True)
class _Context:
    """What a layer parser needs besides its section: its index, name and earlier outputs."""

    index: int
    name: str
    shapes: tuple[Shape, ...]  # the [net] input first, then one per earlier layer

    @property
    def input_shape(self) -> Shape:
        """The previous layer's output (the ``[net]`` input for the first layer)."""
        return self.shapes[-1]


def parse_darknet_cfg(cfg_path: Path) -> DarknetNetwork:
    """Parse a Darknet cfg into layers with their shapes, refusing what cannot be converted."""
    sections = read_sections(Path(cfg_path))
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


def _parse_net(section: Section) -> Shape:
    shape = Shape(
        get_int(section, "channels", 0),
        get_int(section, "height", 0),
        get_int(section, "width", 0),
    )
    if min(shape.channels, shape.height, shape.width) <= 0:
        raise section.error("height, width and channels must all be given and positive")
    return shape


def _parse_layer(section: Section, context: _Context) -> Layer:
    parser = _PARSERS.get(section.kind)
    if parser is None:
        raise section.error(
            f"layers of type [{section.kind}] are not supported by the converter "
            f"(supported: {', '.join(_PARSERS)}); use a cfg without them"
        )
    return parser(section, context)


def _base(section: Section, context: _Context, output: Shape) -> tuple[int, int, str, Shape, Shape]:
    """The fields every layer has, in :class:`Layer`'s order."""
    return context.index, section.line, context.name, context.input_shape, output


def _require_image(section: Section, context: _Context) -> Shape:
    shape = context.input_shape
    if not shape.image:
        raise section.error("the layer before it must output an image, not a softmax vector")
    return shape


def _parse_convolutional(section: Section, context: _Context) -> Layer:
    check_options(
        section,
        "filters size stride pad padding groups activation batch_normalize binary xnor flipped",
        ignored="dot",
    )
    for key in ("binary", "xnor", "flipped"):
        require_default(section, key, 0)
    shape = _require_image(section, context)
    size = get_int(section, "size", 1)
    filters = get_int(section, "filters", 1)
    stride = get_int(section, "stride", 1)
    groups = get_int(section, "groups", 1)
    padding = size // 2 if get_int(section, "pad", 0) else get_int(section, "padding", 0)
    _check_convolution(section, shape, filters, size, stride, groups, padding)
    output = Shape(filters, *_output_size(shape, 2 * padding, size, stride))
    return ConvolutionalLayer(
        *_base(section, context, output),
        filters=filters,
        size=size,
        stride=stride,
        padding=padding,
        groups=groups,
        batch_normalize=bool(get_int(section, "batch_normalize", 0)),
        activation=get_activation(section, "logistic"),
    )


def _check_convolution(
    section: Section, shape: Shape, filters: int, size: int, stride: int, groups: int, padding: int
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


def _output_size(shape: Shape, padding: int, size: int, stride: int) -> tuple[int, int]:
    """Height and width after a ``size`` window at ``stride``; ``padding`` is added to each."""
    return (
        (shape.height + padding - size) // stride + 1,
        (shape.width + padding - size) // stride + 1,
    )


def _parse_connected(section: Section, context: _Context) -> Layer:
    # `transpose` comes from the paper authors' fork: a memory layout for their gemm; the
    # weights file keeps Darknet's [outputs, inputs] order, so the network is the same.
    check_options(section, "output activation batch_normalize", ignored="transpose")
    outputs = get_int(section, "output", 1)
    if outputs <= 0:
        raise section.error(f"output={outputs} must be positive")
    return ConnectedLayer(
        *_base(section, context, Shape(outputs, 1, 1)),
        outputs=outputs,
        batch_normalize=bool(get_int(section, "batch_normalize", 0)),
        activation=get_activation(section, "logistic"),
    )


def _parse_maxpool(section: Section, context: _Context) -> Layer:
    check_options(section, "size stride padding")
    shape = _require_image(section, context)
    stride = get_int(section, "stride", 1)
    size = get_int(section, "size", stride)
    padding = get_int(section, "padding", size - 1)
    if min(size, stride) <= 0 or padding < 0 or padding - padding // 2 >= size:
        raise section.error(
            f"size={size}, stride={stride}, padding={padding}: size and stride must be "
            "positive and padding at least 0 and below 2*size"
        )
    height, width = _output_size(shape, padding, size, stride)
    if min(height, width) <= 0:
        raise section.error(f"size={size} is larger than the {shape.height}x{shape.width} input")
    return MaxpoolLayer(
        *_base(section, context, Shape(shape.channels, height, width)),
        size=size,
        stride=stride,
        padding=padding,
    )


def _parse_avgpool(section: Section, context: _Context) -> Layer:
    check_options(section, "")
    shape = _require_image(section, context)
    return AvgpoolLayer(*_base(section, context, Shape(shape.channels, 1, 1)))


def _parse_route(section: Section, context: _Context) -> Layer:
    check_options(section, "layers")
    option = require_option(section, "layers", example="-1,-4")
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


def _resolve_index(section: Section, context: _Context, text: str, option: Option) -> int:
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


def _parse_shortcut(section: Section, context: _Context) -> Layer:
    check_options(section, "from activation alpha beta")
    option = require_option(section, "from", example="-3")
    source = _resolve_index(section, context, option.value, option)
    previous = _require_image(section, context)
    added = context.shapes[source + 1]
    stride = _shortcut_stride(section, previous, added)
    alpha = get_float(section, "alpha", 1.0)
    if alpha != 1.0 and overlap(previous, added) != previous:
        raise section.error("alpha other than 1 is supported only between layers of equal size")
    return ShortcutLayer(
        *_base(section, context, previous),
        source=source,
        source_shape=added,
        stride=stride,
        alpha=alpha,
        beta=get_float(section, "beta", 1.0),
        activation=get_activation(section, "linear"),
    )


def _shortcut_stride(section: Section, previous: Shape, added: Shape) -> int:
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


def _parse_crop(section: Section, context: _Context) -> Layer:
    check_options(
        section,
        "crop_height crop_width noadjust",
        ignored="flip angle saturation exposure shift",
    )
    shape = _require_image(section, context)
    height = get_int(section, "crop_height", 1)
    width = get_int(section, "crop_width", 1)
    if not (0 < height <= shape.height and 0 < width <= shape.width):
        raise section.error(
            f"crop {height}x{width} must fit in the {shape.height}x{shape.width} input"
        )
    return CropLayer(
        *_base(section, context, Shape(shape.channels, height, width)),
        adjust=not get_int(section, "noadjust", 0),
    )


def _parse_dropout(section: Section, context: _Context) -> Layer:
    check_options(section, "", ignored="probability")
    return DropoutLayer(*_base(section, context, context.input_shape))


def _parse_softmax(section: Section, context: _Context) -> Layer:
    check_options(section, "groups temperature spatial", ignored="noloss")
    require_default(section, "spatial", 0)
    inputs = context.input_shape.size
    groups = get_int(section, "groups", 1)
    temperature = get_float(section, "temperature", 1.0)
    if groups <= 0 or inputs % groups or temperature <= 0:
        raise section.error(
            f"groups={groups} must divide the {inputs} inputs, and temperature must be positive"
        )
    return SoftmaxLayer(
        *_base(section, context, Shape(inputs, 1, 1, image=False)),
        groups=groups,
        temperature=temperature,
    )


def _parse_cost(section: Section, context: _Context) -> Layer:
    check_options(section, "", ignored="type scale ratio noobject_scale thresh")
    shape = context.input_shape
    return CostLayer(*_base(section, context, Shape(shape.size, 1, 1, image=False)))


_PARSERS: dict[str, Callable[[Section, _Context], Layer]] = {
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
