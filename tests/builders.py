"""Tiny models built in code, with planted zeros so the expected counts are exact."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def conv_weight(seed: int = 0) -> np.ndarray:
    """An 8×3×3×3 conv weight: filters 2 and 5 all zero, 10 more zeros and 2 −0.0, 7 values ±5e-4.

    Exact zeros: 2×27 + 12 = 66. Within 1e-3: 66 + 7 = 73.
    """
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.01, 1.0, size=(8, 3, 3, 3)).astype(np.float32)
    weight *= rng.choice([-1.0, 1.0], size=weight.shape).astype(np.float32)
    weight[[2, 5]] = 0.0
    live = [i for i in range(weight.size) if i // 27 not in (2, 5)]
    flat = weight.reshape(-1)
    flat[live[:10]] = 0.0
    flat[live[10:12]] = -0.0
    flat[live[20:27]] = np.float32(5e-4) * np.array([1, -1, 1, -1, 1, -1, 1], np.float32)
    return weight


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[TensorProto] = (),
    *,
    opset: int = 13,
    ir_version: int | None = None,
) -> onnx.ModelProto:
    """A checked model at ``opset``."""
    graph = helper.make_graph(list(nodes), "tiny", list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version or min(8, onnx.IR_VERSION)
    onnx.checker.check_model(model)
    return model


def conv_relu_model(
    weight: np.ndarray, bias: np.ndarray | None = None, *, opset: int = 13
) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(3x3, pad 1) -> Relu -> y."""
    channels = weight.shape[0]
    inputs = ["x", "w"] + (["b"] if bias is not None else [])
    initializers = [numpy_helper.from_array(weight, "w")]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias, "b"))
    nodes = [
        helper.make_node("Conv", inputs, ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv_out"], ["y"], name="relu"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", channels, 8, 8])],
        initializers,
        opset=opset,
    )


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    """Write ``model`` under ``folder`` and return its path."""
    path = folder / name
    onnx.save(model, str(path))
    return path
