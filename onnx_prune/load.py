"""Load any ``.onnx`` file safely: clear errors for bad files, external data checked, never written.

The model proto is parsed without its external data. External tensors are checked (their location
must stay inside the model's folder and their bytes must exist) and read lazily through a memory
map, so a model over 2 GB is never copied into one protobuf message.
"""

from __future__ import annotations

import logging
import math
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from onnx_prune.errors import ModelLoadError, first_line
from onnx_prune.files import is_regular_file
from onnx_prune.protowire import raw_data_spans

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalSpan:
    """Where one external tensor's bytes live: a file inside the model folder and a byte range."""

    file: Path
    offset: int
    length: int | None


@dataclass(frozen=True)
class LoadedModel:
    """A parsed model, its source path, and the resolved location of every external tensor."""

    path: Path
    model: onnx.ModelProto
    external: dict[str, ExternalSpan] = field(default_factory=dict)
    inline: dict[str, ExternalSpan] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        """The folder that holds the model file and its external data."""
        return self.path.parent

    @property
    def opset(self) -> int:
        """The model's version of the default ONNX operator set."""
        return default_opset(self.model)


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default (``ai.onnx``) operator set imported by ``model``."""
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    raise ModelLoadError("the model imports no ai.onnx operator set: it is not a usable ONNX model")


RANDOM_WEIGHTS_KEY = "onnx_prune.random_weights"
INLINE_MAP_BYTES = 16 << 20  # smaller files: protobuf's copy of each tensor is cheap enough


def is_random_weights(model: onnx.ModelProto) -> bool:
    """True when the model's metadata marks its weights as random (set by onnx-prune's exports)."""
    return any(
        prop.key == RANDOM_WEIGHTS_KEY and prop.value.strip().lower() == "true"
        for prop in model.metadata_props
    )


def load_model(path: str | Path) -> LoadedModel:
    """Parse ``path`` and check its graph and stored tensors, never modifying or writing anything.

    Raises:
        ModelLoadError: the file is not a readable model, its graph has a cycle or a tensor
            written twice, or a stored tensor's header disagrees with its data.
    """
    path = Path(path)
    _check_file(path)
    model = _parse(path)
    check_acyclic(model.graph, path)
    external = _resolve_external(model, path.parent)
    inline = _inline_spans(path) if path.stat().st_size >= INLINE_MAP_BYTES else {}
    loaded = LoadedModel(path=path, model=model, external=external, inline=inline)
    for tensor in iter_all_tensors(model):
        _check_tensor_data(loaded, tensor)
    return loaded


def model_files(path: Path) -> tuple[Path, ...]:
    """The model file and the external data files it names, for checks that an output path
    is none of them; a model that does not load names only itself."""
    try:
        loaded = load_model(path)
    except ModelLoadError:
        return (path,)
    return (path, *sorted({span.file for span in loaded.external.values()}))


def _inline_spans(path: Path) -> dict[str, ExternalSpan]:
    """Initializer bytes inside the model file itself, to be memory-mapped rather than copied."""
    return {
        name: ExternalSpan(file=path, offset=offset, length=length)
        for name, (offset, length) in raw_data_spans(path).items()
    }


def _check_file(path: Path) -> None:
    try:
        exists = path.exists()
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot open it: {error.strerror}") from None
    if not exists:
        raise ModelLoadError(f"{path}: no such file: check the path to the .onnx model")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory: give the path of a .onnx file inside it")
    if not is_regular_file(path):
        raise ModelLoadError(
            f"{path} is not a regular file (a pipe, device or socket): give the path of a "
            ".onnx file"
        )
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty: re-export or re-download the model")


def _parse(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(
            f"{path} is not a readable ONNX model (truncated or not ONNX: {first_line(error)}): "
            "re-export or re-download it"
        ) from None
    if not model.graph.node or model.ir_version <= 0 or not model.opset_import:
        raise ModelLoadError(
            f"{path} does not contain an ONNX graph (no nodes, IR version or opset): "
            "is it really a .onnx model?"
        )
    return model


def check_acyclic(graph: onnx.GraphProto, path: Path) -> None:
    """Refuse a graph whose nodes cannot be ordered (a cycle, such as ``Relu c1 -> c1``) or
    that writes one tensor from two nodes: every graph walk may then assume neither.

    Kahn's algorithm: a node is ready once every node writing one of its inputs is done.
    """
    for node in graph.node:
        if (set(node.input) & set(node.output)) - {""}:
            raise _cycle_error(path, node)
    producers = _producers(graph, path)
    users: list[list[int]] = [[] for _ in graph.node]
    waiting = [0] * len(graph.node)
    for index, node in enumerate(graph.node):
        for producer in {producers[name] for name in node.input if name in producers}:
            users[producer].append(index)
            waiting[index] += 1
    ready = [index for index, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        done += 1
        for user in users[ready.pop()]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if done < len(graph.node):
        stuck = graph.node[next(index for index, count in enumerate(waiting) if count)]
        raise _cycle_error(path, stuck)


def _cycle_error(path: Path, node: onnx.NodeProto) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: the graph has a cycle: node '{node.name}' ({node.op_type}) needs, through "
        "its inputs, its own output: the model is malformed; re-export it"
    )


def _producers(graph: onnx.GraphProto, path: Path) -> dict[str, int]:
    producers: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name and producers.setdefault(name, index) != index:
                first = graph.node[producers[name]]
                raise ModelLoadError(
                    f"{path}: tensor '{name}' is written by two nodes ('{first.name}' and "
                    f"'{node.name}'): the model is malformed; re-export it"
                )
    return producers


def iter_all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor stored in the model: initializers and tensor attributes, subgraphs included."""
    yield from _graph_tensors(model.graph)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == onnx.AttributeProto.TENSORS:
                yield from attribute.tensors
            elif attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graph_tensors(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _graph_tensors(subgraph)


def _resolve_external(model: onnx.ModelProto, folder: Path) -> dict[str, ExternalSpan]:
    spans: dict[str, ExternalSpan] = {}
    for tensor in iter_all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            spans[tensor.name] = _external_span(tensor, folder)
    return spans


def _external_span(tensor: TensorProto, folder: Path) -> ExternalSpan:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    file = _safe_location(location, tensor.name, folder)
    offset = _external_int(info, "offset", tensor.name) or 0
    length = _external_int(info, "length", tensor.name)
    size = file.stat().st_size
    needed = offset + (length if length is not None else 0)
    if needed > size or offset > size:
        raise ModelLoadError(
            f"external data for tensor '{tensor.name}' in {file} is truncated: needs {needed} "
            f"bytes, the file has {size}: copy the complete data file beside the model"
        )
    return ExternalSpan(file=file, offset=offset, length=length)


def _external_int(info: dict[str, str], key: str, tensor_name: str) -> int | None:
    """A whole number of bytes from a tensor's external-data fields, None when absent."""
    text = info.get(key, "")
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ModelLoadError(
            f"tensor '{tensor_name}' has external data {key} '{_shorten(text)}', not a whole "
            "number of bytes >= 0: the model file is corrupt; re-export it"
        )
    return value


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _safe_location(location: str, tensor_name: str, folder: Path) -> Path:
    """Resolve an external-data location, refusing any that could leave the model's folder."""
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if (
        not location
        or PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or PureWindowsPath(location).drive
        or ".." in parts
    ):
        raise ModelLoadError(
            f"tensor '{tensor_name}' points at external data '{_shorten(location)}' outside the "
            "model's folder: refused (only relative paths inside the model's folder are read)"
        )
    file = folder.joinpath(*parts)
    try:
        inside = file.resolve().is_relative_to(folder.resolve())
        found = file.exists()
    except OSError as error:
        raise ModelLoadError(
            f"external data file '{_shorten(location)}' for tensor '{tensor_name}' cannot be "
            f"opened ({error.strerror}): the model file is corrupt; re-export it"
        ) from None
    if not inside:
        raise ModelLoadError(
            f"tensor '{tensor_name}' external data '{_shorten(location)}' resolves outside the "
            "model's folder (a symbolic link?): refused"
        )
    if not found or not is_regular_file(file):
        what = "is missing" if not found else "is not a regular file (a pipe, device or folder)"
        raise ModelLoadError(
            f"external data file '{_shorten(location)}' for tensor '{tensor_name}' {what}: put "
            f"it in {folder} beside the model"
        )
    return file


_PACKED_BITS = {
    getattr(TensorProto, name): bits
    for name, bits in (("INT2", 2), ("UINT2", 2), ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4))
    if hasattr(TensorProto, name)
}
"""Element types stored several to a byte (in raw_data, and in int32_data one byte each)."""
_UNCHECKED_TYPES = frozenset(
    getattr(TensorProto, name)
    for name in ("FLOAT6E2M3", "FLOAT6E3M2")
    if hasattr(TensorProto, name)
)
_COMPLEX_TYPES = frozenset({TensorProto.COMPLEX64, TensorProto.COMPLEX128})


