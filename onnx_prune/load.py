"""Load any ``.onnx`` file safely: clear errors for bad files, external data checked, never written.

The model proto is parsed without its external data. External tensors are checked (their location
must stay inside the model's folder and their bytes must exist) and read lazily through a memory
map, so a model over 2 GB is never copied into one protobuf message.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from onnx_prune.errors import ModelLoadError
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
    """Parse ``path`` and check its external data, without ever modifying or writing anything."""
    path = Path(path)
    _check_file(path)
    model = _parse(path)
    external = _resolve_external(model, path.parent)
    inline = _inline_spans(path) if path.stat().st_size >= INLINE_MAP_BYTES else {}
    return LoadedModel(path=path, model=model, external=external, inline=inline)


def _inline_spans(path: Path) -> dict[str, ExternalSpan]:
    """Initializer bytes inside the model file itself, to be memory-mapped rather than copied."""
    return {
        name: ExternalSpan(file=path, offset=offset, length=length)
        for name, (offset, length) in raw_data_spans(path).items()
    }


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file: check the path to the .onnx model")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory: give the path of a .onnx file inside it")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty: re-export or re-download the model")


def _parse(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(
            f"{path} is not a readable ONNX model (truncated or not ONNX: {_first_line(error)}): "
            "re-export or re-download it"
        ) from None
    if not model.graph.node or model.ir_version <= 0 or not model.opset_import:
        raise ModelLoadError(
            f"{path} does not contain an ONNX graph (no nodes, IR version or opset): "
            "is it really a .onnx model?"
        )
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


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
    offset = int(info.get("offset", 0) or 0)
    length = int(info["length"]) if info.get("length") else None
    size = file.stat().st_size
    needed = offset + (length if length is not None else 0)
    if needed > size or offset > size:
        raise ModelLoadError(
            f"external data for tensor '{tensor.name}' in {file} is truncated: needs {needed} "
            f"bytes, the file has {size}: copy the complete data file beside the model"
        )
    return ExternalSpan(file=file, offset=offset, length=length)


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
            f"tensor '{tensor_name}' points at external data '{location}' outside the model's "
            "folder: refused (only relative paths inside the model's folder are read)"
        )
    file = folder.joinpath(*parts)
    root = folder.resolve()
    if not file.resolve().is_relative_to(root):
        raise ModelLoadError(
            f"tensor '{tensor_name}' external data '{location}' resolves outside the model's "
            "folder (a symbolic link?): refused"
        )
    if not file.is_file():
        raise ModelLoadError(
            f"external data file '{location}' for tensor '{tensor_name}' is missing: put it in "
            f"{folder} beside the model"
        )
    return file


def tensor_to_array(loaded: LoadedModel, tensor: TensorProto) -> np.ndarray:
    """The values of a stored tensor; large weights are memory-mapped, never copied whole."""
    external = tensor.data_location == TensorProto.EXTERNAL
    span = (loaded.external if external else loaded.inline).get(tensor.name)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    if span is None or dtype == np.dtype(object):
        if external:
            raise ModelLoadError(f"tensor '{tensor.name}' is stored externally in a form not read")
        return onnx.numpy_helper.to_array(tensor)
    count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
    if not external and span.length != count * dtype.itemsize:
        return onnx.numpy_helper.to_array(tensor)  # not the raw_data this name pointed at
    with span.file.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    values = np.frombuffer(mapped, dtype=dtype.newbyteorder("<"), count=count, offset=span.offset)
    return values.reshape(tuple(tensor.dims))
