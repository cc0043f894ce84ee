"""The probe pass (``probes.add_probes``): each count it yields checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.constants import ConstantResolver
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.feeds import SampleSource
from onnx_prune.layers import find_compute_layers
from onnx_prune.load import load_model
from onnx_prune.probes import add_probes, probed_tensors
from onnx_prune.runtime import model_file, open_session
from tests.builders import FLOAT, make_model, save

EPS = (0.0, 0.1, 0.25, 0.5)


def two_conv_model(*, opset: int = 13, batch: int | str = "N", constant_nodes: bool = False):
    """x -> conv1 (filter 1 zero, bias -1: an all-zero channel) -> relu -> conv2 -> relu
    -> flatten -> gemm. Covers a signed IFM, a zero channel, and a rank-2 IFM."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    w1[1] = 0.0
    b1 = np.array([0.1, -1.0, 0.0, -0.2], np.float32)
    w2 = rng.normal(0, 0.5, (6, 4, 1, 1)).astype(np.float32)
    w3 = rng.normal(0, 0.5, (6 * 8 * 8, 5)).astype(np.float32)
    b3 = np.zeros(5, np.float32)
    arrays = {"w1": w1, "b1": b1, "w2": w2, "w3": w3, "b3": b3}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc"),
    ]
    initializers = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    if constant_nodes:
        constants = [
            helper.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}")
            for t in initializers
        ]
        nodes, initializers = constants + nodes, []
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, [batch, 5])],
        initializers,
        opset=opset,
    )


def _inputs(tmp_path: Path, samples: int = 11, shape=(3, 8, 8)) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (samples, *shape)).astype(np.float32)
    x[0, 1] = 0.0  # an all-zero input channel in sample 0
    x[2, 0, :4, :4] = 0.05  # a tile within ε=0.1 but not 0
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path


