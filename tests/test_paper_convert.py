"""The paper converters on tiny files of each format written here, against numpy forward passes.

A GraphDef (depthwise conv, unfused and fused batch norm, Relu6, SAME padding with an odd pixel),
a Keras 3 h5 (nested backbone, ZeroPadding2D, DepthwiseConv2D, BatchNormalization, ReLU6, Add,
pooling, Dense) and a tf2onnx-style ONNX file with an NHWC transpose and a head to drop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.errors import ConversionError
from onnx_prune.paper.emit import same_pads
from onnx_prune.paper.fold import fold_into_convolutions
from onnx_prune.paper.onnx_body import cut_body
from onnx_prune.runtime import open_session
from tests import paper_reference as ref
from tests.builders import make_model

h5py = pytest.importorskip("h5py")
graph_pb2 = pytest.importorskip("tensorboard.compat.proto.graph_pb2")

from onnx_prune.paper.keras_h5 import convert_keras_h5  # noqa: E402
from onnx_prune.paper.tf_graph import convert_tf_graph  # noqa: E402

RNG = np.random.default_rng(7)


def run_nchw(model: onnx.ModelProto, folder: Path, nhwc: np.ndarray) -> np.ndarray:
    """The model's output on an NHWC image fed as NCHW, back in NHWC when it is 4-D."""
    path = folder / "converted.onnx"
    onnx.save(model, str(path))
    session = open_session(path)
    [spec] = session.inputs()
    feed = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2), dtype=np.float32)
    [out] = session.run([model.graph.output[0].name], {spec.name: feed})
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def uniform(*shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (224, 3, 2, (0, 1)),
        (8, 3, 2, (0, 1)),
        (7, 3, 2, (1, 1)),
        (7, 3, 1, (1, 1)),
        (5, 1, 2, (0, 0)),
    ],
)
def test_same_pads_put_the_odd_pixel_after(size, kernel, stride, expected) -> None:
    assert same_pads(size, kernel, stride) == expected == ref.tf_same(size, kernel, stride)


# --- TensorFlow GraphDef ----------------------------------------------------------------------


def _tensor(array: np.ndarray):
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2

    dtype = {np.dtype(np.float32): 1, np.dtype(np.int32): 3}[array.dtype]
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape]
    )
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=array.tobytes())


class GraphWriter:
    """Adds TensorFlow nodes to a GraphDef the way a frozen graph holds them."""

    def __init__(self) -> None:
        self.graph = graph_pb2.GraphDef()

    def node(self, op: str, name: str, inputs=(), **attrs) -> str:
        node = self.graph.node.add(op=op, name=name, input=list(inputs))
        for key, value in attrs.items():
            if isinstance(value, np.ndarray):
                node.attr[key].tensor.CopyFrom(_tensor(value))
            elif isinstance(value, bytes):
                node.attr[key].s = value
            elif isinstance(value, float):
                node.attr[key].f = value
            elif isinstance(value, list):
                node.attr[key].list.i.extend(value)
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        """A Const read through an Identity, as frozen variables are."""
        self.node("Const", name, value=value)
        return self.node("Identity", f"{name}/read", [name])

    def unfused_batch_norm(self, prefix: str, x: str, gamma, beta, mean, variance) -> str:
        """The Rsqrt/Mul/Sub chain TF-slim's batch norm freezes into."""
        epsilon = self.node("Const", f"{prefix}/add/y", value=np.array(1e-3, np.float32))
        added = self.node("Add", f"{prefix}/add", [self.const(f"{prefix}/var", variance), epsilon])
        rsqrt = self.node("Rsqrt", f"{prefix}/Rsqrt", [added])
        mul = self.node("Mul", f"{prefix}/mul", [rsqrt, self.const(f"{prefix}/gamma", gamma)])
        mul2 = self.node("Mul", f"{prefix}/mul_2", [self.const(f"{prefix}/mean", mean), mul])
        sub = self.node("Sub", f"{prefix}/sub", [self.const(f"{prefix}/beta", beta), mul2])
        scaled = self.node("Mul", f"{prefix}/mul_1", [x, mul])
        return self.node("Add", f"{prefix}/add_1", [scaled, sub])


def _bn_params(channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        uniform(channels, low=0.5, high=1.5),
        uniform(channels),
        uniform(channels),
        uniform(channels, low=0.2, high=2.0),
    )


