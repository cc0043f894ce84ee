"""The bandwidth model and pruning simulation on tiny models with planted zeros, against numpy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.bandwidth import (
    GRANULARITIES,
    BandwidthReport,
    estimate_bandwidth,
)
from onnx_prune.feeds import SampleSource
from onnx_prune.jsondoc import (
    analysis_document,
    bandwidth_layer_document,
    bandwidth_totals_document,
)
from onnx_prune.report.bandwidth import format_bandwidth
from tests.builders import FLOAT, make_model, save
from tests.golden_util import assert_golden, render

EPS = (0.0, 0.1)
TILE = (4, 4)
SAMPLES = 3
LAYERS = ("conv_a", "conv_dw", "conv_pw", "fc")


def _tensor(array: np.ndarray, name: str) -> TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def network_weights() -> dict[str, np.ndarray]:
    """conv_a's filters 2 and 5 are zero with bias −1: ReLU makes OFM channels 2 and 5 zero.

    The depthwise conv keeps them zero (bias 0) and zeroes channel 7 (bias −100).
    """
    rng = np.random.default_rng(7)
    conv_a = rng.uniform(0.1, 1.0, (8, 3, 3, 3))
    conv_a[[2, 5]] = 0.0
    bias_a = np.zeros(8)
    bias_a[[2, 5]] = -1.0
    bias_dw = np.zeros(8)
    bias_dw[7] = -100.0
    return {
        "w_a": conv_a,
        "b_a": bias_a,
        "w_dw": rng.uniform(0.1, 1.0, (8, 1, 3, 3)),
        "b_dw": bias_dw,
        "w_pw": rng.uniform(-1.0, 1.0, (4, 8, 1, 1)),
        "b_pw": np.zeros(4),
        "w_fc": rng.uniform(-1.0, 1.0, (10, 64)),
        "b_fc": rng.uniform(-1.0, 1.0, 10),
    }


def network_model() -> onnx.ModelProto:
    """x[N,3,8,8] -> 3x3 conv -> depthwise 3x3 -> 1x1 conv -> MaxPool -> Flatten -> Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["a"], name="conv_a", pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["y1"], name="relu_a"),
        helper.make_node(
            "Conv", ["y1", "w_dw", "b_dw"], ["dw"], name="conv_dw", pads=[1] * 4, group=8
        ),
        helper.make_node("Relu", ["dw"], ["y2"], name="relu_dw"),
        helper.make_node("Conv", ["y2", "w_pw", "b_pw"], ["pw"], name="conv_pw"),
        helper.make_node("Relu", ["pw"], ["y3"], name="relu_pw"),
        helper.make_node(
            "MaxPool", ["y3"], ["pooled"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], name="fc", transB=1),
    ]
    initializers = [_tensor(value, name) for name, value in network_weights().items()]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", FLOAT, ["N", 10])],
        initializers,
    )


def network_inputs() -> np.ndarray:
    """Positive inputs with planted zeros: channel 1 always zero, channel 0 zero in sample 0 and
    in a 4x4 quadrant otherwise, channel 2 at 0.05 (within ε=0.1) in a quadrant."""
    x = np.random.default_rng(3).uniform(0.5, 1.0, (SAMPLES, 3, 8, 8)).astype(np.float32)
    x[:, 1] = 0.0
    x[:, 0, :4, :4] = 0.0
    x[0, 0] = 0.0
    x[:, 2, 4:, 4:] = 0.05
    return x


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, Analysis]:
    folder = tmp_path_factory.mktemp("network")
    model = network_model()
    np.save(folder / "inputs.npy", network_inputs())
    calibration = SampleSource(tensors=folder / "inputs.npy", batch_size=2)
    analysis = analyze_model(save(model, folder), calibration, eps=EPS, tile=TILE)
    return model, analysis


def _estimate(
    network: tuple[onnx.ModelProto, Analysis], bits: int | None = None
) -> BandwidthReport:
    model, analysis = network
    return estimate_bandwidth(
        model, analysis.layers, analysis.activations, analysis.weights, bits=bits
    )


