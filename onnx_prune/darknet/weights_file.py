"""Darknet's weights file: a header, then each weighted layer's float32 arrays in Darknet's order.

The header is three int32 (major, minor, revision) and a "seen" counter, 64-bit from version 0.2
on. A convolutional layer stores its biases, then scales, rolling mean and rolling variance when
it has batch norm, then its weights; a connected layer stores its biases, weights, then the batch
norm arrays. Files with major or minor above 1000 store connected weights as [inputs, outputs].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from onnx_prune.darknet.layers import ConnectedLayer, ConvolutionalLayer, DarknetNetwork, Layer
from onnx_prune.errors import ConversionError
from onnx_prune.files import NotRegularFileError, open_regular, replacing

FloatArray = npt.NDArray[np.float32]
LayerArrays = dict[str, FloatArray]
"""One layer's arrays by Darknet name: biases, scales, rolling_mean, rolling_variance, weights."""
Parameters = dict[int, LayerArrays]
"""Every weighted layer's arrays, by layer index."""

RANDOM_REVISION = int.from_bytes(b"RAND", "little")
"""The header ``revision`` :func:`write_random_weights` writes; Darknet ignores the field."""
_HEADER_INTS = 3


@dataclass(frozen=True)
class Block:
    """One array of a layer in the weights file, in file order."""

    layer: Layer
    name: str  # biases, scales, rolling_mean, rolling_variance or weights
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        """The number of floats."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A weights file's version, its revision field and its length in bytes."""

    major: int
    minor: int
    revision: int
    size: int  # bytes, including the "seen" counter

    @property
    def transposed(self) -> bool:
        """Darknet reads connected weights as [inputs, outputs] when major or minor > 1000."""
        return self.major > 1000 or self.minor > 1000


def _weight_blocks(layer: Layer) -> tuple[Block, ...]:
    """The arrays Darknet reads for ``layer``, in its order (conv and connected differ)."""
    if isinstance(layer, ConvolutionalLayer):
        n = layer.filters
        kernel = (n, layer.input_shape.channels // layer.groups, layer.size, layer.size)
        norm = _batch_norm_blocks(layer, n) if layer.batch_normalize else ()
        return (Block(layer, "biases", (n,)), *norm, Block(layer, "weights", kernel))
    if isinstance(layer, ConnectedLayer):
        n = layer.outputs
        norm = _batch_norm_blocks(layer, n) if layer.batch_normalize else ()
        matrix = (n, layer.input_shape.size)
        return (Block(layer, "biases", (n,)), Block(layer, "weights", matrix), *norm)
    return ()


def _batch_norm_blocks(layer: Layer, n: int) -> tuple[Block, ...]:
    names = ("scales", "rolling_mean", "rolling_variance")
    return tuple(Block(layer, name, (n,)) for name in names)


def all_blocks(network: DarknetNetwork) -> list[Block]:
    """Every array of the weights file, in file order."""
    return [block for layer in network.layers for block in _weight_blocks(layer)]


def _read_header(weights_path: Path) -> Header:
    try:
        with open_regular(weights_path) as file:
            raw = file.read(4 * _HEADER_INTS + 8)
    except FileNotFoundError:
        raise ConversionError(
            f"{weights_path}: no such Darknet weights file: check the path"
        ) from None
    except NotRegularFileError:
        raise ConversionError(
            f"{weights_path} is not a regular file (a folder, pipe or device): give the "
            ".weights file"
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
    return Header(major, minor, revision, 4 * _HEADER_INTS + (8 if wide_seen else 4))


def _load_floats(weights_path: Path, network: DarknetNetwork, header: Header) -> FloatArray:
    payload = weights_path.stat().st_size - header.size
    blocks = all_blocks(network)
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
    weights_path: Path, network: DarknetNetwork, blocks: list[Block], found: int, needed: int
) -> None:
    if found > needed:
        raise ConversionError(
            f"{weights_path} is {found - needed} floats too long for {network.cfg_path} (the cfg "
            f"needs {needed}, the file has {found}): use the weights file made for this cfg"
        )
    if found < needed:
        end = _block_at(blocks, found)
        raise ConversionError(
            f"{weights_path} is {needed - found} floats short for {network.cfg_path} (the cfg "
            f"needs {needed}, the file has {found}; it ends in the {end.name} of "
            f"{end.layer.name}, cfg line {end.layer.line}): use the weights file made for this cfg"
        )


def _block_at(blocks: list[Block], position: int) -> Block:
    offset = 0
    for block in blocks:
        offset += block.count
        if offset > position:
            return block
    return blocks[-1]


def read_weights(weights_path: Path, network: DarknetNetwork) -> tuple[Header, Parameters]:
    """The header and each layer's arrays, checked against the cfg's float count."""
    header = _read_header(weights_path)
    floats = _load_floats(weights_path, network, header)
    arrays: Parameters = {}
    offset = 0
    for block in all_blocks(network):
        values = np.array(floats[offset : offset + block.count], dtype=np.float32)
        _check_values(weights_path, block, values)
        arrays.setdefault(block.layer.index, {})[block.name] = _shaped(block, values, header)
        offset += block.count
    return header, arrays


def _check_values(weights_path: Path, block: Block, values: FloatArray) -> None:
    """Refuse NaN or infinite weights, and a negative variance (its square root is NaN)."""
    problem = None
    if not np.isfinite(values).all():
        problem = "NaN or infinite values"
    elif block.name == "rolling_variance" and (values < 0).any():
        problem = f"{int((values < 0).sum())} negative variances"
    if problem is not None:
        raise ConversionError(
            f"{weights_path}: the {block.name} of {block.layer.name} (cfg line "
            f"{block.layer.line}) hold {problem}: the weights file is damaged or not made for "
            "this cfg"
        )


def _shaped(block: Block, values: FloatArray, header: Header) -> FloatArray:
    if header.transposed and isinstance(block.layer, ConnectedLayer) and block.name == "weights":
        outputs, inputs = block.shape
        return np.ascontiguousarray(values.reshape(inputs, outputs).T)
    return values.reshape(block.shape)


def write_weights(out_path: Path, network: DarknetNetwork, parameters: Parameters) -> None:
    """Write ``parameters`` as a version 0.2 weights file with :data:`RANDOM_REVISION`."""
    with replacing(Path(out_path)) as temporary, temporary.open("wb") as file:
        np.array([0, 2, RANDOM_REVISION], "<i4").tofile(file)
        np.array([0], "<i8").tofile(file)
        for block in all_blocks(network):
            parameters[block.layer.index][block.name].astype("<f4", copy=False).tofile(file)