def test_graph_def_with_depthwise_batch_norm_relu6_and_same_padding(tmp_path: Path) -> None:
    w0, dw, pw, bias = uniform(3, 3, 3, 4), uniform(3, 3, 4, 2), uniform(1, 1, 8, 5), uniform(5)
    bn0, bn1 = _bn_params(4), _bn_params(8)
    writer = GraphWriter()
    x = writer.node("Placeholder", "input", shape=None)
    writer.graph.node[0].attr["shape"].shape.dim.add(size=1)
    for n in (8, 8, 3):
        writer.graph.node[0].attr["shape"].shape.dim.add(size=n)
    same = {"padding": b"SAME", "data_format": b"NHWC"}
    conv = writer.node("Conv2D", "conv0", [x, writer.const("w0", w0)], strides=[1, 2, 2, 1], **same)
    act = writer.node("Relu6", "relu0", [writer.unfused_batch_norm("bn0", conv, *bn0)])
    depth = writer.node(
        "DepthwiseConv2dNative", "dw", [act, writer.const("dw_w", dw)], strides=[1, 1, 1, 1], **same
    )
    gamma, beta, mean, variance = (writer.const(f"bn1_{i}", v) for i, v in enumerate(bn1))
    fused = writer.node(
        "FusedBatchNormV3", "bn1", [depth, gamma, beta, mean, variance], epsilon=1e-3
    )
    act = writer.node("Relu6", "relu1", [fused])
    point = writer.node(
        "Conv2D", "pw", [act, writer.const("pw_w", pw)], strides=[1, 1, 1, 1], **same
    )
    biased = writer.node("BiasAdd", "bias", [point, writer.const("b", bias)], data_format=b"NHWC")
    pooled = writer.node(
        "MaxPool", "pool", [writer.node("Relu", "relu2", [biased])],
        ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], **same,
    )  # fmt: skip
    writer.node("Softmax", "head", [writer.node("Identity", "unused", [pooled])])
    path = tmp_path / "graph.pb"
    path.write_bytes(writer.graph.SerializeToString())

    model = convert_tf_graph(path, output="pool")
    assert sorted({node.op_type for node in model.graph.node}) == [
        "Clip",
        "Conv",
        "MaxPool",
        "Relu",
    ]
    image = uniform(1, 8, 8, 3, low=0.0, high=2.0)
    expected = ref.relu6(ref.batch_norm(ref.conv2d(image, w0, 2, "SAME"), *bn0, 1e-3))
    expected = ref.relu6(ref.batch_norm(ref.depthwise(expected, dw, 1, "SAME"), *bn1, 1e-3))
    expected = np.maximum(ref.conv2d(expected, pw, 1, "SAME") + bias, 0)
    expected = ref.pool(expected, 3, 2, "SAME", "max")
    assert expected.shape == (1, 2, 2, 5)
    np.testing.assert_allclose(run_nchw(model, tmp_path, image), expected, rtol=1e-4, atol=1e-5)


def test_graph_def_op_not_supported_is_named(tmp_path: Path) -> None:
    writer = GraphWriter()
    writer.node("Placeholder", "input")
    for n in (1, 4, 4, 3):
        writer.graph.node[0].attr["shape"].shape.dim.add(size=n)
    writer.node("Tanh", "tanh", ["input"])
    path = tmp_path / "graph.pb"
    path.write_bytes(writer.graph.SerializeToString())
    with pytest.raises(ConversionError, match="TensorFlow op Tanh"):
        convert_tf_graph(path, output="tanh")
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff\xff not a graph")
    with pytest.raises(ConversionError, match="not a TensorFlow GraphDef"):
        convert_tf_graph(garbage, output="tanh")


# --- Keras h5 ---------------------------------------------------------------------------------


def _tensor_ref(layer: str) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [layer, 0, 0]}}


def _layer(kind: str, name: str, inputs: list[str], **config) -> dict:
    args = [_tensor_ref(item) for item in inputs]
    inbound: list[dict[str, Any]] = (
        [{"args": [args] if len(args) > 1 else args, "kwargs": {}}] if inputs else []
    )
    return {"class_name": kind, "name": name, "config": {"name": name, **config},
            "inbound_nodes": inbound}  # fmt: skip


