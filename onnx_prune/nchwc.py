"""onnxruntime's blocked channel layout: probed maps taken out before their reorder, counted there.

On x86 CPUs onnxruntime runs convolutions in a blocked layout, NCHWc: a map [N, C, H, W] is held
as [N, ⌈C/B⌉, H, W, B], B channels side by side (B = 8 with AVX2, 16 with AVX-512; channels
padded up to a multiple of B), and is reordered back to NCHW only where a plain operator or a
graph output needs it. Making every probed map a graph output therefore adds one reorder per map
and undoes the residual Conv + Add fusions: on the embedded model, 58 reorders, and inference
with its maps bound as outputs at 1.9× plain (measured, interleaved).

Here the probed model is optimized by onnxruntime for this machine once, and each probed map that
leaves through a reorder is taken out before it, still blocked (the reorder stays only where
another node reads its output): the same inference then costs 1.04× plain. The maps are counted
in the blocked layout by a kernel that reads each value once, the B channels of a pixel side by
side in one vector, and leaves the padding channels out. ``block_size`` checks the layout on a
tiny model first; anything unexpected and the caller keeps the plain probed model.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_prune import fastcount
from onnx_prune.errors import OnnxPruneError
from onnx_prune.probes import ProbedModel
from onnx_prune.runtime import ModelSource, SessionOptions, cpu_optimized, open_session

logger = logging.getLogger(__name__)

_DOMAIN = "com.microsoft.nchwc"
_REORDER = "ReorderOutput"
_NO_FILE = Path(tempfile.gettempdir())  # the source of a model built in memory (never read)


@functools.cache
def block_size() -> int:
    """onnxruntime's channel block on this machine, checked on a tiny convolution: its blocked
    output, unblocked, must equal the reordered one. 0: no blocked layout here."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 16, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "block_size",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    try:
        optimized = cpu_optimized(ModelSource(path=_NO_FILE, data_folder=_NO_FILE, model=model))
        reorders = [n for n in optimized.graph.node if (n.domain, n.op_type) == (_DOMAIN, _REORDER)]
        if len(reorders) != 1:
            return 0
        blocked = reorders[0].input[0]
        optimized.graph.output.append(
            helper.make_tensor_value_info(blocked, TensorProto.FLOAT, None)
        )
        session = open_session(
            ModelSource(path=_NO_FILE, data_folder=_NO_FILE, model=optimized),
            SessionOptions(optimize=False),
        )
        x = rng.normal(size=(1, 16, 4, 4)).astype(np.float32)
        plain, packed = session.run(["y", blocked], {"x": x})
    except OnnxPruneError as error:
        logger.debug("no blocked layout: %s", error)
        return 0
    block = int(packed.shape[1]) if packed.ndim == 4 else 0
    if block < 3 or packed.shape != (1, block, 4, 4):
        return 0
    return block if np.array_equal(unblock(packed, 3, block), plain) else 0


def unblock(values: np.ndarray, channels: int, block: int) -> np.ndarray:
    """A blocked map [N, ⌈C/B⌉·B, H, W] (memory [N, ⌈C/B⌉, H, W, B]) as NCHW [N, C, H, W]."""
    samples, padded, height, width = values.shape
    lanes = values.reshape(samples, padded // block, height, width, block)
    return lanes.transpose(0, 1, 4, 2, 3).reshape(samples, padded, height, width)[:, :channels]


def take_out_blocked(source: ModelSource, probed: ProbedModel) -> ProbedModel | None:
    """The probed model optimized for this machine, each probed map that leaves through a reorder
    taken out before it in the blocked layout (its probe told the block and channels); None when
    none does, or the layout is not there. Open its session with ``optimize=False``."""
    block = block_size()
    if not block:
        return None
    optimized = cpu_optimized(replace(source, model=probed.model))
    graph = optimized.graph
    if _feeds(optimized) != _feeds(probed.model):
        return None  # e.g. an old model's initializers, listed as inputs, now asked for
    reorders = {
        node.output[0]: node
        for node in graph.node
        if (node.domain, node.op_type) == (_DOMAIN, _REORDER)
        and _attribute(node, "channels_last") == 0
    }
    read = {name for node in graph.node for name in node.input}
    outputs = {output.name for output in graph.output}
    probes, taken = [], {}
    for probe in probed.manifest.probes:
        node = reorders.get(probe.tile_max)
        if probe.kind != "tensor" or node is None or probe.tile_max not in outputs:
            probes.append(probe)
            continue
        taken[probe.tile_max] = node
        channels = int(_attribute(node, "channels"))
        probes.append(replace(probe, tile_max=node.input[0], block=block, channels=channels))
    if not taken:
        return None
    kept = [node for node in graph.node if node.output[0] not in taken or node.output[0] in read]
    del graph.node[:]
    graph.node.extend(kept)
    still_written = {name for node in kept for name in node.output}
    new_outputs = [
        output
        for output in graph.output
        if output.name not in taken or output.name in still_written
    ]
    new_outputs += [
        helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None)
        for node in taken.values()
    ]
    del graph.output[:]
    graph.output.extend(new_outputs)
    manifest = replace(probed.manifest, probes=tuple(probes))
    logger.debug(
        "%d probed maps taken out in onnxruntime's blocked layout (block %d)", len(taken), block
    )
    return ProbedModel(optimized, manifest)


