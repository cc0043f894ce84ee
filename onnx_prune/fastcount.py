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
_GROUP_ELEMENTS = 4096  # 16 KB of float32: the scratch stays in L1 while every ε scans it

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
    """The kernel: a group of whole planes at a time (about 16 KB, or one plane when larger),
    read once into a cache-resident scratch of |x| that every ε then scans.

    Each step is a plain loop over a contiguous slice, the form LLVM vectorises; small planes
    (7×7, or rank-2 maps, whose every value is a plane) are grouped so that no per-plane
    overhead dominates.
    """
    samples, channels, height, width = bits.shape
    plane_size = height * width
    flat = bits.reshape(samples * channels * plane_size)
    tiles = ((height + tile_h - 1) // tile_h) * ((width + tile_w - 1) // tile_w)
    group = max(1, min(channels, _GROUP_ELEMENTS // plane_size))
    magnitude = np.empty(group * plane_size, np.int32)
    column_max = np.empty(width, np.int32)
    tile_max = np.empty(group * tiles, np.int32)
    plane_max = np.empty(group, np.int32)
    one_plane = _tile_sizes(height, width, tile_h, tile_w)
    tile_size = np.empty(group * tiles, np.int64)
    for index in range(group):
        tile_size[index * tiles : (index + 1) * tiles] = one_plane
    sign_off = np.int32(0x7FFFFFFF)
    largest = np.int32(0)
    for sample in range(samples):
        for first in range(0, channels, group):
            planes = min(group, channels - first)
            size = planes * plane_size
            start = (sample * channels + first) * plane_size
            source = flat[start : start + size]
            for index in range(size):
                magnitude[index] = source[index] & sign_off
            for member in range(planes):
                if tiles == 1:
                    tile_max[member] = _largest(magnitude, member * plane_size, plane_size)
                else:
                    _tile_maxima(
                        magnitude, member * plane_size, height, width, tile_h, tile_w,
                        column_max, tile_max, member * tiles,
                    )  # fmt: skip
                best = tile_max[member * tiles]
                for index in range(member * tiles + 1, (member + 1) * tiles):
                    best = max(best, tile_max[index])
                plane_max[member] = best
                largest = max(largest, best)
            for k in range(bounds.size):
                bound = bounds[k]
                within = np.int32(0)
                for index in range(size):
                    within += np.int32(magnitude[index] <= bound)
                zeros[sample, k] += within
                empty = np.int32(0)
                for member in range(planes):
                    empty += np.int32(plane_max[member] <= bound)
                zero_channels[sample, k] += empty
                skipped = np.int64(0)
                saved = np.int64(0)
                for index in range(planes * tiles):
                    hit = tile_max[index] <= bound
                    skipped += np.int64(hit)
                    saved += tile_size[index] if hit else np.int64(0)
                zero_tiles[k] += skipped
                tile_saved[k] += saved
    return int(largest)


def _largest(values: Any, start: int, count: int) -> Any:  # pragma: no cover - numba
    """The largest of ``values[start : start + count]``."""
    best = values[start]
    for index in range(start + 1, start + count):
        best = max(best, values[index])
    return best


def _tile_maxima(
    magnitude: Any,
    start: int,
    height: int,
    width: int,
    tile_h: int,
    tile_w: int,
    column_max: Any,
    tile_max: Any,
    tile_start: int,
) -> None:  # pragma: no cover - compiled by numba
    """Per tile, the largest |x| of the plane at ``magnitude[start:]``: column maxima over a
    band of rows, then tiles. Indexes only (no slices: each would cost a reference count)."""
    cols = (width + tile_w - 1) // tile_w
    for band, top in enumerate(range(0, height, tile_h)):
        for x in range(width):
            column_max[x] = magnitude[start + top * width + x]
        for y in range(top + 1, min(height, top + tile_h)):
            row = start + y * width
            for x in range(width):
                column_max[x] = max(column_max[x], magnitude[row + x])
        for col in range(cols):
            tile_max[tile_start + band * cols + col] = _largest(
                column_max, col * tile_w, min(tile_w, width - col * tile_w)
            )


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
    _largest = _compile(_largest)
    _tile_maxima = _compile(_tile_maxima)
    _tile_sizes = _compile(_tile_sizes)

_KERNEL: Any = None if numba is None else _compile(_count_planes)