def _check_tensor_data(loaded: LoadedModel, tensor: TensorProto) -> None:
    """Refuse a stored tensor whose header (type, dims) disagrees with the data it holds."""
    name = tensor.name
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except KeyError:
        raise ModelLoadError(
            f"tensor '{name}' has data_type {tensor.data_type}, which is no ONNX element type: "
            "the model file is corrupt; re-export it"
        ) from None
    if any(dim < 0 for dim in tensor.dims):
        raise _header_error(tensor, "has a negative dimension")
    count = math.prod(tensor.dims)
    if tensor.data_type in _UNCHECKED_TYPES:
        return  # tensor_to_array turns any mismatch into a ModelLoadError
    bits = _PACKED_BITS.get(tensor.data_type)
    stored = -(-count * bits // 8) if bits else count * dtype.itemsize
    if tensor.data_location == TensorProto.EXTERNAL:
        _check_external_bytes(loaded, tensor, stored)
    elif tensor.HasField("raw_data"):
        _check_raw_bytes(loaded, tensor, stored)
    elif tensor.data_type != TensorProto.STRING or tensor.string_data:
        values = -(-count * bits // 8) if bits else count
        values *= 2 if tensor.data_type in _COMPLEX_TYPES else 1
        found = len(getattr(tensor, helper.tensor_dtype_to_field(tensor.data_type)))
        if found != values:
            raise _header_error(tensor, f"holds {found} values where its dims need {values}")


def _check_external_bytes(loaded: LoadedModel, tensor: TensorProto, expected: int) -> None:
    span = loaded.external[tensor.name]
    if tensor.data_type == TensorProto.STRING:
        raise _header_error(tensor, "holds strings in external data, which ONNX does not allow")
    if span.length is not None and span.length != expected:
        raise _header_error(tensor, f"has external data of {span.length} bytes, not {expected}")
    available = span.file.stat().st_size - span.offset
    if available < expected:
        raise ModelLoadError(
            f"external data for tensor '{tensor.name}' in {span.file} is truncated: needs "
            f"{expected} bytes from offset {span.offset}, the file has {available}: copy the "
            "complete data file beside the model"
        )


def _check_raw_bytes(loaded: LoadedModel, tensor: TensorProto, expected: int) -> None:
    span = loaded.inline.get(tensor.name)
    if span is not None and span.length == expected:
        return  # the common case of a large model, read from the file without a copy
    found = len(tensor.raw_data)
    if tensor.data_type == TensorProto.STRING or found != expected:
        raise _header_error(tensor, f"holds {found} bytes of raw data, not {expected}")


def _header_error(tensor: TensorProto, problem: str) -> ModelLoadError:
    dims = "[" + ",".join(str(dim) for dim in tensor.dims) + "]"
    type_name = TensorProto.DataType.Name(tensor.data_type)
    return ModelLoadError(
        f"tensor '{tensor.name}' ({type_name}, dims {dims}) {problem}: the model file is "
        "corrupt; re-export it"
    )


def tensor_to_array(loaded: LoadedModel, tensor: TensorProto) -> np.ndarray:
    """The values of a stored tensor; large weights are memory-mapped, never copied whole."""
    external = tensor.data_location == TensorProto.EXTERNAL
    span = (loaded.external if external else loaded.inline).get(tensor.name)
    if tensor.data_type == TensorProto.STRING:
        raise ModelLoadError(
            f"tensor '{tensor.name}' holds strings, not numbers: it cannot be a weight; "
            "is the model corrupt?"
        )
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    if span is None:
        if external:
            raise ModelLoadError(f"tensor '{tensor.name}' is stored externally in a form not read")
        return _proto_values(tensor)
    count = math.prod(tensor.dims)
    if count == 0:
        return np.zeros(tuple(tensor.dims), dtype)
    if not external and span.length != count * dtype.itemsize:
        return _proto_values(tensor)  # not the raw_data this name pointed at
    with span.file.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    values = np.frombuffer(mapped, dtype=dtype.newbyteorder("<"), count=count, offset=span.offset)
    return values.reshape(tuple(tensor.dims))


def _proto_values(tensor: TensorProto) -> np.ndarray:
    """onnx's own reading of a tensor; any disagreement it finds names the tensor."""
    try:
        return onnx.numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError, OverflowError, MemoryError) as error:
        raise _header_error(tensor, f"cannot be read ({first_line(error)})") from None