def _feeds(model: onnx.ModelProto) -> set[str]:
    """The graph inputs that are not initializers: what a run must be fed."""
    constants = {initializer.name for initializer in model.graph.initializer}
    return {value.name for value in model.graph.input if value.name not in constants}


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return 0


def count_blocked(
    values: np.ndarray, block: int, channels: int, eps: np.ndarray, tile: tuple[int, int]
) -> fastcount.MapCounts:
    """The counts of :func:`fastcount.count_map` for the NCHW map ``values`` holds blocked
    ([N, ⌈C/B⌉·B, H, W] of memory [N, ⌈C/B⌉, H, W, B]), padding channels left out."""
    if _KERNEL is None:
        raise RuntimeError("the counting kernel needs numba: pip install 'onnx-prune[fast]'")
    samples, padded, height, width = values.shape
    lanes = np.ascontiguousarray(values, np.float32).view(np.int32)
    lanes = lanes.reshape(samples, padded // block, height, width, block)
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    bounds = fastcount._bound_bits(eps)
    zeros = np.zeros((samples, bounds.size), np.int64)
    zero_channels = np.zeros((samples, bounds.size), np.int64)
    zero_tiles = np.zeros(bounds.size, np.int64)
    tile_saved = np.zeros(bounds.size, np.int64)
    largest = 0
    if lanes.size:
        largest = _KERNEL(
            lanes, channels, bounds, tile_h, tile_w, zeros, zero_channels, zero_tiles, tile_saved
        )
    return fastcount.MapCounts(
        zeros, zero_channels, zero_tiles, tile_saved, largest < fastcount._INFINITY_BITS
    )


def _count_blocked(
    lanes: Any,
    channels: int,
    bounds: Any,
    tile_h: int,
    tile_w: int,
    zeros: Any,
    zero_channels: Any,
    zero_tiles: Any,
    tile_saved: Any,
) -> int:  # pragma: no cover - compiled by numba; checked against numpy in the tests
    """The kernel, one block of B channels of one sample at a time, a row band of ``tile_h``
    rows at a time: each row (W·B values, contiguous) is read once into |x| bit patterns and
    every ε counted over it with the row in L1; the band's column maxima give the tile maxima
    of all B channels side by side. Padding channels (of the last block) are counted over the
    row too and subtracted, and left out of the channel and tile counts."""
    samples, blocks, height, width, block = lanes.shape
    row_size = width * block
    cols = (width + tile_w - 1) // tile_w
    rows = (height + tile_h - 1) // tile_h
    sizes = _tile_sizes(height, width, tile_h, tile_w)
    magnitude = np.empty(row_size, np.int32)
    column_max = np.empty(row_size, np.int32)
    tile_max = np.empty((rows * cols, block), np.int32)
    within = np.zeros(bounds.size, np.int64)
    largest = np.int32(0)
    sign_off = np.int32(0x7FFFFFFF)
    for sample in range(samples):
        for index in range(blocks):
            valid = min(block, channels - index * block)
            within[:] = 0
            flat = lanes[sample, index].reshape(height * row_size)
            for band in range(rows):
                top = band * tile_h
                column_max[:] = 0
                for y in range(top, min(height, top + tile_h)):
                    row = flat[y * row_size : (y + 1) * row_size]
                    for i in range(row_size):
                        magnitude[i] = row[i] & sign_off
                        column_max[i] = max(column_max[i], magnitude[i])
                    for k in range(bounds.size):
                        bound = bounds[k]
                        found = np.int32(0)
                        for i in range(row_size):
                            found += np.int32(magnitude[i] <= bound)
                        if valid < block:  # the padding channels' values are not the map's
                            for x in range(width):
                                for lane in range(valid, block):
                                    found -= np.int32(magnitude[x * block + lane] <= bound)
                        within[k] += found
                for col in range(cols):
                    cell = tile_max[band * cols + col]
                    cell[:] = 0
                    for x in range(col * tile_w, min(width, (col + 1) * tile_w)):
                        for lane in range(block):
                            cell[lane] = max(cell[lane], column_max[x * block + lane])
            for k in range(bounds.size):
                bound = bounds[k]
                zeros[sample, k] += within[k]
                for lane in range(valid):
                    best = np.int32(0)
                    for cell in range(rows * cols):
                        best = max(best, tile_max[cell, lane])
                        if tile_max[cell, lane] <= bound:
                            zero_tiles[k] += 1
                            tile_saved[k] += sizes[cell]
                    if best <= bound:
                        zero_channels[sample, k] += 1
                    if k == 0:
                        largest = max(largest, best)
    return int(largest)


_tile_sizes = fastcount._tile_sizes
_KERNEL: Any = None if fastcount.numba is None else fastcount._compile(_count_blocked)
