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
_SAMPLE_IN_L2 = 1 << 16  # 256 KB of float32: a sample this small is counted in one span
_PADDING_BITS = np.int32(0x7FC00000)  # a quiet NaN: above every ε, even +inf
_SPAN_ELEMENTS = 4096  # 16 KB of float32: read from memory once, every other pass in L1
_PIECE_ELEMENTS = 1 << 20  # the int32 lane counters of one pass never see more than this
_EPS_PER_PASS = 6  # ε counted together in one pass (the default set is six)

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
    _, _, height, width = planes.shape
    tile_h, tile_w = (min(tile[0], height), min(tile[1], width)) if tile else (height, width)
    return _counted(_KERNEL, planes.view(np.int32), _bound_bits(eps), tile_h, tile_w)


def count_blocked(
    values: np.ndarray, block: int, channels: int, eps: np.ndarray, tile: tuple[int, int]
) -> MapCounts:
    """The counts of :func:`count_map` for the NCHW map that ``values`` holds in onnxruntime's
    blocked layout: shape [n, P, H, W] (P = ⌈C/B⌉·B), memory [n, P/B, H, W, B], of which the
    first ``channels`` channels are the map's (see nchwc).

    The padding channels are overwritten with a NaN bit pattern, which no ε admits, so that
    whole rows can be counted as they lie: ``values`` must be a scratch buffer (a bound output).
    """
    if _KERNEL is None:
        raise RuntimeError("the counting kernel needs numba: pip install 'onnx-prune[fast]'")
    if values.dtype != np.float32 or not values.flags.c_contiguous:
        raise ValueError("a blocked map must be a C-contiguous float32 buffer")
    samples, padded, height, width = values.shape
    lanes = values.view(np.int32).reshape(samples, padded // block, height, width, block)
    valid = channels - (padded // block - 1) * block
    lanes[:, -1, :, :, valid:] = _PADDING_BITS
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    return _counted(_BLOCKED_KERNEL, lanes, _bound_bits(eps), tile_h, tile_w, valid)


def _counted(
    kernel: Any, bits: np.ndarray, bounds: np.ndarray, tile_h: int, tile_w: int, *more: int
) -> MapCounts:
    """A kernel's counts of ``bits`` (samples on axis 0) into new int64 arrays; ``more``: the
    kernel's own last arguments."""
    samples = bits.shape[0]
    zeros = np.zeros((samples, bounds.size), np.int64)
    zero_channels = np.zeros((samples, bounds.size), np.int64)
    zero_tiles = np.zeros(bounds.size, np.int64)
    tile_saved = np.zeros(bounds.size, np.int64)
    largest = 0
    if bits.size:
        largest = kernel(
            bits, bounds, tile_h, tile_w, np.int32(1),
            zeros, zero_channels, zero_tiles, tile_saved, *more,
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
    one: Any,
    zeros: Any,
    zero_channels: Any,
    zero_tiles: Any,
    tile_saved: Any,
) -> int:  # pragma: no cover - compiled by numba; checked against numpy in the tests
    """The kernel: a span of about 16 KB at a time (a group of whole planes, or a few bands of
    one large plane), read from memory once by the first ε pass; the other ε passes and the tile
    maxima then read it from L1. The tile and plane maxima of a group are kept (1/64 of the
    values for 8×8 tiles) and every ε is checked against them at the end of the group.

    ``one`` is the int32 1 the ε passes count with, a run-time value on purpose (see
    :func:`_within_six`). Returns the largest |x| bit pattern (for the finiteness check).
    """
    samples, channels, height, width = bits.shape
    plane_size = height * width
    flat = bits.reshape(samples * channels * plane_size)
    tiles = ((height + tile_h - 1) // tile_h) * ((width + tile_w - 1) // tile_w)
    group = max(1, min(channels, _SPAN_ELEMENTS // plane_size))
    column_max = np.empty(2 * width, np.int32)
    tile_max = np.empty(group * tiles, np.int32)
    plane_max = np.empty(group, np.int32)
    one_plane = _tile_sizes(height, width, tile_h, tile_w)
    tile_size = np.empty(group * tiles, np.int64)
    for index in range(group):
        tile_size[index * tiles : (index + 1) * tiles] = one_plane
    within = np.zeros(bounds.size, np.int64)
    largest = np.int32(0)
    for sample in range(samples):
        within[:] = 0
        for first in range(0, channels, group):
            planes = min(group, channels - first)
            start = (sample * channels + first) * plane_size
            if plane_size <= _SPAN_ELEMENTS:
                span = flat[start : start + planes * plane_size]
                _count_span(span, bounds, one, within)
                if plane_size == 1:  # rank 2: each value is its own plane and tile
                    for member in range(planes):
                        tile_max[member] = plane_max[member] = _magnitude(span[member])
                else:
                    for member in range(planes):
                        plane_max[member] = _plane_maxima(
                            span[member * plane_size : (member + 1) * plane_size],
                            width, tile_h, tile_w, column_max,
                            tile_max[member * tiles : (member + 1) * tiles],
                        )  # fmt: skip
            else:
                plane_max[0] = _large_plane(
                    flat[start : start + plane_size], width, tile_h, tile_w,
                    bounds, one, within, column_max, tile_max,
                )  # fmt: skip
            _tile_counts(tile_max[: planes * tiles], tile_size, bounds, zero_tiles, tile_saved)
            for k in range(bounds.size):
                zero_channels[sample, k] += _at_most(plane_max[:planes], bounds[k])
            largest = max(largest, _largest(plane_max[:planes]))
        for k in range(bounds.size):
            zeros[sample, k] += within[k]
    return int(largest)


def _large_plane(
    plane: Any,
    width: int,
    tile_h: int,
    tile_w: int,
    bounds: Any,
    one: Any,
    within: Any,
    column_max: Any,
    tile_max: Any,
) -> Any:  # pragma: no cover - compiled by numba
    """One plane larger than a span, counted a span at a time: whole bands of tiles each (at
    least one band), or any pieces when the tile is the whole plane. Returns its largest |x|."""
    height = plane.size // width
    if tile_h == height and tile_w == width:
        best = np.int32(0)
        for start in range(0, plane.size, _SPAN_ELEMENTS):
            piece = plane[start : start + _SPAN_ELEMENTS]
            _count_span(piece, bounds, one, within)
            best = max(best, _largest_magnitude(piece))
        tile_max[0] = best
        return best
    cols = (width + tile_w - 1) // tile_w
    rows = tile_h * max(1, _SPAN_ELEMENTS // (tile_h * width))
    for top in range(0, height, rows):
        chunk = plane[top * width : min(height, top + rows) * width]
        _count_span(chunk, bounds, one, within)
        first_tile = (top // tile_h) * cols
        _tile_maxima(chunk, width, tile_h, tile_w, column_max, tile_max[first_tile:])
    return _largest(tile_max[: ((height + tile_h - 1) // tile_h) * cols])


def _count_span(span: Any, bounds: Any, one: Any, within: Any) -> None:  # pragma: no cover
    """Add to ``within`` the values of ``span`` with |x| <= each ε: six ε a pass while six are
    left, the rest one a pass (the span is in L1 after the first). Pieces of at most
    ``_PIECE_ELEMENTS`` keep the int32 counters of a pass from overflowing."""
    for start in range(0, span.size, _PIECE_ELEMENTS):
        piece = span[start : start + _PIECE_ELEMENTS]
        first = 0
        while first + _EPS_PER_PASS <= bounds.size:
            _within_six(piece, bounds, first, one, within)
            first += _EPS_PER_PASS
        for k in range(first, bounds.size):
            within[k] += _within_one(piece, bounds[k], one)


def _within_six(
    span: Any, bounds: Any, first: int, one: Any, within: Any
) -> None:  # pragma: no cover - compiled by numba
    """Add to ``within[first:first + 6]`` the values of ``span`` with |x| <= each of
    ``bounds[first:first + 6]``, in one pass.

    Six named int32 counters: LLVM vectorises each into one 16-lane register. Each counts with
    ``counter + one if |x| <= bound else counter``: were ``one`` a constant, LLVM would rewrite
    that as ``counter + (|x| <= bound)``, which AVX-512 compiles into a compare, a mask-to-vector
    move and a subtraction; with a run-time ``one`` it stays a compare and a masked add, a third
    fewer instructions in a loop whose speed is set by its instruction count."""
    b0, b1, b2 = bounds[first], bounds[first + 1], bounds[first + 2]
    b3, b4, b5 = bounds[first + 3], bounds[first + 4], bounds[first + 5]
    c0 = c1 = c2 = c3 = c4 = c5 = np.int32(0)
    for index in range(span.size):
        magnitude = _magnitude(span[index])
        c0 = np.int32(c0 + one) if magnitude <= b0 else c0
        c1 = np.int32(c1 + one) if magnitude <= b1 else c1
        c2 = np.int32(c2 + one) if magnitude <= b2 else c2
        c3 = np.int32(c3 + one) if magnitude <= b3 else c3
        c4 = np.int32(c4 + one) if magnitude <= b4 else c4
        c5 = np.int32(c5 + one) if magnitude <= b5 else c5
    within[first] += c0
    within[first + 1] += c1
    within[first + 2] += c2
    within[first + 3] += c3
    within[first + 4] += c4
    within[first + 5] += c5


def _within_one(span: Any, bound: Any, one: Any) -> Any:  # pragma: no cover - compiled by numba
    """The values of ``span`` with |x| <= ``bound`` (int32 counter, as in :func:`_within_six`)."""
    found = np.int32(0)
    for index in range(span.size):
        found = np.int32(found + one) if _magnitude(span[index]) <= bound else found
    return found


def _magnitude(bits: Any) -> Any:  # pragma: no cover - compiled by numba
    """|x| as a bit pattern: the sign bit cleared. Kept int32 on purpose: numba widens int32
    arithmetic to int64, which would halve the lanes of every vector loop that uses it."""
    return np.int32(bits & np.int32(0x7FFFFFFF))


def _at_most(values: Any, bound: Any) -> Any:  # pragma: no cover - compiled by numba
    """How many of ``values`` (maxima, already |x|) are <= ``bound`` (a select, not a branch)."""
    found = 0
    for index in range(values.size):
        found += 1 if values[index] <= bound else 0
    return found


def _tile_counts(
    tile_max: Any, tile_size: Any, bounds: Any, zero_tiles: Any, tile_saved: Any
) -> None:  # pragma: no cover - compiled by numba
    """Per ε, the tiles whose largest |x| is within it and the values in those tiles.

    Selects, not branches: whether a tile is within ε is as good as random, and a branch on it
    would be mispredicted half the time; the selects vectorise."""
    for k in range(bounds.size):
        bound = bounds[k]
        skipped = 0
        saved = 0
        for index in range(tile_max.size):
            hit = tile_max[index] <= bound
            skipped += 1 if hit else 0
            saved += tile_size[index] if hit else 0
        zero_tiles[k] += skipped
        tile_saved[k] += saved


def _largest(values: Any) -> Any:  # pragma: no cover - compiled by numba
    """The largest of ``values`` (not empty)."""
    best = values[0]
    for index in range(1, values.size):
        best = max(best, values[index])
    return best


def _largest_magnitude(values: Any) -> Any:  # pragma: no cover - compiled by numba
    """The largest |x| bit pattern of ``values`` (not empty)."""
    best = _magnitude(values[0])
    for index in range(1, values.size):
        best = max(best, _magnitude(values[index]))
    return best


def _plane_maxima(
    plane: Any, width: int, tile_h: int, tile_w: int, column_max: Any, tile_max: Any
) -> Any:  # pragma: no cover - compiled by numba
    """The tile maxima of one plane into ``tile_max``; returns the plane's largest |x|."""
    if tile_h * tile_w == plane.size:
        tile_max[0] = _largest_magnitude(plane)
        return tile_max[0]
    _tile_maxima(plane, width, tile_h, tile_w, column_max, tile_max)
    return _largest(tile_max)


def _tile_maxima(
    rows: Any, width: int, tile_h: int, tile_w: int, column_max: Any, tile_max: Any
) -> None:  # pragma: no cover - compiled by numba
    """Per tile, the largest |x| of whole bands of rows (a plane, or bands of one): column
    maxima over each band of rows, then each tile's columns, row-major into ``tile_max``.

    ``column_max`` holds two rows of scratch: the column maxima, then their running windows."""
    height = rows.size // width
    cols = (width + tile_w - 1) // tile_w
    for band, top in enumerate(range(0, height, tile_h)):
        tall = min(tile_h, height - top)
        _band_column_max(rows[top * width : (top + tall) * width], width, column_max[:width])
        _band_tile_max(
            column_max[:width],
            column_max[width:],
            tile_w,
            tile_max[band * cols : (band + 1) * cols],
        )


def _band_column_max(band: Any, width: int, column_max: Any) -> None:  # pragma: no cover
    """The largest |x| of each column of one band of rows, a row at a time.

    Rows are slices indexed from 0, so that LLVM knows no index is negative and vectorises."""
    for x in range(width):
        column_max[x] = _magnitude(band[x])
    for y in range(1, band.size // width):
        line = band[y * width : (y + 1) * width]
        for x in range(width):
            column_max[x] = max(column_max[x], _magnitude(line[x]))


def _band_tile_max(
    column_max: Any, window: Any, tile_w: int, tile_max: Any
) -> None:  # pragma: no cover - compiled by numba
    """Each tile's largest |x| from the column maxima of its band.

    Vectorised with doubling windows rather than a short scalar loop per tile: after the passes
    ``window[x]`` is the largest of ``column_max[x : x + span]``, ``span`` the largest power of
    two <= ``tile_w``, and two such windows, one at each end, cover a tile (max is idempotent,
    so their overlap does not matter). A ragged edge tile narrower than ``span`` is scanned."""
    width = column_max.size
    for x in range(width):
        window[x] = column_max[x]
    span = 1
    while 2 * span <= tile_w:
        for x in range(width - span):  # reads ahead of what it writes: safe in place
            window[x] = max(window[x], window[x + span])
        span *= 2
    for col in range(tile_max.size):
        left = col * tile_w
        right = min(width, left + tile_w)
        if right - left >= span:
            tile_max[col] = max(window[left], window[right - span])
        else:
            tile_max[col] = _largest(column_max[left:right])


def _count_blocks(
    lanes: Any,
    bounds: Any,
    tile_h: int,
    tile_w: int,
    one: Any,
    zeros: Any,
    zero_channels: Any,
    zero_tiles: Any,
    tile_saved: Any,
    last_valid: int,
) -> int:  # pragma: no cover - compiled by numba; checked against numpy in the tests
    """The blocked kernel, one sample at a time. Its values are counted for every ε as they lie
    (the order of values does not matter to a count): the whole sample in one span when it fits
    in L2, else a band of ``tile_h`` rows at a time, just before the band's maxima are taken
    while it is in cache. The maxima go a block of B channels at a time, B side by side in one
    vector: column maxima of a band, then its tile maxima [tile, lane]. The tile and channel
    counts of the whole sample follow at once.

    The padding lanes hold NaN patterns (see :func:`count_blocked`): never within ε, so only
    the largest |x| has to leave them out; channel c is lane c of the plane maxima.
    """
    samples, blocks, height, width, block = lanes.shape
    row = width * block
    cols = (width + tile_w - 1) // tile_w
    cells = ((height + tile_h - 1) // tile_h) * cols
    channels = (blocks - 1) * block + last_valid
    whole = blocks * height * row <= _SAMPLE_IN_L2
    one_block = np.repeat(_tile_sizes(height, width, tile_h, tile_w), block)
    lane_sizes = np.empty(blocks * cells * block, np.int64)
    for index in range(blocks):
        lane_sizes[index * cells * block : (index + 1) * cells * block] = one_block
    column_max = np.empty(row, np.int32)
    tile_max = np.empty(blocks * cells * block, np.int32)
    plane_max = np.empty(blocks * block, np.int32)
    within = np.zeros(bounds.size, np.int64)
    largest = np.int32(0)
    for sample in range(samples):
        within[:] = 0
        if whole:
            _count_span(lanes[sample].reshape(blocks * height * row), bounds, one, within)
        for index in range(blocks):
            plane = lanes[sample, index].reshape(height * row)
            first = index * cells * block
            for band, top in enumerate(range(0, height, tile_h)):
                chunk = plane[top * row : min(height, top + tile_h) * row]
                if not whole:
                    _count_span(chunk, bounds, one, within)
                _band_column_max(chunk, row, column_max)
                start = first + band * cols * block
                _blocked_tile_max(column_max, block, tile_w, tile_max[start : start + cols * block])
            channel_max = plane_max[index * block : (index + 1) * block]
            channel_max[:] = tile_max[first : first + block]
            for cell in range(1, cells):
                _max_into(channel_max, tile_max[first + cell * block : first + (cell + 1) * block])
        _tile_counts(tile_max, lane_sizes, bounds, zero_tiles, tile_saved)
        for k in range(bounds.size):
            zero_channels[sample, k] += _at_most(plane_max, bounds[k])
            zeros[sample, k] += within[k]
        largest = max(largest, _largest(plane_max[:channels]))
    return int(largest)


def _blocked_tile_max(
    column_max: Any, block: int, tile_w: int, tile_max: Any
) -> None:  # pragma: no cover - compiled by numba
    """The tile maxima of one band, [tile, lane], from its column maxima [x, lane]: B lanes at
    a time, the columns of each tile folded in."""
    width = column_max.size // block
    for col in range(tile_max.size // block):
        cell = tile_max[col * block : (col + 1) * block]
        left = col * tile_w
        cell[:] = column_max[left * block : (left + 1) * block]
        for x in range(left + 1, min(width, left + tile_w)):
            _max_into(cell, column_max[x * block : (x + 1) * block])


def _max_into(target: Any, values: Any) -> None:  # pragma: no cover - compiled by numba
    """``target = max(target, values)``, element by element."""
    for index in range(target.size):
        target[index] = max(target[index], values[index])


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
    _magnitude = _compile(_magnitude)
    _within_six = _compile(_within_six)
    _within_one = _compile(_within_one)
    _count_span = _compile(_count_span)
    _at_most = _compile(_at_most)
    _tile_counts = _compile(_tile_counts)
    _largest = _compile(_largest)
    _largest_magnitude = _compile(_largest_magnitude)
    _band_column_max = _compile(_band_column_max)
    _band_tile_max = _compile(_band_tile_max)
    _tile_maxima = _compile(_tile_maxima)
    _plane_maxima = _compile(_plane_maxima)
    _large_plane = _compile(_large_plane)
    _tile_sizes = _compile(_tile_sizes)
    _max_into = _compile(_max_into)
    _blocked_tile_max = _compile(_blocked_tile_max)

_KERNEL: Any = None if numba is None else _compile(_count_planes)
_BLOCKED_KERNEL: Any = None if numba is None else _compile(_count_blocks)
