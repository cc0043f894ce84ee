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


def prunable_and_sensitive_model() -> onnx.ModelProto:
    """x[N,4,4,4] -> conv1 -> relu -> r1 -> conv2 -> relu -> r2 -> GAP -> flat -> Gemm -> y[N,3].

    r1 (conv2's IFM) is planted to be prunable at any ε without changing the output: its
    channels 0-1 are relu(0.3·x) (at most 0.3) and conv2's weights on them are zero; its channels
    2-3 are relu(x + 3) (at least 2, never pruned). flat (the Gemm's IFM, one channel per value)
    holds means of r2 below 0.05 whose difference decides between classes 0 and 1: zeroing them
    leaves only the bias, whose class (2) is no sample's.
    """
    w1 = np.zeros((4, 4, 1, 1), np.float32)
    w1[0, 0] = w1[1, 1] = 0.3
    w1[2, 2] = w1[3, 3] = 1.0
    b1 = np.array([0, 0, 3, 3], np.float32)
    w2 = np.zeros((3, 4, 1, 1), np.float32)
    w2[:, 2:, 0, 0] = [[0.01, -0.004], [-0.004, 0.01], [0.003, 0.003]]
    w3 = np.array([[400, -400, 0], [-400, 400, 0], [0, 0, 0]], np.float32)
    b3 = np.array([0, 0, 0.001], np.float32)
    initializers = [
        numpy_helper.from_array(value, name)
        for name, value in (("w1", w1), ("b1", b1), ("w2", w2), ("w3", w3), ("b3", b3))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["y"], name="gemm"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 3])],
        initializers,
    )


def tune_samples(count: int = 10, seed: int = 3) -> np.ndarray:
    """Inputs for ``prunable_and_sensitive_model``: uniform in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, size=(count, 4, 4, 4)).astype(np.float32)


def save_tune_samples(folder: Path, name: str = "x.npy") -> Path:
    """Write ``tune_samples()`` under ``folder`` as a ``.npy`` file and return its path."""
    path = folder / name
    np.save(path, tune_samples())
    return path


def prunable_and_sensitive_map_model() -> onnx.ModelProto:
    """``prunable_and_sensitive_model`` with a map output instead of class scores: r2 (small,
    below 0.05) feeds a 1×1 conv3 whose output y[N,2,4,4] is the model's; pruning r2 leaves y
    its bias only. r1 is prunable without any output change, as there."""
    model = prunable_and_sensitive_model()
    w3 = np.array([[[[300.0]], [[-200.0]], [[100.0]]], [[[-100.0]], [[250.0]], [[50.0]]]])
    nodes = [node for node in model.graph.node if node.name in ("conv1", "relu1", "conv2", "relu2")]
    nodes.append(helper.make_node("Conv", ["r2", "w3m", "b3m"], ["y"], name="conv3"))
    initializers = [t for t in model.graph.initializer if t.name in ("w1", "b1", "w2")]
    initializers += [
        numpy_helper.from_array(w3.astype(np.float32), "w3m"),
        numpy_helper.from_array(np.array([0.001, -0.001], np.float32), "b3m"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 2, 4, 4])],
        initializers,
    )