def _keras_model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    weights = {
        "conv/kernel": uniform(3, 3, 3, 4),
        "dw/kernel": uniform(3, 3, 4, 1),
        "project/kernel": uniform(1, 1, 4, 4),
        "project/bias": uniform(4),
        "dense/kernel": uniform(4, 3),
        "dense/bias": uniform(3),
    }
    for bn, channels in (("bn", 4), ("dw_bn", 4)):
        for key, value in zip(("gamma", "beta", "moving_mean", "moving_variance"),
                              _bn_params(channels), strict=True):  # fmt: skip
            weights[f"{bn}/{key}"] = value
    backbone = {
        "class_name": "Functional",
        "name": "backbone",
        "config": {
            "name": "backbone",
            "layers": [
                _layer("InputLayer", "inner_input", [], batch_shape=[None, 9, 9, 3]),
                _layer("Conv2D", "conv", ["inner_input"], strides=[2, 2], padding="same",
                       use_bias=False, activation="linear", kernel_size=[3, 3]),
                _layer("BatchNormalization", "bn", ["conv"], axis=-1, epsilon=1e-3),
                _layer("ReLU", "relu", ["bn"], max_value=6.0, negative_slope=0.0, threshold=0.0),
                _layer("ZeroPadding2D", "pad", ["relu"], padding=[[0, 1], [0, 1]]),
                _layer("DepthwiseConv2D", "dw", ["pad"], strides=[2, 2], padding="valid",
                       use_bias=False, activation="linear", kernel_size=[3, 3]),
                _layer("BatchNormalization", "dw_bn", ["dw"], axis=-1, epsilon=1e-3),
                _layer("ReLU", "dw_relu", ["dw_bn"], max_value=6.0),
                _layer("Conv2D", "project", ["dw_relu"], strides=[1, 1], padding="same",
                       use_bias=True, activation="linear", kernel_size=[1, 1]),
                _layer("Add", "add", ["dw_relu", "project"]),
            ],
            "input_layers": [["inner_input", 0, 0]],
            "output_layers": [["add", 0, 0]],
        },
        "inbound_nodes": [{"args": [_tensor_ref("image")], "kwargs": {}}],
    }  # fmt: skip
    config = {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": [
                _layer("InputLayer", "image", [], batch_shape=[None, 9, 9, 3]),
                backbone,
                _layer("GlobalAveragePooling2D", "gap", ["backbone"], keepdims=False),
                _layer("Dropout", "dropout", ["gap"], rate=0.2),
                _layer("Dense", "dense", ["dropout"], activation="softmax", use_bias=True),
            ],
            "input_layers": [["image", 0, 0]],
            "output_layers": [["dense", 0, 0]],
        },
    }
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as file:
        file.attrs["model_config"] = json.dumps(config)
        group = file.create_group("model_weights")
        for name, value in weights.items():
            prefix = "" if name.startswith("dense") else "backbone/"
            group.create_dataset(f"{prefix}{name}", data=value)
    return path, weights


def test_keras_h5_with_nested_backbone_padding_batch_norm_and_dense(tmp_path: Path) -> None:
    path, w = _keras_model(tmp_path)
    model = convert_keras_h5(path)
    ops = [node.op_type for node in model.graph.node]
    assert "Pad" not in ops and "Mul" not in ops  # zero pad and batch norm folded into the convs
    assert ops.count("Conv") == 3
    image = uniform(2, 9, 9, 3, low=0.0, high=2.0)

    def bn(x, name):
        keys = ("gamma", "beta", "moving_mean", "moving_variance")
        gamma, beta, mean, variance = (w[f"{name}/{key}"] for key in keys)
        return ref.batch_norm(x, gamma, beta, mean, variance, 1e-3)

    x = ref.relu6(bn(ref.conv2d(image, w["conv/kernel"], 2, "SAME"), "bn"))
    x = ref.pad_nhwc(x, ((0, 1), (0, 1)))
    x = ref.relu6(bn(ref.depthwise(x, w["dw/kernel"], 2, "VALID"), "dw_bn"))
    x = x + ref.conv2d(x, w["project/kernel"], 1, "SAME") + w["project/bias"]
    logits = x.mean(axis=(1, 2)) @ w["dense/kernel"] + w["dense/bias"]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(run_nchw(model, tmp_path, image), expected, rtol=1e-4, atol=1e-6)


