"""Find the constant value of any tensor: initializers, ``Constant`` nodes and foldable subgraphs.

Weights do not always sit in ``graph.initializer``: paddle2onnx stores them in ``Constant`` nodes,
and onnx's own test models compute them with ``ConstantOfShape``. A tensor is constant when it is
an initializer, a ``Constant`` output, or the output of a deterministic node whose inputs are all
constant. ``DequantizeLinear`` of constants (QDQ weights and biases) is computed here, at any
opset it exists at (onnx's reference evaluator has none below opset 19). Other subgraphs are
evaluated with onnx's reference evaluator on just the nodes they need (the rest of the model is
never rewritten or renamed); onnx-simplifier is the fallback for ops the reference evaluator lacks.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_prune.load import LoadedModel, tensor_to_array
from onnx_prune.quantization import dequantize, input_at

logger = logging.getLogger(__name__)

_NOT_FOLDABLE = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)
_SUBGRAPH_ATTRIBUTES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


class ConstantFoldingError(Exception):
    """A constant subgraph could not be evaluated; the message says why."""


class ConstantResolver:
    """Answers "is this tensor constant?" and "what is its value?" for one model, with a cache."""

    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded
        graph = loaded.model.graph
        self._initializers = {tensor.name: tensor for tensor in graph.initializer}
        self._producers = {output: node for node in graph.node for output in node.output}
        self._constant: dict[str, bool] = {}
        self._values: dict[str, np.ndarray] = {}

    def is_constant(self, name: str) -> bool:
        """True when ``name`` is an initializer, a ``Constant`` output or folds to a constant."""
        if name in self._constant:
            return self._constant[name]
        self._constant[name] = False  # guards against cycles in malformed graphs
        self._constant[name] = self._compute_is_constant(name)
        return self._constant[name]

    def _compute_is_constant(self, name: str) -> bool:
        if name in self._initializers:
            return True
        node = self._producers.get(name)
        if node is None or node.op_type in _NOT_FOLDABLE or node.domain not in ("", "ai.onnx"):
            return False
        if any(a.type in _SUBGRAPH_ATTRIBUTES for a in node.attribute):
            return False
        return all(self.is_constant(i) for i in node.input if i)

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node that outputs ``name``, or None for graph inputs and initializers."""
        return self._producers.get(name)

    def value(self, name: str) -> np.ndarray:
        """The value of a constant tensor; raises ConstantFoldingError when it cannot be found."""
        if name not in self._values:
            self._values[name] = self._compute_value(name)
        return self._values[name]

    def _compute_value(self, name: str) -> np.ndarray:
        if name in self._initializers:
            return tensor_to_array(self._loaded, self._initializers[name])
        node = self._producers.get(name)
        if node is None or not self.is_constant(name):
            raise ConstantFoldingError(f"'{name}' is computed from the model's inputs")
        stored = _attribute(node, "value") if node.op_type == "Constant" else None
        if stored is not None:
            return tensor_to_array(self._loaded, stored)
        if node.op_type == "DequantizeLinear" and node.output[0] == name:
            return self._dequantize(node)
        return self._fold(name)

    def _dequantize(self, node: onnx.NodeProto) -> np.ndarray:
        """``DequantizeLinear`` of constants, computed directly (see the module docstring)."""
        scale_name, zero_name = input_at(node, 1), input_at(node, 2)
        try:
            return dequantize(
                self.value(node.input[0]),
                self.value(scale_name) if scale_name else None,
                self.value(zero_name) if zero_name else None,
                axis=_int_attribute(node, "axis", 1),
                block_size=_int_attribute(node, "block_size", 0),
            )
        except ValueError as error:
            raise ConstantFoldingError(
                f"'{node.output[0]}' cannot be dequantized: {error}"
            ) from None

    def values_if_constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is a constant that can be read, else None."""
        if not name or not self.is_constant(name):
            return None
        try:
            return self.value(name)
        except ConstantFoldingError:
            return None

    def _fold(self, name: str) -> np.ndarray:
        model = self._subgraph_model(name)
        try:
            from onnx.reference import ReferenceEvaluator

            outputs = ReferenceEvaluator(model).run(None, {})
            first = outputs[0] if isinstance(outputs, list) else outputs[name]
            return np.asarray(first)
        except Exception as error:  # the evaluator raises many kinds; onnxsim gets a try next
            logger.debug("reference evaluator failed on '%s': %s", name, error)
            return _fold_with_onnxsim(model, name, error)

    def _subgraph_model(self, name: str) -> onnx.ModelProto:
        nodes = self._needed_nodes(name)
        leaves = {i for node in nodes for i in node.input if i in self._initializers}
        initializers = [numpy_helper.from_array(self.value(leaf), leaf) for leaf in sorted(leaves)]
        graph = helper.make_graph(
            nodes, "fold", [], [helper.make_tensor_value_info(name, 0, None)], initializers
        )
        model = helper.make_model(graph, opset_imports=list(self._loaded.model.opset_import))
        model.ir_version = max(self._loaded.model.ir_version, 4)
        return model

    def _needed_nodes(self, name: str) -> list[onnx.NodeProto]:
        needed: dict[int, onnx.NodeProto] = {}
        stack = [name]
        while stack:
            node = self._producers.get(stack.pop())
            if node is None or id(node) in needed:
                continue
            needed[id(node)] = node
            stack.extend(i for i in node.input if i and i not in self._initializers)
        order = {id(node): index for index, node in enumerate(self._loaded.model.graph.node)}
        return sorted(needed.values(), key=lambda node: order[id(node)])


def _attribute(node: onnx.NodeProto, name: str) -> onnx.TensorProto | None:
    for attribute in node.attribute:
        if attribute.name == name and attribute.type == onnx.AttributeProto.TENSOR:
            tensor: onnx.TensorProto = attribute.t
            return tensor
    return None


def _int_attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _fold_with_onnxsim(model: onnx.ModelProto, name: str, cause: Exception) -> np.ndarray:
    try:
        import onnxsim

        folded, _ = onnxsim.simplify(model, perform_optimization=False, check_n=0)
    except Exception as error:  # onnxsim raises RuntimeError, ValueError and its own errors
        raise ConstantFoldingError(
            f"'{name}' could not be folded ({_reason(cause)}; onnx-simplifier: {_reason(error)})"
        ) from None
    for tensor in folded.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    raise ConstantFoldingError(f"'{name}' could not be folded ({_reason(cause)})")


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:160]
