"""The probe pass: a copy of the model with small measuring nodes on every feature map.

Pure: the input model is never changed; the result carries a manifest naming, for each probed
tensor, the graph outputs that measure it. Collection looks outputs up by that manifest only.

Only small tensors leave the session. For a 4-D feature map ``x`` [N, C, H, W] of known C, H, W:

- ``|x|`` is formed as ``x + relu(-2x)`` (one depthwise Conv with a fused Relu, one Add), skipped
  when ``x`` is non-negative by construction (Relu, Clip at 0, ... upstream). These ops, unlike
  Abs or ReduceMax, stay in onnxruntime's blocked NCHWc layout, which is what makes probing cheap.
- tile maxima: ``MaxPool`` of ``|x|`` over tiles (default 8×8, ragged edges padded) give the
  zero channels and zero tiles for every ε at once, on the host;
- element counts, per ε: ``GlobalAveragePool(Clip((|x| − ε)·2^k, 0, 1))`` is, exactly, the share
  of the plane with ``|x| > ε``: the scale 2^k is a power of two, so the product is exact, and
  large enough that any float above ε maps to at least 1. Per-plane sums of 0/1 values are exact
  in float32 up to 2^24 values; planes larger than 2^22 fall back to the generic probe. Values
  below 2^-127 in magnitude (float32 subnormals) may count as zero.

Other tensors (rank 2, unknown dims, integer maps) get the generic probe: the tensor itself is an
output, declared with its real element type, and the host counts it with numpy. An integer
(quantized) map is zero where it equals its zero point, and ε applies to its dequantized value;
a scale and zero point computed at run time (``DynamicQuantizeLinear``) are outputs too, read per
batch. Every node is valid at the model's own opset (7 and up). With ``on_host=True`` every
tensor gets it (for the compiled counting kernel, see fastcount): the tensor is marked as a graph
output as it is, no node added, except a graph input, which passes through one Identity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.errors import UnsupportedModelError
from onnx_prune.layers import ComputeLayer
from onnx_prune.load import default_opset
from onnx_prune.quantization import FeatureMapQuantization, feature_map_quantization
from onnx_prune.shapes import UNKNOWN, TensorType, infer_tensor_types

PREFIX = "onnx_prune_probe"
MAX_EXACT_PLANE = 1 << 22
DEFAULT_TILE = (8, 8)

_NONNEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Abs", "Softmax", "Softplus"})
_NONNEGATIVE_IF_INPUTS = frozenset(
    {
        "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Concat", "Flatten",
        "Reshape", "Identity", "Dropout", "Transpose", "Squeeze", "Unsqueeze", "Split", "Slice",
        "Resize", "Upsample", "Add", "Sum", "Max", "Mul", "DepthToSpace", "SpaceToDepth",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """The outputs that measure one tensor.

    ``kind`` is ``"plane"`` (tile maxima + per-ε counts computed in the graph) or ``"tensor"``
    (the tensor itself is an output, counted on the host). An integer map dequantizes with
    ``scale`` and ``zero_point``, or with the outputs ``scale_output``/``zero_point_output`` when
    they are computed at run time. ``block`` > 0: the output holds the map in onnxruntime's
    blocked layout, ``block`` channels side by side, of which the first ``channels`` are the
    map's (see nchwc).
    """

    tensor: str
    kind: str
    shape: tuple[int, ...]
    tile_max: str
    counts: tuple[str, ...] = ()
    scale: float = 1.0
    zero_point: float = 0.0
    scale_output: str | None = None
    zero_point_output: str | None = None
    block: int = 0
    channels: int = 0


@dataclass(frozen=True)
class ProbeManifest:
    """Which graph output measures which tensor, for the ε list and tile size the graph uses."""

    eps: tuple[float, ...]
    tile: tuple[int, int]
    probes: tuple[Probe, ...]

    def outputs(self) -> list[str]:
        """Every probe output, once each, in a fixed order."""
        names = [
            name
            for probe in self.probes
            for name in (probe.tile_max, *probe.counts, probe.scale_output, probe.zero_point_output)
            if name
        ]
        return list(dict.fromkeys(names))

    def probe(self, tensor: str) -> Probe:
        """The probe of ``tensor``."""
        for probe in self.probes:
            if probe.tensor == tensor:
                return probe
        raise KeyError(tensor)


@dataclass(frozen=True)
class ProbedModel:
    """A probed copy of a model and its manifest."""

    model: onnx.ModelProto
    manifest: ProbeManifest


def probed_tensors(layers: Sequence[ComputeLayer]) -> list[str]:
    """Each layer's IFM and OFM, once each, in graph order."""
    return list(dict.fromkeys(name for layer in layers for name in (layer.ifm, layer.ofm)))


