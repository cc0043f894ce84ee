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
_GROUP_ELEMENTS = 4096  # 16 KB of float32: small planes are grouped up to this size
_BLOCK_ELEMENTS = 2048  # 8 KB: every ε scans a block while it is in L1

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
    read once, block by block, into a cache-resident scratch of |x|; every ε scans each block
    while it is in L1, then the tile maxima are taken from the scratch.

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
    within = np.zeros(bounds.size, np.int64)
    largest = np.int32(0)
    for sample in range(samples):
        for first in range(0, channels, group):
            planes = min(group, channels - first)
            size = planes * plane_size
            start = (sample * channels + first) * plane_size
            source = flat[start : start + size]
            within[:] = 0
            for block in range(0, size, _BLOCK_ELEMENTS):
                end = min(size, block + _BLOCK_ELEMENTS)
                _magnitude_block(source[block:end], magnitude[block:end], bounds, within)
            for member in range(planes):
                if plane_size == 1:
                    tile_max[member] = magnitude[member]
                elif tiles == 1:
                    tile_max[member] = _largest(magnitude[member * plane_size :], plane_size)
                else:
                    _tile_maxima(
                        magnitude[member * plane_size : (member + 1) * plane_size],
                        width, tile_h, tile_w, column_max,
                        tile_max[member * tiles : (member + 1) * tiles],
                    )  # fmt: skip
                best = tile_max[member * tiles]
                for index in range(member * tiles + 1, (member + 1) * tiles):
                    best = max(best, tile_max[index])
                plane_max[member] = best
                largest = max(largest, best)
            for k in range(bounds.size):
                bound = bounds[k]
                zeros[sample, k] += within[k]
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


def _magnitude_block(
    source: Any, magnitude: Any, bounds: Any, within: Any
) -> None:  # pragma: no cover - compiled by numba
    """|x| of one block into the scratch, and its values within each ε (the block in L1).

    Slices indexed from 0: LLVM then knows no index is negative and vectorises."""
    sign_off = np.int32(0x7FFFFFFF)
    for index in range(source.size):
        magnitude[index] = source[index] & sign_off
    for k in range(bounds.size):
        bound = bounds[k]
        found = 0
        for index in range(magnitude.size):
            if magnitude[index] <= bound:  # LLVM turns this into a vector select
                found += 1
        within[k] += found


def _largest(values: Any, count: int) -> Any:  # pragma: no cover - compiled by numba
    """The largest of ``values[:count]``."""
    best = values[0]
    for index in range(1, count):
        best = max(best, values[index])
    return best


def _tile_maxima(
    plane: Any, width: int, tile_h: int, tile_w: int, column_max: Any, tile_max: Any
) -> None:  # pragma: no cover - compiled by numba
    """Per tile, the largest |x| of one plane: column maxima over a band of rows, then tiles.

    Rows are slices indexed from 0, so that LLVM knows no index is negative and vectorises."""
    height = plane.size // width
    cols = (width + tile_w - 1) // tile_w
    for band, top in enumerate(range(0, height, tile_h)):
        column_max[:width] = plane[top * width : (top + 1) * width]
        for y in range(top + 1, min(height, top + tile_h)):
            line = plane[y * width : (y + 1) * width]
            for x in range(width):
                column_max[x] = max(column_max[x], line[x])
        for col in range(cols):
            left = col * tile_w
            tile_max[band * cols + col] = _largest(column_max[left:], min(tile_w, width - left))


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
    _magnitude_block = _compile(_magnitude_block)
    _largest = _compile(_largest)
    _tile_maxima = _compile(_tile_maxima)
    _tile_sizes = _compile(_tile_sizes)

_KERNEL: Any = None if numba is None else _compile(_count_planes)