def _pull(model_path: Path, tensors: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The tensors, as onnxruntime computes them, by marking them as outputs of a copy."""
    loaded = load_model(model_path)
    copy = onnx.ModelProto()
    copy.CopyFrom(loaded.model)
    copy.graph.output.extend(helper.make_tensor_value_info(t, FLOAT, None) for t in tensors)
    with model_file(loaded, copy) as path:
        session = open_session(path)
        name = session.inputs()[0].name
        pieces = [session.run(tensors, {name: x[i : i + 1]}) for i in range(len(x))]
    return {t: np.concatenate([p[k] for p in pieces]) for k, t in enumerate(tensors)}


def _expected(values: np.ndarray, eps: tuple[float, ...]) -> dict[str, tuple[int, ...]]:
    magnitude = np.abs(values)
    samples = values.shape[0]
    planes = magnitude.reshape(samples, values.shape[1], -1)
    plane = planes.shape[2]
    bounds = [np.float32(e) for e in eps]
    zero_channels = tuple(int((planes.max(axis=2) <= e).sum()) for e in bounds)
    return {
        "zeros": tuple(int(np.count_nonzero(magnitude <= e)) for e in bounds),
        "zero_channels": zero_channels,
        "saved_elements": tuple(n * plane for n in zero_channels),
    }


def _tile_expected(values: np.ndarray, eps: tuple[float, ...], tile: int) -> tuple[int, ...]:
    magnitude = np.abs(values)
    _, _, height, width = values.shape
    saved = [0] * len(eps)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            block = magnitude[:, :, top : top + tile, left : left + tile]
            block_max = block.max(axis=(2, 3))
            for k, e in enumerate(eps):
                saved[k] += int((block_max <= np.float32(e)).sum()) * block[0, 0].size
    return tuple(saved)


def _check_against_numpy(analysis: Analysis, model_path: Path, x: np.ndarray) -> None:
    tensors = probed_tensors(analysis.layers)
    pulled = _pull(model_path, tensors, x)
    for tensor in tensors:
        stats = analysis.activations.tensors[tensor]
        expected = _expected(pulled[tensor], analysis.activations.eps)
        assert stats.elements == pulled[tensor].size, tensor
        assert stats.zeros == expected["zeros"], tensor
        assert stats.zero_channels == expected["zero_channels"], tensor
        assert stats.saved_elements == expected["saved_elements"], tensor


@pytest.mark.parametrize("opset", [9, 11, 13, 18])
def test_counts_match_numpy_at_each_opset(tmp_path: Path, opset: int) -> None:
    model_path = save(two_conv_model(opset=opset), tmp_path)
    inputs = _inputs(tmp_path)
    analysis = analyze_model(model_path, SampleSource(tensors=inputs, batch_size=4), eps=EPS)
    assert analysis.activations.samples == 11
    _check_against_numpy(analysis, model_path, np.load(inputs))
    relu1 = analysis.activations.tensors["r1"]
    assert relu1.zero_channels[0] >= 11  # the planted zero filter, in every sample


def test_tile_counts_match_numpy(tmp_path: Path) -> None:
    model_path = save(two_conv_model(), tmp_path)
    inputs = _inputs(tmp_path)
    analysis = analyze_model(model_path, SampleSource(tensors=inputs), eps=EPS, tile=(3, 3))
    pulled = _pull(model_path, ["x", "r1", "r2"], np.load(inputs))
    for tensor in ("x", "r1", "r2"):
        stats = analysis.activations.tensors[tensor]
        assert stats.tile_saved_elements == _tile_expected(pulled[tensor], EPS, 3), tensor
        assert stats.tiles == 11 * pulled[tensor].shape[1] * 9


def test_probe_pass_keeps_outputs_and_does_not_touch_the_input(tmp_path: Path) -> None:
    model = two_conv_model()
    before = model.SerializeToString()
    loaded = load_model(save(model, tmp_path))
    layers = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    probed = add_probes(loaded.model, layers, eps=EPS)
    assert loaded.model.SerializeToString() == before
    assert probed.model.graph.output[0].name == "y"
    assert probed.model.opset_import[0].version == 13
    onnx.checker.check_model(probed.model)
    kinds = {p.tensor: p.kind for p in probed.manifest.probes}
    assert kinds == {"x": "plane", "r1": "plane", "r2": "plane", "f": "tensor", "y": "tensor"}
    again = add_probes(loaded.model, layers, eps=EPS)
    assert again.model.SerializeToString() == probed.model.SerializeToString()


def test_constant_node_weights_and_ir3(tmp_path: Path) -> None:
    model = two_conv_model(constant_nodes=True, opset=9)
    model_path = save(model, tmp_path)
    inputs = _inputs(tmp_path)
    analysis = analyze_model(model_path, SampleSource(tensors=inputs), eps=EPS)
    assert [layer.name for layer in analysis.layers] == ["conv1", "conv2", "fc"]
    assert analysis.weights.layers[0].weight.zero_filters == 1
    _check_against_numpy(analysis, model_path, np.load(inputs))


def test_probed_tensors_are_deduplicated(tmp_path: Path) -> None:
    loaded = load_model(save(two_conv_model(), tmp_path))
    layers = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    assert probed_tensors(layers) == ["x", "r1", "r2", "f", "y"]
    assert layers[0].ofm == "r1" and layers[1].ifm == "r1"


def test_boundary_values_are_counted_inclusively(tmp_path: Path) -> None:
    """Values exactly at ε, one float above and below, −0.0, and subnormal-free tiny values."""
    bound = np.float32(0.1)
    values = np.array(
        [bound, np.nextafter(bound, np.float32(1)), np.nextafter(bound, np.float32(0)),
         -bound, -0.0, 0.0, 1e-30, -1e-30, 0.5, np.float32(0.25)],
        np.float32,
    )  # fmt: skip
    x = np.zeros((1, 1, 4, 4), np.float32)
    x.reshape(-1)[: values.size] = values
    weight = np.ones((1, 1, 1, 1), np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 1, 4, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    np.save(tmp_path / "x.npy", x)
    analysis = analyze_model(
        save(model, tmp_path), SampleSource(tensors=tmp_path / "x.npy"), eps=EPS
    )
    stats = analysis.activations.tensors["x"]
    assert stats.zeros == _expected(x, EPS)["zeros"]
    assert stats.zeros == (8, 13, 15, 16)


def test_rank_and_dtype_of_probe_outputs(tmp_path: Path) -> None:
    loaded = load_model(save(two_conv_model(), tmp_path))
    layers = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    probed = add_probes(loaded.model, layers, eps=EPS)
    outputs = {o.name: o for o in probed.model.graph.output}
    for name in probed.manifest.outputs():
        assert outputs[name].type.tensor_type.elem_type == TensorProto.FLOAT


def test_quantized_feature_maps_are_zero_at_their_zero_point(tmp_path: Path) -> None:
    """A QLinearConv reads and writes uint8 maps: zero is the zero point, ε is in real units."""
    arrays: dict[str, np.ndarray] = {
        "xs": np.array(0.05, np.float32),
        "xz": np.array(128, np.uint8),
        "w": np.full((2, 1, 1, 1), 3, np.uint8),
        "ws": np.array(0.1, np.float32),
        "wz": np.array(0, np.uint8),
        "ys": np.array(0.2, np.float32),
        "yz": np.array(10, np.uint8),
    }
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    node = helper.make_node("QLinearConv", names, ["y"], name="qconv")
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["N", 2, 4, 4])],
        [numpy_helper.from_array(value, key) for key, value in arrays.items()],
    )
    x = np.random.default_rng(2).integers(120, 137, size=(3, 1, 4, 4)).astype(np.uint8)
    x[0] = 128
    np.save(tmp_path / "x.npy", x)
    eps = (0.0, 0.1)
    path = save(model, tmp_path)
    analysis = analyze_model(path, SampleSource(tensors=tmp_path / "x.npy"), eps=eps)
    real = (x.astype(np.float64) - 128) * np.float32(0.05)
    expected = tuple(int(np.count_nonzero(np.abs(real).astype(np.float32) <= e)) for e in eps)
    assert analysis.activations.tensors["x"].zeros == expected
    assert analysis.activations.tensors["x"].zero_channels[0] == 1  # sample 0 is all 128
    y = _pull(path, ["y"], x)["y"]
    expected_y = int(np.count_nonzero(y == 10))
    assert analysis.activations.tensors["y"].zeros[0] == expected_y


def test_a_map_without_a_leading_batch_axis_is_a_clear_error(tmp_path: Path) -> None:
    weight = np.ones((6, 4), np.float32)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transA=1)
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", FLOAT, [6, 2])],
        [helper.make_tensor_value_info("y", FLOAT, [2, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    np.save(tmp_path / "x.npy", np.ones((6, 2), np.float32))
    with pytest.raises(UnsupportedModelError, match="its first axis is not the batch"):
        analyze_model(save(model, tmp_path), SampleSource(tensors=tmp_path / "x.npy"), eps=EPS)


def test_tiles_are_counted_when_height_and_width_are_symbolic(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("r", FLOAT, ["N", 4, "H", "W"])],
        [numpy_helper.from_array(weight, "w")],
    )
    x = np.random.default_rng(1).normal(size=(2, 3, 16, 12)).astype(np.float32)
    x[0, :, :8, :8] = 0.0
    np.save(tmp_path / "x.npy", x)
    path = save(model, tmp_path)
    analysis = analyze_model(path, SampleSource(tensors=tmp_path / "x.npy"), eps=EPS, tile=(8, 8))
    assert {
        p.kind for p in add_probes(load_model(path).model, analysis.layers, eps=EPS).manifest.probes
    } == {"tensor"}
    pulled = _pull(path, ["x", "r"], x)
    for tensor in ("x", "r"):
        stats = analysis.activations.tensors[tensor]
        assert stats.tile_saved_elements == _tile_expected(pulled[tensor], EPS, 8), tensor
        assert stats.tiles == 2 * pulled[tensor].shape[1] * 4


def test_ofm_follows_the_activation_even_when_the_raw_output_is_a_model_output(
    tmp_path: Path,
) -> None:
    weight = np.ones((2, 3, 1, 1), np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 4, 4])],
        [
            helper.make_tensor_value_info("c", FLOAT, ["N", 2, 4, 4]),
            helper.make_tensor_value_info("r", FLOAT, ["N", 2, 4, 4]),
        ],
        [numpy_helper.from_array(weight, "w")],
    )
    loaded = load_model(save(model, tmp_path))
    (layer,) = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    assert layer.ofm == "r"


def _gated_model(gate_nodes: list[onnx.NodeProto], tail: list[onnx.NodeProto], out: str):
    weight = np.ones((2, 3, 1, 1), np.float32)
    constants = {
        "three": np.array(3, np.float32),
        "zero": np.array(0, np.float32),
        "six": np.array(6, np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), *gate_nodes, *tail]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info(out, FLOAT, ["N", 2, 4, 4])],
        [numpy_helper.from_array(weight, "w")]
        + [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )


@pytest.mark.parametrize(
    ("gate", "tail", "ofm"),
    [
        (  # SiLU / Swish: x * sigmoid(x)
            [helper.make_node("Sigmoid", ["c"], ["s"])],
            [helper.make_node("Mul", ["c", "s"], ["y"])],
            "y",
        ),
        (  # HardSwish as paddle2onnx writes it: x * clip(x + 3, 0, 6) / 6
            [
                helper.make_node("Add", ["c", "three"], ["a"]),
                helper.make_node("Clip", ["a", "zero", "six"], ["g"]),
            ],
            [
                helper.make_node("Mul", ["c", "g"], ["m"]),
                helper.make_node("Div", ["m", "six"], ["y"]),
            ],
            "y",
        ),
        (  # a product with another computed tensor is not a gate: the chain stops at the conv
            [helper.make_node("Relu", ["x"], ["g"])],
            [helper.make_node("Mul", ["c", "c"], ["y"])],
            "c",
        ),
    ],
    ids=["silu", "hardswish", "not-a-gate"],
)
def test_gated_activations_end_the_chain_after_the_product(
    tmp_path: Path, gate: list[onnx.NodeProto], tail: list[onnx.NodeProto], ofm: str
) -> None:
    loaded = load_model(save(_gated_model(gate, tail, "y"), tmp_path))
    (layer,) = find_compute_layers(loaded.model, ConstantResolver(loaded)).layers
    assert layer.ofm == ofm