def add_probes(
    model: onnx.ModelProto,
    layers: Sequence[ComputeLayer],
    *,
    eps: Sequence[float],
    tile: tuple[int, int] = DEFAULT_TILE,
    types: Mapping[str, TensorType] | None = None,
    on_host: bool = False,
) -> ProbedModel:
    """A copy of ``model`` measuring every compute layer's IFM and OFM at each ε.

    ``on_host``: every probed tensor leaves the session whole, to be counted on the host.
    """
    opset = default_opset(model)
    if opset < 7:
        raise UnsupportedModelError(f"opset {opset} is older than 7: re-export the model")
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    types = types if types is not None else infer_tensor_types(model)
    builder = _Builder(probed, opset, tuple(float(e) for e in eps), on_host=on_host)
    nonnegative = _NonNegative(probed.graph)
    quantization = _Quantization(model.graph)
    probes = []
    for tensor in probed_tensors(layers):
        known = types.get(tensor, UNKNOWN)
        probe = builder.add(tensor, known, tile, nonnegative(tensor))
        if _is_integer(known.elem_type):
            probe = builder.dequantized(probe, quantization(tensor))
        probes.append(probe)
    builder.finish()
    return ProbedModel(probed, ProbeManifest(builder.eps, tile, tuple(probes)))


_INTEGER_TYPES = frozenset(
    {
        TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
        TensorProto.INT32, TensorProto.UINT32,
    }
    | {getattr(TensorProto, name) for name in ("INT4", "UINT4") if hasattr(TensorProto, name)}
)  # fmt: skip


def _is_integer(elem_type: int) -> bool:
    return elem_type in _INTEGER_TYPES


class _Quantization:
    """The scale and zero point of integer feature maps, from the quantized ops around them."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._producers = {output: node for node in graph.node for output in node.output}
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):
                self._consumers.setdefault(name, []).append(node)
        self._constants = {t.name: t for t in graph.initializer}
        for node in graph.node:
            value = _constant_attribute(node) if node.op_type == "Constant" else None
            if value is not None and node.output:
                self._constants[node.output[0]] = value

    def __call__(self, tensor: str) -> FeatureMapQuantization | None:
        return feature_map_quantization(tensor, self._producers, self._consumers, self._value)

    def _value(self, name: str) -> np.ndarray | None:
        stored = self._constants.get(name)
        return None if stored is None else numpy_helper.to_array(stored)


def _constant_attribute(node: onnx.NodeProto) -> TensorProto | None:
    for attribute in node.attribute:
        if attribute.name == "value" and attribute.type == onnx.AttributeProto.TENSOR:
            value: TensorProto = attribute.t
            return value
    return None


def _attribute_text(node: onnx.NodeProto, name: str) -> str:
    for attribute in node.attribute:
        if attribute.name == name:
            return str(attribute.s.decode("utf-8", errors="replace"))
    return ""


class _NonNegative:
    """Decides, from the producing ops, whether a tensor can never hold a negative value."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._producers = {output: node for node in graph.node for output in node.output}
        self._initializers = {t.name: t for t in graph.initializer}
        self._memo: dict[str, bool] = {}

    def __call__(self, tensor: str) -> bool:
        if tensor not in self._memo:
            self._memo[tensor] = False
            self._memo[tensor] = self._decide(tensor)
        return self._memo[tensor]

    def _decide(self, tensor: str) -> bool:
        if tensor in self._initializers:
            return bool(np.all(numpy_helper.to_array(self._initializers[tensor]) >= 0))
        node = self._producers.get(tensor)
        if node is None:
            return False
        if node.op_type in _NONNEGATIVE_OPS:
            return True
        if node.op_type == "Clip":
            return self._clip_floor(node) >= 0
        if node.op_type in ("Resize", "Upsample") and _attribute_text(node, "mode") == "cubic":
            return False  # cubic interpolation overshoots below zero
        if node.op_type in _NONNEGATIVE_IF_INPUTS:
            data = node.input[:1] if node.op_type in ("Reshape", "Slice", "Resize") else node.input
            return all(self(name) for name in data if name)
        return False

    def _clip_floor(self, node: onnx.NodeProto) -> float:
        for attribute in node.attribute:
            if attribute.name == "min":
                return float(attribute.f)
        if len(node.input) > 1 and node.input[1] in self._initializers:
            return float(numpy_helper.to_array(self._initializers[node.input[1]]))
        return -math.inf


