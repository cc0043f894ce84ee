"""Where each initializer's ``raw_data`` sits inside an ONNX file, read from the protobuf wire
format, so that large weights can be memory-mapped instead of copied.

protobuf's Python API hands out ``raw_data`` as a fresh ``bytes`` copy on every access; for a
model with hundreds of megabytes of weights that copy costs more than the zero count itself. This
walks only the three levels needed (ModelProto.graph → GraphProto.initializer → TensorProto
name/raw_data) and skips everything else by length. Anything unexpected returns no spans, and
callers fall back to protobuf's copy.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_NAME = 8
_TENSOR_RAW_DATA = 9
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class WireFormatError(Exception):
    """The bytes are not the protobuf this walker expects."""


def raw_data_spans(path: Path) -> dict[str, tuple[int, int]]:
    """``{initializer name: (offset, length)}`` of the main graph's ``raw_data`` fields."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            return _initializer_spans(memoryview(data))
        except WireFormatError:
            return {}


def _initializer_spans(data: memoryview) -> dict[str, tuple[int, int]]:
    graphs = [
        (start, end) for field, start, end in _fields(data, 0, len(data)) if field == _MODEL_GRAPH
    ]
    if len(graphs) != 1:
        raise WireFormatError("expected exactly one graph field")
    spans: dict[str, tuple[int, int]] = {}
    for field, start, end in _fields(data, *graphs[0]):
        if field == _GRAPH_INITIALIZER:
            name, span = _tensor_span(data, start, end)
            if span is not None and name not in spans:
                spans[name] = span
    return spans


def _tensor_span(data: memoryview, start: int, end: int) -> tuple[str, tuple[int, int] | None]:
    name, span = "", None
    for field, value_start, value_end in _fields(data, start, end):
        if field == _TENSOR_NAME:
            name = bytes(data[value_start:value_end]).decode("utf-8", errors="replace")
        elif field == _TENSOR_RAW_DATA:
            span = (value_start, value_end - value_start)
    return name, span


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(field number, value start, value end)`` of the length-delimited fields in a message."""
    position = start
    while position < end:
        key, position = _varint(data, position)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, position = _varint(data, position)
        elif wire == _FIXED64:
            position += 8
        elif wire == _FIXED32:
            position += 4
        elif wire == _LENGTH:
            length, position = _varint(data, position)
            yield field, position, position + length
            position += length
        else:
            raise WireFormatError(f"wire type {wire} at byte {position}")
    if position != end:
        raise WireFormatError("a field runs past the end of its message")


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise WireFormatError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
