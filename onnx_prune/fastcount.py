"""The counting fast path: every ε, plane maxima and tile maxima in one read of a feature map.

A compiled kernel (numba, the optional ``fast`` extra) reads each float32 value once and keeps
everything else in cache, one plane at a time: ``|x|`` is the value's bit pattern with the sign
bit cleared, and for non-negative floats that integer orders exactly as the float does, so every
comparison ``|x| <= ε`` (float32, inclusive, −0.0 counted as zero) is an integer comparison that
vectorises without fast-math. NaN and ±inf have patterns at or above that of +inf: the largest
pattern seen tells whether the map was finite, at no extra cost.

Without numba, :func:`available` is False and the caller counts some other way (the in-graph
probes). Nothing here knows about models, probes or sessions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_INFINITY_BITS = 0x7F800000

numba: Any
try:  # numba is an optional extra: pip install 'onnx-prune[fast]'
    import numba
except ImportError:  # pragma: no cover - the tests take the kernel away with a monkeypatch
    numba = None


@dataclass(frozen=True)
class MapCounts:
    """One batch of one feature map: per sample [n, len(eps)] and batch totals [len(eps)].

    ``finite`` is False when the map holds a NaN or an infinite value (the counts are then
    meaningless).
    """

    zeros: np.ndarray
    zero_channels: np.ndarray
    zero_tiles: np.ndarray
    tile_saved: np.ndarray
    finite: bool


def available() -> bool:
    """Whether the compiled kernel can be used (numba is installed)."""
    return _KERNEL is not None


def count_map(values: np.ndarray, eps: np.ndarray, tile: tuple[int, int] | None) -> MapCounts:
    """Counts of a float32 map [n, C, ...] for every ε in one read.

    A channel is one (n, c) plane of everything after axis 1. ``tile`` (h, w) splits the planes
    of a rank-4 map into tiles (ragged edges smaller); None makes each channel one tile.
    """
    if _KERNEL is None:
        raise RuntimeError("the counting kernel needs numba: pip install 'onnx-prune[fast]'")
    planes = _as_planes(values, tile)
    samples, _, height, width = planes.shape
    tile_h, tile_w = (min(tile[0], height), min(tile[1], width)) if tile else (height, width)
    bounds = _bound_bits(eps)
    zeros = np.zeros((samples, bounds.size), np.int64)
    zero_channels = np.zeros((samples, bounds.size), np.int64)
    zero_tiles = np.zeros(bounds.size, np.int64)
    tile_saved = np.zeros(bounds.size, np.int64)
    largest = 0
    if planes.size:
        largest = _KERNEL(
            planes.view(np.int32), bounds, tile_h, tile_w,
            zeros, zero_channels, zero_tiles, tile_saved,
        )  # fmt: skip
    return MapCounts(zeros, zero_channels, zero_tiles, tile_saved, largest < _INFINITY_BITS)


def _as_planes(values: np.ndarray, tile: tuple[int, int] | None) -> np.ndarray:
    """A C-contiguous float32 [n, C, H, W] view (H = 1 and W = plane size below rank 4)."""
    array = np.ascontiguousarray(values, dtype=np.float32)
    samples, channels = array.shape[0], array.shape[1]
    if array.ndim == 4 and tile is not None:
        return array
    return array.reshape(samples, channels, 1, -1)


def _bound_bits(eps: np.ndarray) -> np.ndarray:
    """Each ε as the bit pattern of a float32 (−0.0 as +0.0, so that it compares as zero)."""
    bounds = np.asarray(eps, np.float32) + np.float32(0.0)
    if np.isnan(bounds).any():
        raise ValueError("ε must not be NaN")
    return bounds.view(np.int32).copy()


def _count_planes(
    bits: Any,
    bounds: Any,
    tile_h: int,
    tile_w: int,
    zeros: Any,
    zero_channels: Any,
    zero_tiles: Any,
    tile_saved: Any,
) -> int:  # pragma: no cover - compiled by numba; checked against numpy in the tests
    """The kernel: one plane at a time, read once into a cache-resident scratch of |x|.

    Each step is a plain loop over a contiguous slice, the form LLVM vectorises.
    """
    samples, channels, height, width = bits.shape
    plane_size = height * width
    flat = bits.reshape(samples * channels * plane_size)
    rows = (height + tile_h - 1) // tile_h
    cols = (width + tile_w - 1) // tile_w
    magnitude = np.empty(plane_size, np.int32)
    column_max = np.empty(width, np.int32)
    tile_max = np.empty(rows * cols, np.int32)
    tile_size = _tile_sizes(height, width, tile_h, tile_w)
    sign_off = np.int32(0x7FFFFFFF)
    largest = np.int32(0)
    for plane in range(samples * channels):
        source = flat[plane * plane_size : (plane + 1) * plane_size]
        for index in range(plane_size):
            magnitude[index] = source[index] & sign_off
        _tile_maxima(magnitude, width, tile_h, tile_w, column_max, tile_max)
        plane_max = tile_max[0]
        for index in range(1, rows * cols):
            plane_max = max(plane_max, tile_max[index])
        largest = max(largest, plane_max)
        sample = plane // channels
        for k in range(bounds.size):
            bound = bounds[k]
            within = np.int32(0)
            for index in range(plane_size):
                within += np.int32(magnitude[index] <= bound)
            zeros[sample, k] += within
            if plane_max <= bound:
                zero_channels[sample, k] += 1
            for index in range(rows * cols):
                if tile_max[index] <= bound:
                    zero_tiles[k] += 1
                    tile_saved[k] += tile_size[index]
    return int(largest)


def _tile_maxima(
    magnitude: Any, width: int, tile_h: int, tile_w: int, column_max: Any, tile_max: Any
) -> None:  # pragma: no cover - compiled by numba
    """Per tile, the largest |x| of one plane: column maxima over a band of rows, then tiles."""
    height = magnitude.size // width
    cols = (width + tile_w - 1) // tile_w
    for band, top in enumerate(range(0, height, tile_h)):
        column_max[:] = 0
        for y in range(top, min(height, top + tile_h)):
            line = magnitude[y * width : (y + 1) * width]
            for x in range(width):
                column_max[x] = max(column_max[x], line[x])
        for col in range(cols):
            best = column_max[col * tile_w]
            for x in range(col * tile_w + 1, min(width, (col + 1) * tile_w)):
                best = max(best, column_max[x])
            tile_max[band * cols + col] = best


def _tile_sizes(
    height: int, width: int, tile_h: int, tile_w: int
) -> Any:  # pragma: no cover - compiled by numba
    """Values in each tile (edge tiles smaller), row-major."""
    rows = (height + tile_h - 1) // tile_h
    cols = (width + tile_w - 1) // tile_w
    sizes = np.empty(rows * cols, np.int64)
    for row in range(rows):
        for col in range(cols):
            tall = min(tile_h, height - row * tile_h)
            wide = min(tile_w, width - col * tile_w)
            sizes[row * cols + col] = tall * wide
    return sizes


def _compile(function: Any) -> Any:
    return numba.njit(nogil=True, cache=True, fastmath=False, boundscheck=False)(function)


if numba is not None:
    _tile_maxima = _compile(_tile_maxima)
    _tile_sizes = _compile(_tile_sizes)

_KERNEL: Any = None if numba is None else _compile(_count_planes)
