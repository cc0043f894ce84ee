"""Force near-zero input feature maps to zero: a pure graph pass that returns a pruned copy.

At the IFM of every compute layer the pass inserts nodes that zero each channel (an (n, c) plane;
each value for rank-2 inputs) whose values are all within ε (``|x| <= ε``), or with element
granularity each value within ε. ε is a new float input of the graph, a vector with one entry per
pruned tensor (``PrunedTensor.eps_index``), so one session serves a whole sweep, uniform or per
layer; a negative entry prunes nothing, which makes the same session the unpruned baseline.
``PrunedModel.eps_feed`` builds the vector from one ε or from a map of IFM name to ε. NaN is
never within ε.

Beside each pruned IFM the pass adds two small outputs, so the runtime learns how much load the
pruning skipped without pulling a feature map out of the session: the IFM's shape, and per (n, c)
either a 0/1 "channel pruned" flag (channel granularity) or the count of pruned values (element
granularity; exact in float32 for planes under 2^24 values). ``count_pruned`` sums them in int64.

Only compute-layer consumers read the pruned tensor; every other consumer keeps the original. The
nodes are valid at the model's own opset (9 and later); the opset is never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from onnx_prune.errors import UnsupportedModelError
from onnx_prune.layers import ComputeLayer
from onnx_prune.load import default_opset
from onnx_prune.quantization import SIGNATURES
from onnx_prune.shapes import infer_tensor_types

logger = logging.getLogger(__name__)

Granularity = Literal["channel", "element"]
GRANULARITIES: tuple[Granularity, ...] = ("channel", "element")

EPS_INPUT = "onnx_prune_eps"
"""The preferred name of the ε input (a suffix is added if the model already uses it)."""

UNPRUNED = -1.0
"""The ε entry that prunes nothing: no |x| is <= a negative number."""

MIN_OPSET = 9
_QUANTIZED = frozenset(SIGNATURES)  # integer kernels: QLinear*, QGemm, *Integer
_FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16})


@dataclass(frozen=True)
class PrunedTensor:
    """One pruned IFM: the tensor, what feeds its layers now, and the outputs that count it.

    ``count_output`` is ``[N, C, 1]`` 0/1 flags of pruned channels (channel granularity) or
    ``[N, C]`` counts of pruned values (element granularity); ``shape_output`` is the IFM's shape.
    ``eps_index`` is this tensor's entry in the ε input vector.
    """

    tensor: str
    pruned: str
    layers: tuple[str, ...]
    count_output: str
    shape_output: str
    eps_index: int


@dataclass(frozen=True)
class NotPruned:
    """An IFM the pass left alone, and why."""

    tensor: str
    layers: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class PrunedModel:
    """The pruned copy of a model and its manifest; the input model is never changed."""

    model: onnx.ModelProto
    eps_input: str
    granularity: Granularity
    tensors: tuple[PrunedTensor, ...]
    not_pruned: tuple[NotPruned, ...]

    def eps_feed(self, eps: float | Mapping[str, float]) -> npt.NDArray[np.float32]:
        """The ε input vector: ``eps`` for every pruned tensor, or each tensor's own ε from a
        map of IFM name to ε (tensors the map leaves out get ``UNPRUNED``)."""
        values = np.full(len(self.tensors), UNPRUNED, dtype=np.float32)
        for tensor in self.tensors:
            own = eps if not isinstance(eps, Mapping) else eps.get(tensor.tensor, UNPRUNED)
            values[tensor.eps_index] = own
        return values


@dataclass(frozen=True)
class PrunedCount:
    """Pruned values and all values of one IFM over the samples of a batch (exact integers)."""

    pruned: int
    elements: int


def add_pruning(
    model: onnx.ModelProto,
    layers: Sequence[ComputeLayer],
    *,
    granularity: Granularity,
    model_inputs: bool = False,
) -> PrunedModel:
    """A copy of ``model`` whose compute ``layers`` read IFMs with near-zero parts zeroed.

    Like the paper, only feature maps the network computes are pruned: an IFM that is a model
    input (the image) is left alone unless ``model_inputs`` is set.

    Raises UnsupportedModelError for models below opset 9 (no ``Where``/``IsNaN`` there).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"the model uses opset {opset}; ε-pruning needs opset {MIN_OPSET} or later (Where, "
            "IsNaN): convert it with onnx.version_converter.convert_version(model, 9) first"
        )
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    builder = _Builder(pruned, opset, granularity, model_inputs=model_inputs)
    tensors, skipped = builder.prune_all(_group_by_ifm(layers))
    return PrunedModel(pruned, builder.eps_input, granularity, tensors, skipped)


