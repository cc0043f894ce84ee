"""onnxruntime's blocked channel layout: probed maps taken out before their reorder, counted there.

On x86 CPUs onnxruntime runs convolutions in a blocked layout, NCHWc: a map [N, C, H, W] is held
as [N, ⌈C/B⌉, H, W, B], B channels side by side (B = 8 with AVX2, 16 with AVX-512; channels
padded up to a multiple of B), and is reordered back to NCHW only where a plain operator or a
graph output needs it. Making every probed map a graph output therefore adds one reorder per map:
on the embedded model, 58 reorders, and inference with its maps bound as outputs at 1.9× plain
(measured, interleaved). It also keeps onnxruntime from fusing a residual Add into the
convolution before it, whose output is then a probed map: that stays so here too.

Here the probed model is optimized by onnxruntime for this machine once, and each probed map that
leaves through a reorder is taken out before it, still blocked (the reorder stays only where
another node or the model's own output reads it): the same inference then costs 1.04–1.10×
plain. The maps are counted
in the blocked layout by a kernel that reads each value once, the B channels of a pixel side by
side in one vector, and leaves the padding channels out. ``block_size`` checks the layout on a
tiny model first; anything unexpected and the caller keeps the plain probed model.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.errors import OnnxPruneError
from onnx_prune.probes import Probe, ProbedModel
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


def take_out_blocked(
    source: ModelSource, probed: ProbedModel, keep: Collection[str] = ()
) -> ProbedModel | None:
    """The probed model optimized for this machine, each probed map that leaves through a reorder
    taken out before it in the blocked layout (its probe told the block and channels); None when
    none does, or the layout is not there. The outputs ``keep`` (the model's own) stay as they
    are. Open its session with ``optimize=False``."""
    block = block_size()
    if not block:
        return None
    optimized = cpu_optimized(replace(source, model=probed.model))
    if _feeds(optimized) != _feeds(probed.model):
        return None  # e.g. an old model's initializers, listed as inputs, now asked for
    probes, taken = _blocked_probes(optimized.graph, probed.manifest.probes, block)
    if not taken:
        return None
    _take_out(optimized.graph, taken, keep)
    logger.debug(
        "%d probed maps taken out in onnxruntime's blocked layout (block %d)", len(taken), block
    )
    return ProbedModel(optimized, replace(probed.manifest, probes=probes))


def _blocked_probes(
    graph: onnx.GraphProto, probes: Sequence[Probe], block: int
) -> tuple[tuple[Probe, ...], dict[str, onnx.NodeProto]]:
    """Each probe whose map is a graph output written by a reorder to NCHW, retargeted to the
    reorder's blocked input; and those reorders, by the map they write."""
    reorders = {
        node.output[0]: node
        for node in graph.node
        if (node.domain, node.op_type) == (_DOMAIN, _REORDER)
        and _attribute(node, "channels_last") == 0
    }
    outputs = {output.name for output in graph.output}
    retargeted, taken = [], {}
    for probe in probes:
        node = reorders.get(probe.tile_max)
        channels = int(_attribute(node, "channels")) if node is not None else 0
        known = probe.shape[1] if len(probe.shape) == 4 else 0  # 0: not known
        if (
            probe.kind != "tensor"
            or node is None
            or probe.tile_max not in outputs
            or channels < 1
            or known not in (0, channels)
        ):
            retargeted.append(probe)
            continue
        taken[probe.tile_max] = node
        retargeted.append(replace(probe, tile_max=node.input[0], block=block, channels=channels))
    return tuple(retargeted), taken


def _take_out(
    graph: onnx.GraphProto, taken: dict[str, onnx.NodeProto], keep: Collection[str]
) -> None:
    """The blocked input of every reorder in ``taken`` made a graph output; the reorder and its
    output removed unless a node reads it or it is one of ``keep``."""
    needed = {name for node in graph.node for name in node.input} | set(keep)
    kept = [node for node in graph.node if node.output[0] not in taken or node.output[0] in needed]
    del graph.node[:]
    graph.node.extend(kept)
    outputs = [
        output for output in graph.output if output.name not in taken or output.name in needed
    ]
    outputs += [
        helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None)
        for node in taken.values()
    ]
    del graph.output[:]
    graph.output.extend(outputs)


def _feeds(model: onnx.ModelProto) -> set[str]:
    """The graph inputs that are not initializers: what a run must be fed."""
    constants = {initializer.name for initializer in model.graph.initializer}
    return {value.name for value in model.graph.input if value.name not in constants}


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return 0