def _ifms(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Each layer's IFM, computed by onnx's reference evaluator (not onnxruntime)."""
    names = ["x", "y1", "y2", "flat"]
    values = ReferenceEvaluator(model).run(names, {"x": network_inputs()})
    return dict(zip(LAYERS, values, strict=True))


def _saved_values(values: np.ndarray, eps: float) -> dict[str, int]:
    """Values in zero channels, zero tiles and zero elements, counted with numpy."""
    magnitude = np.abs(values)
    element = int(np.count_nonzero(magnitude <= eps))
    if magnitude.ndim == 2:
        return {"channel": element, "tile": element, "element": element}
    plane = magnitude.shape[2] * magnitude.shape[3]
    channel = int(np.count_nonzero(magnitude.max(axis=(2, 3)) <= eps)) * plane
    tile = 0
    for row in range(0, magnitude.shape[2], TILE[0]):
        for col in range(0, magnitude.shape[3], TILE[1]):
            block = magnitude[:, :, row : row + TILE[0], col : col + TILE[1]]
            within = int(np.count_nonzero(block.max(axis=(2, 3)) <= eps))
            tile += within * block.shape[2] * block.shape[3]
    return {"channel": channel, "tile": tile, "element": element}


def test_bytes_macs_and_kinds_by_hand(network: tuple[onnx.ModelProto, Analysis]) -> None:
    report = _estimate(network)
    found = {
        layer.name: (layer.kind, layer.macs, layer.bytes.weights, layer.bytes.ifm, layer.bytes.ofm)
        for layer in report.layers
    }
    assert found == {
        "conv_a": ("conv", 8 * 8 * 8 * 3 * 9, (216 + 8) * 4, 192 * 4, 512 * 4),
        "conv_dw": ("depthwise", 8 * 8 * 8 * 9, (72 + 8) * 4, 512 * 4, 512 * 4),
        "conv_pw": ("pointwise", 4 * 8 * 8 * 8, (32 + 4) * 4, 512 * 4, 256 * 4),
        "fc": ("fc", 10 * 64, (640 + 10) * 4, 64 * 4, 10 * 4),
    }
    assert report.samples == SAMPLES
    assert report.assumed_widths == ()


def test_sixteen_bits_halves_every_byte_count(network: tuple[onnx.ModelProto, Analysis]) -> None:
    full, half = _estimate(network), _estimate(network, bits=16)
    for wide, narrow in zip(full.layers, half.layers, strict=True):
        assert narrow.bytes.weights is not None and wide.bytes.weights is not None
        assert 2 * narrow.bytes.weights == wide.bytes.weights
        assert (2 * narrow.bytes.ifm, 2 * narrow.bytes.ofm) == (wide.bytes.ifm, wide.bytes.ofm)
        for granularity in GRANULARITIES:
            assert [2 * s for s in narrow.saved.of(granularity)] == list(wide.saved.of(granularity))
    assert half.bits == 16
    assert half.total.ifm_saved_share("tile") == full.total.ifm_saved_share("tile")


def test_odd_bit_widths_round_each_tensor_up_to_whole_bytes(
    network: tuple[onnx.ModelProto, Analysis],
) -> None:
    fc = _estimate(network, bits=3).layer("fc")
    assert fc is not None
    assert fc.bytes == dataclasses.replace(fc.bytes, weights=240 + 4, ifm=24, ofm=4)


def test_planted_zero_channels_by_hand(network: tuple[onnx.ModelProto, Analysis]) -> None:
    report = _estimate(network)
    conv_a, conv_dw = report.layer("conv_a"), report.layer("conv_dw")
    assert conv_a is not None and conv_dw is not None
    # x: channel 1 in every sample and channel 0 in sample 0; 4 bytes a value, mean of 3 samples
    assert conv_a.saved.channel == (4 * 64 * 4 / 3, 4 * 64 * 4 / 3)
    # tiles: those channels plus channel 0's zero quadrant in samples 1 and 2 (+ the 0.05 ones)
    assert conv_a.saved.tile == (4 * (256 + 2 * 16) / 3, 4 * (256 + 2 * 16 + 3 * 16) / 3)
    assert conv_a.saved.element == conv_a.saved.tile
    # y1: conv_a's zero filters with a negative bias give zero channels 2 and 5 in every sample
    assert conv_dw.saved.channel[0] == 2 * 64 * 4


@pytest.mark.parametrize("bits", [None, 16])
def test_savings_match_numpy(network: tuple[onnx.ModelProto, Analysis], bits: int | None) -> None:
    report = _estimate(network, bits=bits)
    width = (bits or 32) / 8
    for name, values in _ifms(network[0]).items():
        layer = report.layer(name)
        assert layer is not None
        for index, eps in enumerate(EPS):
            expected = _saved_values(values, eps)
            for granularity in GRANULARITIES:
                saved = layer.saved.of(granularity)[index]
                assert saved == pytest.approx(expected[granularity] * width / SAMPLES), (
                    name,
                    eps,
                    granularity,
                )


def test_macs_skipped_by_channel_pruning(network: tuple[onnx.ModelProto, Analysis]) -> None:
    report = _estimate(network)
    ifms = _ifms(network[0])
    for layer in report.layers:
        assert layer.macs is not None and layer.macs_skipped_channel is not None
        values = ifms[layer.name]
        channel = _saved_values(values, 0.0)["channel"]
        expected = layer.macs * channel / values.size
        assert layer.macs_skipped_channel[0] == pytest.approx(expected)
    conv_pw = report.layer("conv_pw")
    assert conv_pw is not None and conv_pw.macs_skipped_channel is not None
    # three of eight input channels (2, 5, 7) are zero in every sample
    assert conv_pw.macs_skipped_channel[0] == pytest.approx(2048 * 3 / 8)


def test_totals_and_ifm_share_by_kind(network: tuple[onnx.ModelProto, Analysis]) -> None:
    report = _estimate(network)
    total = report.total
    assert (total.layers, total.weights, total.ifm, total.ofm) == (4, 3960, 5120, 5160)
    assert total.load == 14240
    assert total.ifm_share == pytest.approx(5120 / 14240)
    assert total.macs == 13824 + 4608 + 2048 + 640
    depthwise = report.by_kind["depthwise"]
    assert depthwise.layers == 1
    assert depthwise.ifm_share == pytest.approx(2048 / (320 + 2048 + 2048))
    assert report.by_kind["fc"].ifm_share == pytest.approx(256 / (2600 + 256 + 40))
    saved = sum(layer.saved.channel[1] for layer in report.layers)
    assert total.saved.channel[1] == pytest.approx(saved)
    assert total.saved_share("channel")[1] == pytest.approx(saved / 14240)
    assert total.ifm_saved_share("channel")[1] == pytest.approx(saved / 5120)
    assert total.pruned_load("element")[0] == pytest.approx(14240 - total.saved.element[0])


def test_per_sample_shares_match_numpy(network: tuple[onnx.ModelProto, Analysis]) -> None:
    analysis = network[1]
    ifms = _ifms(network[0])
    samples = zip(analysis.activations.per_sample, analysis.summary.per_sample, strict=True)
    for index, (sample, share) in enumerate(samples):
        values = [ifms[name][index : index + 1] for name in LAYERS]
        assert sample.ifm_elements == sum(v.size for v in values)
        for k, eps in enumerate(EPS):
            expected = sum(_saved_values(v, eps)["channel"] for v in values)
            assert sample.ifm_saved[k] == expected
            assert share.ifm[k] == pytest.approx(expected / sample.ifm_elements)


def test_pooling_is_listed_as_not_analysed(network: tuple[onnx.ModelProto, Analysis]) -> None:
    report = _estimate(network)
    assert [(item.name, item.op_type) for item in report.not_analysed] == [("pool", "MaxPool")]


def test_a_layer_without_its_weight_is_not_analysed_never_zero(
    network: tuple[onnx.ModelProto, Analysis],
) -> None:
    model, analysis = network
    weights = dataclasses.replace(analysis.weights, layers=analysis.weights.layers[1:])
    report = estimate_bandwidth(model, analysis.layers, analysis.activations, weights)
    conv_a = report.layer("conv_a")
    assert conv_a is not None
    assert (conv_a.bytes.weights, conv_a.macs, conv_a.ifm_share) == (None, None, None)
    assert conv_a.bytes.ifm == 768
    assert report.total.layers == 3
    assert report.total.ifm == 5120 - 768
    assert ("conv_a", "Conv") in [(item.name, item.op_type) for item in report.not_analysed]
    document = bandwidth_layer_document(conv_a)
    assert document["bytes"] == {"weights": None, "ifm": 768, "ofm": 2048}


def test_layer_document(network: tuple[onnx.ModelProto, Analysis]) -> None:
    report = _estimate(network)
    conv_a = report.layer("conv_a")
    assert conv_a is not None
    document = bandwidth_layer_document(conv_a)
    assert document["bytes"] == {"weights": 896, "ifm": 768, "ofm": 2048}
    assert document["saved_bytes"] == {
        "channel": [341, 341],
        "tile": [384, 448],
        "element": [384, 448],
    }
    assert document["kind"] == "conv"
    assert document["macs"] == 13824
    assert all(isinstance(v, int) for v in document["macs_skipped_channel"])


def test_totals_document_is_json(network: tuple[onnx.ModelProto, Analysis]) -> None:
    report = _estimate(network, bits=16)
    document = json.loads(json.dumps(bandwidth_totals_document(report)))
    assert document["bits"] == 16
    assert document["total"]["bytes"] == {"weights": 1980, "ifm": 2560, "ofm": 2580}
    assert document["total"]["load"] == 7120
    assert set(document["total"]["saved_bytes"]) == {"channel", "tile", "element"}
    assert len(document["total"]["saved_share"]["tile"]) == len(EPS)
    assert set(document["by_kind"]) == {"depthwise", "pointwise", "conv", "fc"}
    assert "per_sample" not in document  # one place only: the summary's per-sample shares
    assert len(analysis_document(network[1])["summary"]["per_sample"]) == SAMPLES
    assert document["not_analysed"][0]["op_type"] == "MaxPool"


def test_quantized_weight_is_one_byte_a_value(tmp_path: Path) -> None:
    weight = np.arange(-54, 54, dtype=np.int8).reshape(4, 3, 3, 3)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["w"], name="dequant"),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"),
    ]
    initializers = [
        numpy_helper.from_array(weight, "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4, 6, 6])],
        initializers,
    )
    np.save(tmp_path / "x.npy", np.ones((1, 3, 8, 8), np.float32))
    calibration = SampleSource(tensors=tmp_path / "x.npy")
    analysis = analyze_model(save(model, tmp_path), calibration, eps=EPS)
    report = estimate_bandwidth(model, analysis.layers, analysis.activations, analysis.weights)
    (layer,) = report.layers
    assert layer.bytes.weights == 108 * 1 + 4 * 4
    assert report.not_analysed == ()


def test_heavy_op_without_constant_weight_is_not_analysed(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
        helper.make_node("Unsqueeze", ["h", "last"], ["column"], name="column"),
        helper.make_node("Unsqueeze", ["h", "middle"], ["row"], name="row"),
        helper.make_node("MatMul", ["column", "row"], ["outer"], name="outer"),
    ]
    initializers = [
        _tensor(np.eye(4), "w"),
        numpy_helper.from_array(np.array([2], np.int64), "last"),
        numpy_helper.from_array(np.array([1], np.int64), "middle"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("outer", FLOAT, ["N", 4, 4])],
        initializers,
    )
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    analysis = analyze_model(save(model, tmp_path), SampleSource(tensors=tmp_path / "x.npy"))
    report = estimate_bandwidth(model, analysis.layers, analysis.activations, analysis.weights)
    assert [layer.name for layer in report.layers] == ["dense"]
    assert report.layers[0].macs == 16
    (item,) = report.not_analysed
    assert (item.name, item.op_type) == ("outer", "MatMul")
    assert "not a constant" in item.reason


def test_bits_must_be_positive(network: tuple[onnx.ModelProto, Analysis]) -> None:
    with pytest.raises(ValueError, match="positive"):
        _estimate(network, bits=0)


def test_bandwidth_report_golden(network: tuple[onnx.ModelProto, Analysis]) -> None:
    assert_golden(render(format_bandwidth(_estimate(network), eps=0.1)), "bandwidth_table.txt")


def test_bandwidth_report_sixteen_bits_golden(network: tuple[onnx.ModelProto, Analysis]) -> None:
    text = render(format_bandwidth(_estimate(network, bits=16)))
    assert_golden(text, "bandwidth_table_bits16.txt")


def test_report_refuses_an_eps_not_measured(network: tuple[onnx.ModelProto, Analysis]) -> None:
    with pytest.raises(ValueError, match=r"ε=0\.3 was not measured: choose one of 0, 0\.1"):
        format_bandwidth(_estimate(network), eps=0.3)