def _group_by_ifm(layers: Sequence[ComputeLayer]) -> dict[str, list[ComputeLayer]]:
    groups: dict[str, list[ComputeLayer]] = {}
    for layer in layers:
        groups.setdefault(layer.ifm, []).append(layer)
    return groups


def count_pruned(
    tensor: PrunedTensor,
    granularity: Granularity,
    counts: npt.NDArray[np.generic],
    shape: npt.NDArray[np.generic],
    *,
    samples: int | None = None,
) -> PrunedCount:
    """Sum the count output of ``tensor`` in int64; ``samples`` keeps only the first rows.

    ``shape`` is the IFM shape output of the same run.
    """
    dims = [int(dim) for dim in np.asarray(shape).reshape(-1)]
    rows = dims[0] if samples is None else min(samples, dims[0])
    kept = np.rint(np.asarray(counts, dtype=np.float64)[:rows]).astype(np.int64)
    per_sample = int(np.prod(dims[1:], dtype=np.int64))
    plane = int(np.prod(dims[2:], dtype=np.int64)) if granularity == "channel" else 1
    return PrunedCount(pruned=int(kept.sum(dtype=np.int64)) * plane, elements=rows * per_sample)


class _Builder:
    """Appends pruning nodes to one model copy; names are derived from positions, deterministic."""

    def __init__(
        self, model: onnx.ModelProto, opset: int, granularity: Granularity, *, model_inputs: bool
    ) -> None:
        self._model = model
        self._graph = model.graph
        self._opset = opset
        self._granularity = granularity
        self._taken = _all_names(model.graph)
        self._types = _tensor_types(model)
        self._initializers = {tensor.name for tensor in model.graph.initializer}
        inputs = {value.name for value in model.graph.input} - self._initializers
        self._unprunable_inputs = set() if model_inputs else inputs
        self._constants: dict[str, str] = {}
        self.eps_input = self.unique(EPS_INPUT)

    def prune_all(
        self, groups: Mapping[str, list[ComputeLayer]]
    ) -> tuple[tuple[PrunedTensor, ...], tuple[NotPruned, ...]]:
        """Prune every IFM in ``groups`` (tensor name -> the layers reading it)."""
        pruned: list[PrunedTensor] = []
        skipped: list[NotPruned] = []
        for index, (tensor, layers) in enumerate(groups.items()):
            names = tuple(layer.name for layer in layers)
            reason = self._why_not(tensor, layers)
            if reason is not None:
                skipped.append(NotPruned(tensor, names, reason))
                continue
            pruned.append(self._prune(index, tensor, layers, eps_index=len(pruned)))
        self._add_eps_input(len(pruned))
        return tuple(pruned), tuple(skipped)

    def _why_not(self, tensor: str, layers: list[ComputeLayer]) -> str | None:
        if any(layer.op_type in _QUANTIZED for layer in layers):
            return "quantized (integer) feature map: pruning within ε is not defined for it"
        if tensor in self._initializers:
            return "the input is a constant, not a feature map"
        if tensor in self._unprunable_inputs:
            return "a model input, not a feature map the network computes (the paper prunes those)"
        elem_type, rank = self._types.get(tensor, (None, None))
        if elem_type is not None and elem_type not in _FLOAT_TYPES:
            return f"feature map of type {TensorProto.DataType.Name(elem_type)} is not float"
        if rank is not None and rank < 2:
            return f"feature map of rank {rank} has no (batch, channel) axes"
        return None

    def _prune(
        self, index: int, tensor: str, layers: list[ComputeLayer], *, eps_index: int
    ) -> PrunedTensor:
        prefix = f"onnx_prune/{index}"
        elem_type, rank = self._types.get(tensor, (None, None))
        nodes = _Nodes(self, prefix, elem_type, rank, eps_index)
        shape = nodes.add("Shape", [tensor], "shape")
        if self._granularity == "channel":
            output, count = nodes.prune_channels(tensor, shape)
        else:
            output, count = nodes.prune_elements(tensor)
        self._insert(nodes.nodes, layers)
        self._rewire(tensor, output, layers)
        self._add_outputs(count, shape, rank)
        names = tuple(layer.name for layer in layers)
        return PrunedTensor(tensor, output, names, count, shape, eps_index)

    def _insert(self, nodes: list[onnx.NodeProto], layers: list[ComputeLayer]) -> None:
        """Put ``nodes`` just before the first layer reading the IFM (a topological order)."""
        outputs = {layer.output for layer in layers}
        position = next(
            index for index, node in enumerate(self._graph.node) if node.output[0] in outputs
        )
        for offset, node in enumerate(nodes):
            self._graph.node.insert(position + offset, node)

    def _rewire(self, tensor: str, pruned: str, layers: list[ComputeLayer]) -> None:
        by_output = {layer.output: layer for layer in layers}
        for node in self._graph.node:
            if node.output and node.output[0] in by_output:
                slot = _data_slot(node, tensor)
                node.input[slot] = pruned

    def _add_outputs(self, count: str, shape: str, rank: int | None) -> None:
        if self._granularity == "element":
            counts_rank = 2
        else:
            counts_rank = rank if rank is not None and rank >= 3 else 3
        self._graph.output.append(
            helper.make_tensor_value_info(count, TensorProto.FLOAT, [None] * counts_rank)
        )
        self._graph.output.append(helper.make_tensor_value_info(shape, TensorProto.INT64, [None]))

    def _add_eps_input(self, entries: int) -> None:
        self._graph.input.append(
            helper.make_tensor_value_info(self.eps_input, TensorProto.FLOAT, [entries])
        )

    def constant(self, name: str, values: npt.ArrayLike, dtype: npt.DTypeLike) -> str:
        """An initializer (shared by value); IR-3 models also list it as a graph input."""
        array = np.asarray(values, dtype=dtype)
        key = f"{array.dtype}:{array.shape}:{array.tobytes().hex()}"
        if key not in self._constants:
            unique = self.unique(f"onnx_prune/const/{name}")
            tensor = onnx.numpy_helper.from_array(array, unique)
            self._graph.initializer.append(tensor)
            if self._model.ir_version < 4:
                self._graph.input.append(
                    helper.make_tensor_value_info(unique, tensor.data_type, list(array.shape))
                )
            self._constants[key] = unique
        return self._constants[key]

    @property
    def opset(self) -> int:
        """The model's default opset, which every added node respects."""
        return self._opset

    def unique(self, name: str) -> str:
        """``name``, or ``name_2``, ``name_3``... when the model already uses it."""
        candidate, suffix = name, 1
        while candidate in self._taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        self._taken.add(candidate)
        return candidate