def test_keras_layer_not_supported_is_named(tmp_path: Path) -> None:
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        _layer("InputLayer", "image", [], batch_shape=[None, 4, 4, 3]),
        _layer("LSTM", "lstm", ["image"]),
    ], "input_layers": [["image", 0, 0]], "output_layers": [["lstm", 0, 0]]}}  # fmt: skip
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as file:
        file.attrs["model_config"] = json.dumps(config)
        file.create_group("model_weights")
    with pytest.raises(ConversionError, match="Keras layer LSTM"):
        convert_keras_h5(path)


# --- ONNX body --------------------------------------------------------------------------------


def nhwc_classifier(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """tf2onnx's shape: NHWC input, Transpose, Conv, Relu, MaxPool, then a dense head."""
    head = uniform(8 * 3 * 3, 2)
    initializers = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(head, "head_w"),
        numpy_helper.from_array(np.array([-1, 72], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Transpose", ["pool"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head_w"], ["scores"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 6, 6, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        initializers,
    )


def test_onnx_body_takes_nchw_input_and_drops_the_head(tmp_path: Path) -> None:
    weight, bias = uniform(8, 3, 3, 3), uniform(8)
    original = nhwc_classifier(weight, bias)
    body = cut_body(original, output="pool", size=(10, 10))
    assert [node.op_type for node in body.graph.node] == ["Conv", "Relu", "MaxPool"]
    assert sorted(item.name for item in body.graph.initializer) == ["b", "w"]
    dims = [d.dim_param or d.dim_value for d in body.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 10, 10]
    assert [d.dim_value for d in body.graph.output[0].type.tensor_type.shape.dim][1:] == [8, 5, 5]
    assert len(original.graph.node) == 7  # the input model is left as it was
    image = uniform(1, 10, 10, 3)
    conv = ref.conv2d(image, weight.transpose(2, 3, 1, 0), 1, "SAME") + bias
    expected = ref.pool(np.maximum(conv, 0), 2, 2, "VALID", "max")
    np.testing.assert_allclose(run_nchw(body, tmp_path, image), expected, rtol=1e-5, atol=1e-5)


def test_onnx_body_without_an_nhwc_transpose_is_refused() -> None:
    weight = uniform(8, 3, 3, 3)
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 4, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    with pytest.raises(ConversionError, match="no Transpose"):
        cut_body(model, output="y", size=(4, 4))


def test_fold_leaves_a_conv_output_read_twice_alone() -> None:
    weight = uniform(2, 1, 1, 1)
    scale = numpy_helper.from_array(uniform(1, 2, 1, 1), "s")
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Mul", ["c", "s"], ["m"]),
            helper.make_node("Add", ["c", "m"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 2, 2])],
        [numpy_helper.from_array(weight, "w"), scale],
    )
    folded, manifest = fold_into_convolutions(model)
    assert manifest.affine == 0 and len(folded.graph.node) == 3


def test_fold_takes_scale_and_shift_into_weights_and_bias(tmp_path: Path) -> None:
    initializers = [
        numpy_helper.from_array(uniform(4, 3, 3, 3), "w"),
        numpy_helper.from_array(uniform(4), "b"),
        numpy_helper.from_array(uniform(1, 4, 1, 1), "scale"),
        numpy_helper.from_array(uniform(4, 1, 1), "shift"),
        numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64), "pads"),
    ]
    model = make_model(
        [
            helper.make_node("Pad", ["x", "pads"], ["padded"], mode="constant"),
            helper.make_node("Conv", ["padded", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Mul", ["c", "scale"], ["m"]),
            helper.make_node("Add", ["shift", "m"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])],
        initializers,
    )
    folded, manifest = fold_into_convolutions(model)
    assert (manifest.affine, manifest.pads) == (2, 1)
    assert [node.op_type for node in folded.graph.node] == ["Conv"]
    image = uniform(1, 5, 5, 3)
    np.testing.assert_allclose(
        run_nchw(folded, tmp_path, image), run_nchw(model, tmp_path, image), rtol=1e-5, atol=1e-6
    )


def test_a_missing_extra_is_one_line_naming_the_pip_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnx_prune.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "h5py", None)
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'onnx-prune\[paper\]'"):
        convert_keras_h5(tmp_path / "model.h5")
    with pytest.raises(MissingExtraError, match=r"pip install 'onnx-prune\[paper\]'"):
        convert_tf_graph(tmp_path / "graph.pb", output="x")
