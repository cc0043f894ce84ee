"""The static weight scan: exact counts on planted zeros, wherever the weight lives."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.load import load_model
from onnx_prune.weights import count_near_zero, count_zero_weights
from tests.builders import FLOAT, conv_relu_model, conv_weight, make_model, save

EPS = (0.0, 1e-3)


def _scan(model: onnx.ModelProto, tmp_path: Path, eps: tuple[float, ...] = EPS):
    return count_zero_weights(load_model(save(model, tmp_path)), eps=eps)


def test_initializer_weight_counts_are_exact(tmp_path: Path) -> None:
    bias = np.array([0, 1, 0, 2, 3, 0, 4, 5], np.float32)
    report = _scan(conv_relu_model(conv_weight(), bias), tmp_path)
    (layer,) = report.layers
    assert (layer.name, layer.op_type) == ("conv", "Conv")
    assert layer.weight.shape == (8, 3, 3, 3)
    assert layer.weight.elements == 216
    assert layer.weight.zeros == (66, 73)
    assert (layer.weight.filters, layer.weight.zero_filters) == (8, 2)
    assert layer.weight.zero_input_channels == 0
    assert layer.bias is not None and layer.bias.zeros == (3, 3)
    assert report.total().zeros == (66, 73)


def test_zero_input_channel_is_found(tmp_path: Path) -> None:
    weight = conv_weight()
    weight[:, 1] = 0.0
    (layer,) = _scan(conv_relu_model(weight), tmp_path).layers
    assert layer.weight.zero_input_channels == 1
    assert layer.weight.zeros[0] == int(np.count_nonzero(weight == 0))


def test_counts_match_numpy_for_random_eps() -> None:
    values = np.random.default_rng(3).normal(0, 0.01, size=10_000).astype(np.float32)
    values[::7] = 0
    values[5] = np.nan
    eps = (0.0, 1e-4, 1e-3, 0.02)
    expected = tuple(int(np.count_nonzero(np.abs(values) <= np.float32(e))) for e in eps)
    assert count_near_zero(values, eps) == expected


def _conv_node(weight_input: str) -> onnx.NodeProto:
    return helper.make_node("Conv", ["x", weight_input], ["y"], name="conv", pads=[1, 1, 1, 1])


def _io() -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    return (
        [helper.make_tensor_value_info("x", FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 8, 8, 8])],
    )


def test_weight_in_a_constant_node(tmp_path: Path) -> None:
    constant = helper.make_node(
        "Constant", [], ["w"], value=numpy_helper.from_array(conv_weight(), "w_value")
    )
    model = make_model([constant, _conv_node("w")], *_io())
    (layer,) = _scan(model, tmp_path).layers
    assert layer.weight.zeros == (66, 73)
    assert layer.weight.zero_filters == 2


def test_weight_from_a_folded_subgraph(tmp_path: Path) -> None:
    weight = conv_weight()
    half = (weight / 2).astype(np.float32)
    nodes = [helper.make_node("Add", ["a", "b"], ["w"]), _conv_node("w")]
    initializers = [numpy_helper.from_array(half, "a"), numpy_helper.from_array(weight - half, "b")]
    (layer,) = _scan(make_model(nodes, *_io(), initializers), tmp_path).layers
    assert layer.weight.zeros[0] == int(np.count_nonzero((half + (weight - half)) == 0))
    assert layer.weight.zero_filters == 2


def test_weight_from_constant_of_shape(tmp_path: Path) -> None:
    shape = numpy_helper.from_array(np.array([8, 3, 3, 3], np.int64), "shape")
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"], value=value), _conv_node("w")]
    (layer,) = _scan(make_model(nodes, *_io(), [shape]), tmp_path).layers
    assert layer.weight.zeros == (216, 216)
    assert layer.weight.zero_filters == 8


def test_quantized_weight_zero_is_its_zero_point(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    quantized = rng.integers(-100, 100, size=(8, 3, 3, 3)).astype(np.int8)
    quantized[quantized == 3] = 4
    quantized[0] = 3  # a whole filter at the zero point: zero
    quantized[1, 0, 0, :2] = 3
    quantized[2, 0, 0, 0] = 0  # the integer 0 is not zero here
    initializers = [
        numpy_helper.from_array(quantized, "wq"),
        numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
        numpy_helper.from_array(np.array(3, np.int8), "zp"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale", "zp"], ["w"]), _conv_node("w")]
    (layer,) = _scan(make_model(nodes, *_io(), initializers), tmp_path, (0.0, 0.5)).layers
    assert layer.weight.quantized
    assert layer.weight.dtype == "int8"
    expected_near = int(np.count_nonzero(np.abs(quantized.astype(int) - 3) <= 1))
    assert layer.weight.zeros == (27 + 2, expected_near)
    assert layer.weight.zero_filters == 1


def test_qlinear_conv_per_channel_zero_points(tmp_path: Path) -> None:
    weight = np.full((2, 1, 1, 1), 7, np.uint8)
    weight[1] = 9
    zero_points = np.array([7, 8], np.uint8)
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    arrays: dict[str, np.ndarray] = {
        "xs": np.array(1.0, np.float32),
        "xz": np.array(0, np.uint8),
        "w": weight,
        "ws": np.array([1.0, 1.0], np.float32),
        "wz": zero_points,
        "ys": np.array(1.0, np.float32),
        "yz": np.array(0, np.uint8),
    }
    node = helper.make_node("QLinearConv", names, ["y"], name="qconv")
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 2, 4, 4])],
        [numpy_helper.from_array(value, key) for key, value in arrays.items()],
    )
    (layer,) = _scan(model, tmp_path).layers
    assert layer.weight.zeros == (1, 1)  # filter 1 is 9 against zero point 8: not zero
    assert layer.weight.zero_filters == 1


def test_gemm_filters_follow_trans_b(tmp_path: Path) -> None:
    weight = np.ones((4, 6), np.float32)  # transB=1: [out=4, in=6]
    weight[1] = 0
    weight[:, 5] = 0
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    (layer,) = _scan(model, tmp_path).layers
    assert (layer.weight.filters, layer.weight.zero_filters) == (4, 1)
    assert layer.weight.zero_input_channels == 1
    assert layer.weight.zeros[0] == 6 + 3


def test_matmul_of_two_activations_is_not_analysed(tmp_path: Path) -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="attention")
    model = make_model(
        [node],
        [helper.make_tensor_value_info(n, FLOAT, [2, 2]) for n in "ab"],
        [helper.make_tensor_value_info("y", FLOAT, [2, 2])],
    )
    report = _scan(model, tmp_path)
    assert report.layers == ()
    (item,) = report.unresolved
    assert (item.name, item.op_type) == ("attention", "MatMul")
    assert "not a constant" in item.reason


def test_external_data_weights_are_counted(tmp_path: Path) -> None:
    model = conv_relu_model(conv_weight())
    path = tmp_path / "ext.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0
    )
    report = count_zero_weights(load_model(path), eps=EPS)
    assert report.layers[0].weight.zeros == (66, 73)


LIGHT = sorted(
    glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx"))
)


@pytest.mark.parametrize("path", LIGHT, ids=[Path(p).stem for p in LIGHT])
def test_onnx_light_models_report_every_compute_layer(path: str) -> None:
    loaded = load_model(path)
    expected = sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in loaded.model.graph.node)
    report = count_zero_weights(loaded)
    assert len(report.layers) == expected
    assert report.unresolved == ()
    assert all(layer.weight.zeros == (0,) for layer in report.layers)  # every weight is 0.02


def test_light_models_are_present() -> None:
    assert len(LIGHT) >= 9