class _Nodes:
    """The nodes that prune one IFM, named ``PREFIX/ROLE``."""

    def __init__(
        self,
        builder: _Builder,
        prefix: str,
        elem_type: int | None,
        rank: int | None,
        eps_index: int,
    ) -> None:
        self._builder = builder
        self._prefix = prefix
        self._elem_type = elem_type
        self._rank = rank
        self._eps_index = eps_index
        self._eps: str | None = None
        self.nodes: list[onnx.NodeProto] = []

    def add(self, op_type: str, inputs: Sequence[str], role: str, **attributes: Any) -> str:
        """Append one node; returns its (unique) output name, which is also the node's name."""
        name = self._builder.unique(f"{self._prefix}/{role}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name

    def eps(self) -> str:
        """This tensor's scalar ε (its entry of the ε vector) in the IFM's float type."""
        if self._eps is None:
            index = self._builder.constant(
                f"eps_index_{self._eps_index}", self._eps_index, np.int64
            )
            eps = self.add("Gather", [self._builder.eps_input, index], "eps", axis=0)
            if self._elem_type not in (None, TensorProto.FLOAT):
                eps = self.add("Cast", [eps], "eps_cast", to=self._elem_type)
            self._eps = eps
        return self._eps

    def within_eps(self, values: str) -> str:
        """Boolean ``|values| <= ε``, false for NaN (LessOrEqual needs opset 12)."""
        magnitude = self.add("Abs", [values], "abs")
        eps = self.eps()
        if self._builder.opset >= 12:
            return self.add("LessOrEqual", [magnitude, eps], "within")
        above = self.add("Greater", [magnitude, eps], "above")
        nan = self.add("IsNaN", [magnitude], "nan")
        return self.add("Not", [self.add("Or", [above, nan], "kept")], "within")

    def reduce(
        self, op_type: str, values: str, role: str, *, axes: Iterable[int], keep: int = 1
    ) -> str:
        """A ``Reduce*`` node with axes as an attribute or an input, as the opset wants.

        ``ReduceSum`` takes axes as an input from opset 13, the others from opset 18.
        """
        axes = list(axes)
        from_input = 13 if op_type == "ReduceSum" else 18
        if self._builder.opset >= from_input:
            constant = self._builder.constant("axes_" + "_".join(map(str, axes)), axes, np.int64)
            return self.add(op_type, [values, constant], role, keepdims=keep)
        return self.add(op_type, [values], role, axes=axes, keepdims=keep)

    def zero(self) -> str:
        """A scalar zero of the IFM's type."""
        elem_type = self._elem_type or TensorProto.FLOAT
        dtype = helper.tensor_dtype_to_np_dtype(elem_type)
        return self._builder.constant(f"zero_{np.dtype(dtype).name}", 0, dtype)

    def planes(self, tensor: str) -> str:
        """``tensor`` as ``[N, C, plane]``: rank 2 gives planes of one value."""
        shape = self._builder.constant("planes_shape", [0, 0, -1], np.int64)
        return self.add("Reshape", [tensor, shape], "planes")

    def prune_channels(self, tensor: str, shape: str) -> tuple[str, str]:
        """Zero the (n, c) planes whose values are all within ε; returns (output, flags).

        ``shape`` is the IFM's shape. Per plane, the largest magnitude is compared with ε and the
        mean finds NaN (onnxruntime's max reductions may skip a NaN; a sum never does). Kept
        planes are multiplied by 1 (exact), pruned ones by 0 (their values are finite). For
        rank >= 3, global pooling keeps onnxruntime's fast blocked layout; rank 2 and unknown
        ranks are reshaped to ``[N, C, plane]`` and reduced on the last axis.
        """
        rank = self._rank
        if rank is not None and rank >= 3:
            largest = self.add("GlobalMaxPool", [self.add("Abs", [tensor], "abs")], "max")
            kept = self._kept(largest, self.add("GlobalAveragePool", [tensor], "mean"))
            output = self.add("Mul", [tensor, self._as_values(kept)], "pruned")
        else:
            planes = self.planes(tensor)
            magnitude = self.add("Abs", [planes], "abs")
            largest = self.reduce("ReduceMax", magnitude, "max", axes=[2])
            kept = self._kept(largest, self.reduce("ReduceL1", planes, "l1", axes=[2]))
            zeroed = self.add("Mul", [planes, self._as_values(kept)], "zeroed")
            output = self.add("Reshape", [zeroed, shape], "pruned")
        flags = self.add("Not", [kept], "pruned_channels")
        return output, self.add("Cast", [flags], "pruned_flags", to=TensorProto.FLOAT)

    def _kept(self, largest: str, total: str) -> str:
        """Planes to keep: largest magnitude above ε, or a NaN somewhere (``total`` is NaN)."""
        above = self.add("Greater", [largest, self.eps()], "above")
        return self.add("Or", [above, self.add("IsNaN", [total], "nan")], "kept")

    def _as_values(self, mask: str) -> str:
        elem_type = self._elem_type or TensorProto.FLOAT
        return self.add("Cast", [mask], "keep_factor", to=elem_type)

    def prune_elements(self, tensor: str) -> tuple[str, str]:
        """Zero every value within ε; returns (output, per-channel counts of pruned values)."""
        within = self.within_eps(tensor)
        output = self.add("Where", [within, self.zero(), tensor], "pruned")
        within_float = self.add("Cast", [within], "pruned_float", to=TensorProto.FLOAT)
        planes = self.planes(within_float)
        return output, self.reduce("ReduceSum", planes, "pruned_values", axes=[2], keep=0)


def _data_slot(node: onnx.NodeProto, tensor: str) -> int:
    """The input slot of a compute node that holds its IFM (input 1 for ``MatMul(W, x)``)."""
    if node.op_type == "MatMul" and node.input[0] != tensor:
        return 1
    return 0


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {value.name for value in [*graph.input, *graph.output, *graph.value_info]}
    names |= {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        names.update(node.output)
        names.update(node.input)
        names.add(node.name)
    return names


def _tensor_types(model: onnx.ModelProto) -> dict[str, tuple[int | None, int | None]]:
    """(element type, rank) of every tensor shape inference can tell."""
    return {
        name: (found.elem_type or None, found.rank)
        for name, found in infer_tensor_types(model).items()
    }