class _Builder:
    """Appends probe nodes, initializers and outputs with deterministic names."""

    def __init__(
        self, model: onnx.ModelProto, opset: int, eps: tuple[float, ...], *, on_host: bool
    ) -> None:
        self.model = model
        self.opset = opset
        self.eps = eps
        self.on_host = on_host
        self.graph_inputs = {value.name for value in model.graph.input}
        self.graph_outputs = {value.name for value in model.graph.output}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.index = 0

    def add(
        self, tensor: str, known: TensorType, tile: tuple[int, int], nonnegative: bool
    ) -> Probe:
        """Probe one tensor, in the graph when it is a float32 map of known C, H, W."""
        self.index += 1
        base = f"{PREFIX}_{self.index}"
        shape = known.shape
        if self.on_host:
            return self._tensor_probe(tensor, base, known)
        if known.elem_type == TensorProto.FLOAT and shape and len(shape) == 4:
            channels, height, width = shape[1:]
            if channels and height and width and height * width <= MAX_EXACT_PLANE:
                return self._plane_probe(tensor, base, (channels, height, width), tile, nonnegative)
        return self._tensor_probe(tensor, base, known)

    def dequantized(self, probe: Probe, found: FeatureMapQuantization | None) -> Probe:
        """``probe`` of an integer map with its scale and zero point (run-time ones as outputs).

        Without a known zero point, the integer 0 is zero and the scale is 1.
        """
        if found is None:
            return probe
        probe = replace(probe, scale=found.scale, zero_point=found.zero_point)
        base = f"{PREFIX}_{self.index}"  # the index of the probe just added
        if found.scale_tensor:
            output = self._node("Identity", [found.scale_tensor], f"{base}_scale")
            self._output(output, None)
            probe = replace(probe, scale_output=output)
        if found.zero_point_tensor:
            output = self._node("Identity", [found.zero_point_tensor], f"{base}_zero_point")
            self._output(output, None, TensorProto.UINT8)
            probe = replace(probe, zero_point_output=output)
        return probe

    def _tensor_probe(self, tensor: str, base: str, known: TensorType) -> Probe:
        dims = tuple(d or 0 for d in (known.shape or ()))
        rank = len(known.shape) if known.shape is not None else None
        if self.on_host and tensor not in self.graph_inputs:
            if tensor not in self.graph_outputs:
                self._output(tensor, rank, known.elem_type)
                self.graph_outputs.add(tensor)
            return Probe(tensor=tensor, kind="tensor", shape=dims, tile_max=tensor)
        output = f"{base}_values"
        self.nodes.append(helper.make_node("Identity", [tensor], [output], name=output))
        self._output(output, rank, known.elem_type)
        return Probe(tensor=tensor, kind="tensor", shape=dims, tile_max=output)

    def _plane_probe(
        self,
        tensor: str,
        base: str,
        plane: tuple[int, int, int],
        tile: tuple[int, int],
        nonnegative: bool,
    ) -> Probe:
        channels, height, width = plane
        magnitude = tensor if nonnegative else self._magnitude(tensor, base, channels)
        tile_max = self._tile_max(magnitude, base, height, width, tile)
        counts = tuple(
            self._count_above(magnitude, f"{base}_eps{k}", channels, bound)
            for k, bound in enumerate(self.eps)
        )
        return Probe(tensor, "plane", (0, channels, height, width), tile_max, counts)

    def _magnitude(self, tensor: str, base: str, channels: int) -> str:
        """``|x| = x + relu(−2x)``: exact in floating point, and fused by onnxruntime."""
        weight = self._constant(f"{base}_neg2", np.full((channels, 1, 1, 1), -2.0, np.float32))
        self._node("Conv", [tensor, weight], f"{base}_negative2x", group=channels)
        self._node("Relu", [f"{base}_negative2x"], f"{base}_relu")
        return self._node("Add", [tensor, f"{base}_relu"], f"{base}_abs")

    def _tile_max(
        self, magnitude: str, base: str, height: int, width: int, tile: tuple[int, int]
    ) -> str:
        tile_h, tile_w = min(tile[0], height), min(tile[1], width)
        pad_h, pad_w = -height % tile_h, -width % tile_w
        output = self._node(
            "MaxPool",
            [magnitude],
            f"{base}_tile_max",
            kernel_shape=[tile_h, tile_w],
            strides=[tile_h, tile_w],
            pads=[0, 0, pad_h, pad_w],
        )
        self._output(output, 4)
        return output

    def _count_above(self, magnitude: str, base: str, channels: int, bound: float) -> str:
        """Per plane, the share of values above ``bound``: exact, see the module docstring."""
        scale = _ramp_scale(bound)
        weight = self._constant(f"{base}_scale", np.full((channels, 1, 1, 1), scale, np.float32))
        bias = self._constant(
            f"{base}_shift", np.full((channels,), -np.float32(bound) * scale, np.float32)
        )
        ramp = self._node("Conv", [magnitude, weight, bias], f"{base}_ramp", group=channels)
        clipped = self._clip(ramp, f"{base}_step")
        output = self._node("GlobalAveragePool", [clipped], f"{base}_above")
        self._output(output, 4)
        return output

    def _clip(self, tensor: str, name: str) -> str:
        if self.opset < 11:
            return self._node("Clip", [tensor], name, min=0.0, max=1.0)
        low = self._constant(f"{name}_low", np.array(0.0, np.float32))
        high = self._constant(f"{name}_high", np.array(1.0, np.float32))
        return self._node("Clip", [tensor, low, high], name)

    def _node(self, op_type: str, inputs: list[str], name: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def _constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def _output(self, name: str, rank: int | None, elem_type: int = TensorProto.FLOAT) -> None:
        """Declare an output; one of unknown element type is left untyped for onnxruntime to
        infer (declaring a guess would make the probed model invalid when it is wrong)."""
        if elem_type == TensorProto.UNDEFINED:
            self.outputs.append(helper.make_empty_tensor_value_info(name))
            return
        shape = None if rank is None else [None] * rank
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def finish(self) -> None:
        """Attach everything to the graph (IR 3 models also list initializers as inputs)."""
        graph = self.model.graph
        graph.node.extend(self.nodes)
        graph.initializer.extend(self.initializers)
        if self.model.ir_version < 4:
            graph.input.extend(
                helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                for t in self.initializers
            )
        graph.output.extend(self.outputs)


def _ramp_scale(bound: float) -> float:
    """A power of two that maps any float32 above ``bound`` to at least 1 after ``x − bound``.

    The gap between ``bound`` and the next float32 is at least 2^(e − 24) for ``bound`` in
    [2^e, 2^(e+1)); scaling by 2^(25 − e) turns it into at least 2. For ``bound`` = 0 the largest
    scale is used.
    """
    if bound <= 0:
        return 2.0**127
    exponent = math.floor(math.log2(bound))
    return float(2.0 ** min(127, max(0, 25 - exponent)))
