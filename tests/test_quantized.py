"""Quantized models in all three forms, made by onnxruntime's own quantizer from a small CNN.

For each form: every compute layer is found with exact zero-point counts (checked against
numpy on the stored integers), every probed feature map's counts equal numpy on the tensors
pulled from a session of the graph as written, the bandwidth model covers every layer at the
width the integer kernel moves, and coverage is complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.analysis import Analysis, analyze_model
from onnx_prune.cli import main
from onnx_prune.constants import ConstantResolver
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.feeds import SampleSource
from onnx_prune.layers import find_compute_layers
from onnx_prune.load import load_model
from onnx_prune.probes import probed_tensors
from onnx_prune.quantization import dequantize
from onnx_prune.runtime import SessionOptions, model_file, open_session
from onnx_prune.weights import count_zero_weights
from tests.builders import FLOAT, make_model, save
from tests.quantized_models import (
    COMPUTE_LAYERS,
    calibration_samples,
    quantize_dynamic_copy,
    quantize_static_copy,
    small_cnn,
)

pytest.importorskip("onnxruntime.quantization")

EPS = (0.0, 0.05, 0.3)
FORMS = {
    "qdq-tensor-13": dict(opset=13, qdq=True, per_channel=False),
    "qdq-channel-13": dict(opset=13, qdq=True, per_channel=True),
    "qdq-tensor-15": dict(opset=15, qdq=True, per_channel=False),
    "qdq-channel-15": dict(opset=15, qdq=True, per_channel=True),
    "qoperator": dict(opset=13, qdq=False, per_channel=False),
    "qoperator-channel": dict(opset=13, qdq=False, per_channel=True),
    "dynamic": dict(opset=13, dynamic=True),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The float CNN at opsets 13 and 15, and every quantized copy of it."""
    folder = tmp_path_factory.mktemp("quantized")
    floats = {
        opset: save(small_cnn(opset=opset), folder, f"float{opset}.onnx") for opset in (13, 15)
    }
    made = {"float": floats[13]}
    for form, options in FORMS.items():
        source = floats[int(options["opset"])]
        if options.get("dynamic"):
            made[form] = quantize_dynamic_copy(source, folder)
        else:
            made[form] = quantize_static_copy(
                source,
                folder,
                qdq=bool(options["qdq"]),
                per_channel=bool(options["per_channel"]),
                name=f"{form}.onnx",
            )
    np.save(folder / "x.npy", calibration_samples())
    return made


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(path).graph.node}


def test_the_quantizer_made_each_form(models: dict[str, Path]) -> None:
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _op_types(models["qdq-tensor-13"])
    assert {"QLinearConv", "QLinearMatMul", "QGemm"} <= _op_types(models["qoperator"])
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} <= _op_types(models["dynamic"])


def _expected_weight_zeros(path: Path, eps: tuple[float, ...]) -> list[tuple[int, ...]]:
    """Per compute node in graph order, from the stored integers with numpy: q == zero point,
    and |(q − zp) × scale| <= ε, written out here without the project's code."""
    model = onnx.load(path)
    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            dq = producers[node.input[1]]
            q, scale, zp, axis = (
                values[dq.input[0]],
                values[dq.input[1]],
                values[dq.input[2]],
                next((a.i for a in dq.attribute if a.name == "axis"), 1),
            )
        elif node.op_type in ("QLinearConv", "QLinearMatMul", "QGemm"):
            q, scale, zp = values[node.input[3]], values[node.input[4]], values[node.input[5]]
            axis = 0 if node.op_type in ("QLinearConv", "QGemm") else 1
        elif node.op_type in ("ConvInteger", "MatMulInteger"):
            q, zp = values[node.input[1]], values[node.input[3]]
            cast = consumers[node.output[0]][0]
            product = producers[consumers[cast.output[0]][0].input[1]]
            scale = next(values[name] for name in product.input if name in values)
            axis = 0 if node.op_type == "ConvInteger" else 1
        else:
            continue
        shape = [1] * q.ndim
        if zp.size > 1 or scale.size > 1:
            shape[axis] = q.shape[axis]
        shift = q.astype(np.int64) - zp.astype(np.int64).reshape(shape if zp.size > 1 else ())
        real = shift.astype(np.float32) * scale.astype(np.float32).reshape(
            shape if scale.size > 1 else ()
        )
        found.append(tuple(int(np.count_nonzero(np.abs(real) <= np.float32(e))) for e in eps))
        assert found[-1][0] == int(np.count_nonzero(shift == 0))
    return found


@pytest.mark.parametrize("form", sorted(FORMS))
def test_weights_finds_every_layer_with_exact_zero_point_counts(
    models: dict[str, Path], form: str
) -> None:
    report = count_zero_weights(load_model(models[form]), eps=EPS)
    assert len(report.layers) == COMPUTE_LAYERS
    assert report.coverage.layers == report.coverage.of == COMPUTE_LAYERS
    assert [layer.weight.zeros for layer in report.layers] == _expected_weight_zeros(
        models[form], EPS
    )
    assert all(layer.weight.dtype in ("int8", "uint8") for layer in report.layers)
    assert all(layer.weight.quantized for layer in report.layers)
    assert not any(layer.bias_unresolved for layer in report.layers)
    first = report.layers[0].weight
    assert first.zero_filters == 2  # conv1's two zero filters stay exactly at the zero point


def _pull(
    path: Path, tensors: list[str], x: np.ndarray, input_name: str = "x"
) -> dict[str, np.ndarray]:
    """The tensors of the graph as written (optimizations off), in one run of the whole batch,
    by marking them as untyped outputs of a copy (onnxruntime infers their types)."""
    loaded = load_model(path)
    copy = onnx.ModelProto()
    copy.CopyFrom(loaded.model)
    declared = {output.name for output in copy.graph.output}
    copy.graph.output.extend(
        helper.make_empty_tensor_value_info(t) for t in dict.fromkeys(tensors) if t not in declared
    )
    with model_file(loaded, copy) as source:
        session = open_session(source, SessionOptions(optimize=False))
        outputs = session.run(list(tensors), {input_name: x})
    return dict(zip(tensors, outputs, strict=True))


def _integer_parameters(path: Path, tensor: str) -> tuple[str | float, str | float]:
    """Scale and zero point of an integer map, read from the op that writes it (or, for a model
    input, the op that reads it): names of run-time tensors, or constant values."""
    graph = onnx.load(path).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if tensor in node.output:
            if node.op_type == "DynamicQuantizeLinear":
                return node.output[1], node.output[2]
            if node.op_type in ("Flatten", "Reshape", "MaxPool", "Transpose", "Squeeze"):
                return _integer_parameters(path, node.input[0])
            scale, zero = {
                "QuantizeLinear": (1, 2),
                "QLinearConv": (6, 7),
                "QLinearMatMul": (6, 7),
                "QLinearAdd": (6, 7),
                "QLinearMul": (6, 7),
                "QLinearSigmoid": (3, 4),
                "QLinearLeakyRelu": (3, 4),
                "QLinearAveragePool": (3, 4),
                "QLinearConcat": (0, 1),
                "QLinearGlobalAveragePool": (3, 4),
                "QGemm": (7, 8),
            }[node.op_type]
            return float(values[node.input[scale]]), float(values[node.input[zero]])
    raise AssertionError(f"no producer of {tensor}")


def _expected_maps(
    analysis: Analysis, path: Path, x: np.ndarray, input_name: str = "x"
) -> dict[str, dict[str, int | tuple[int, ...]]]:
    """Counts per probed tensor with numpy: integer maps dequantized with their scale and zero
    point (run-time ones pulled from the same run of the same batch)."""
    tensors = probed_tensors(analysis.layers)
    pulled = _pull(path, tensors, x, input_name)
    parameters = {
        tensor: _integer_parameters(path, tensor)
        for tensor in tensors
        if pulled[tensor].dtype.kind in "iu"
    }
    runtime = [name for pair in parameters.values() for name in pair if isinstance(name, str)]
    if runtime:
        pulled.update(_pull(path, runtime, x, input_name))
    expected: dict[str, dict[str, int | tuple[int, ...]]] = {}
    for tensor in tensors:
        values = pulled[tensor]
        if tensor in parameters:
            scale, zero = (
                float(pulled[p]) if isinstance(p, str) else p for p in parameters[tensor]
            )
            values = ((values.astype(np.float64) - zero) * scale).astype(np.float32)
        magnitude = np.abs(values.astype(np.float32))
        planes = magnitude.reshape(len(x), values.shape[1], -1)
        bounds = [np.float32(e) for e in analysis.activations.eps]
        expected[tensor] = {
            "elements": int(values.size),
            "zeros": tuple(int(np.count_nonzero(magnitude <= e)) for e in bounds),
            "zero_channels": tuple(int((planes.max(axis=2) <= e).sum()) for e in bounds),
        }
    return expected


@pytest.mark.parametrize("fast", [False, None], ids=["in-graph", "default"])
@pytest.mark.parametrize("form", ["float", *sorted(FORMS)])
def test_feature_map_counts_equal_numpy_on_the_graph_as_written(
    models: dict[str, Path], form: str, fast: bool | None
) -> None:
    path = models[form]
    inputs = path.parent / "x.npy"
    x = np.load(inputs)
    analysis = analyze_model(
        path,
        SampleSource(tensors=inputs, batch_size=len(x)),
        eps=EPS,
        optimize=False,
        fast=fast,
    )
    assert len(analysis.layers) == COMPUTE_LAYERS
    expected = _expected_maps(analysis, path, x)
    for tensor, numbers in expected.items():
        stats = analysis.activations.tensors[tensor]
        assert stats.elements == numbers["elements"], tensor
        assert stats.zeros == numbers["zeros"], tensor
        assert stats.zero_channels == numbers["zero_channels"], tensor
    # bandwidth: every layer counted; integer kernels move one byte per feature-map value
    loads = analysis.bandwidth.layers
    assert analysis.bandwidth.total.layers == COMPUTE_LAYERS
    assert all(load.bytes.weights is not None for load in loads)
    width = 4 if form == "float" else 1
    first = analysis.activations.tensors[analysis.layers[0].ifm]
    assert loads[0].bytes.ifm == width * first.elements // len(x)
    assert analysis.weights.coverage.complete


def test_qdq_measures_the_dequantized_tensor_the_conv_reads(models: dict[str, Path]) -> None:
    analysis = analyze_model(
        models["qdq-tensor-13"],
        SampleSource(tensors=models["float"].parent / "x.npy"),
        eps=EPS,
        optimize=False,
    )
    producers = {
        out: node for node in onnx.load(models["qdq-tensor-13"]).graph.node for out in node.output
    }
    for layer in analysis.layers:
        assert producers[layer.ifm].op_type == "DequantizeLinear", layer.name
    # the first layer's OFM is the dequantized tensor the second layer reads
    assert analysis.layers[0].ofm == analysis.layers[1].ifm


def test_quantized_ifm_share_is_close_to_the_float_model(models: dict[str, Path]) -> None:
    inputs = models["float"].parent / "x.npy"
    shares = {
        form: analyze_model(
            models[form], SampleSource(tensors=inputs), eps=(0.0,)
        ).summary.ifm.paper_mean[0]
        for form in ("float", "qdq-channel-13", "qoperator", "dynamic")
    }
    assert all(abs(share - shares["float"]) < 0.02 for share in shares.values()), shares


def _write(path: Path, arrays: dict[str, np.ndarray], nodes, inputs, outputs, opset=13) -> Path:
    initializers = [numpy_helper.from_array(value, name) for name, value in arrays.items()]
    onnx.save(make_model(nodes, inputs, outputs, initializers, opset=opset), path)
    return path


@pytest.mark.parametrize("opset", [10, 13, 19])
@pytest.mark.parametrize("scale_shape", [(), (1,)])
def test_dequantize_linear_of_constants_is_resolved_at_any_opset(
    tmp_path: Path, opset: int, scale_shape: tuple[int, ...]
) -> None:
    q = np.arange(-4, 5, dtype=np.int8).reshape(1, 1, 3, 3)
    arrays: dict[str, np.ndarray] = {
        "q": q,
        "scale": np.full(scale_shape, 0.5, np.float32),
        "zero": np.full(scale_shape, 2, np.int8),
        "bq": np.array([4], np.int32),
        "bs": np.full(scale_shape, 0.25, np.float32),
    }
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["w"]),
        helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"]),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"),
    ]
    path = _write(
        tmp_path / "m.onnx",
        arrays,
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 1, 5, 5])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 1, 3, 3])],
        opset=opset,
    )
    loaded = load_model(path)
    resolver = ConstantResolver(loaded)
    np.testing.assert_array_equal(resolver.value("w"), (q.astype(np.float32) - 2) * 0.5)
    np.testing.assert_array_equal(resolver.value("b"), np.array([1.0], np.float32))
    (layer,) = count_zero_weights(loaded, eps=(0.0, 0.5)).layers
    assert layer.weight.zeros == (1, 3)  # q == 2 only; |q − 2| × 0.5 <= 0.5 for q in 1..3
    assert layer.weight.dtype == "int8"
    assert layer.bias is not None and layer.bias.elements == 1


def test_per_axis_dequantization() -> None:
    q = np.array([[3, 4], [5, 5]], np.uint8)
    real = dequantize(q, np.array([1.0, 0.5], np.float32), np.array([3, 5], np.uint8), axis=0)
    np.testing.assert_array_equal(real, np.array([[0.0, 1.0], [0.0, 0.0]], np.float32))


def test_a_bias_that_cannot_be_resolved_keeps_the_layer(tmp_path: Path) -> None:
    """The bias is scaled by a model input: the weight is still counted, the bias is named."""
    arrays = {"w": np.zeros((2, 1, 1, 1), np.float32), "bq": np.array([1, 2], np.int32)}
    nodes = [
        helper.make_node("DequantizeLinear", ["bq", "s"], ["b"]),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"),
    ]
    path = _write(
        tmp_path / "m.onnx",
        arrays,
        nodes,
        [
            helper.make_tensor_value_info("x", FLOAT, ["N", 1, 2, 2]),
            helper.make_tensor_value_info("s", FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 2, 2, 2])],
    )
    report = count_zero_weights(load_model(path))
    (layer,) = report.layers
    assert layer.weight.zeros == (2,)
    assert layer.bias is None and layer.bias_unresolved is not None
    assert "'b'" in layer.bias_unresolved


def _one_relu(path: Path) -> Path:
    return _write(
        path,
        {},
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [helper.make_tensor_value_info("x", FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4])],
    )


def test_a_model_without_compute_layers_says_so(tmp_path: Path, capsys) -> None:
    path = _one_relu(tmp_path / "relu.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    with pytest.raises(UnsupportedModelError, match=r"found: Relu ×1"):
        analyze_model(path, SampleSource(tensors=tmp_path / "x.npy"))
    assert main(["analyze", str(path), "--inputs", str(tmp_path / "x.npy")]) == 2
    out = capsys.readouterr()
    assert "no Conv/Gemm/MatMul with a constant weight; found: Relu ×1" in out.out + out.err
    assert "Traceback" not in out.out + out.err
    assert main(["weights", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no Conv/Gemm/MatMul with a constant weight; found: Relu ×1" in " ".join(out.split())


def _partial_model(path: Path) -> Path:
    """A conv layer, a MatMul of two activations, and an LSTM inside an If branch."""
    rng = np.random.default_rng(3)
    lstm_w = rng.normal(size=(1, 16, 4)).astype(np.float32)
    lstm_r = rng.normal(size=(1, 16, 4)).astype(np.float32)
    hidden = [3, 1, 1, 4]
    branch = helper.make_graph(
        [helper.make_node("LSTM", ["seq", "lstm_w", "lstm_r"], ["h"], name="lstm", hidden_size=4)],
        "then",
        [],
        [helper.make_tensor_value_info("h", FLOAT, hidden)],
        [numpy_helper.from_array(lstm_w, "lstm_w"), numpy_helper.from_array(lstm_r, "lstm_r")],
    )
    zeros = numpy_helper.from_array(np.zeros(hidden, np.float32), "zeros")
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["h2"], value=zeros)],
        "else",
        [],
        [helper.make_tensor_value_info("h2", FLOAT, hidden)],
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "r"], ["y"], name="attention"),
        helper.make_node(
            "If", ["flag"], ["z"], name="branch", then_branch=branch, else_branch=other
        ),
    ]
    arrays: dict[str, np.ndarray] = {
        "w": np.ones((2, 2, 1, 1), np.float32),
        "flag": np.array(True),
        "seq": np.ones((3, 1, 4), np.float32),
    }
    return _write(
        path,
        arrays,
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 2, 2, 2])],
        [
            helper.make_tensor_value_info("y", FLOAT, ["N", 2, 2, 2]),
            helper.make_tensor_value_info("z", FLOAT, hidden),
        ],
    )


def test_coverage_names_what_was_not_analysed(tmp_path: Path, capsys) -> None:
    path = _partial_model(tmp_path / "partial.onnx")
    report = count_zero_weights(load_model(path))
    assert (report.coverage.layers, report.coverage.of) == (1, 3)
    by_op = {item.op_type: item for item in report.unresolved}
    assert set(by_op) == {"MatMul", "LSTM"}
    assert "inside the 'then_branch' of If 'branch'" in by_op["LSTM"].reason
    total = 4 + 1 + 12 + 64 + 64 + 12  # conv weight, flag, sequence, LSTM W and R, else zeros
    assert by_op["LSTM"].weight_share == pytest.approx((12 + 128) / total)
    assert main(["weights", str(path), "--json", str(tmp_path / "w.json")]) == 0
    document = json.loads((tmp_path / "w.json").read_text())
    assert document["coverage"] == {"layers": 1, "of": 3}
    lstm = next(item for item in document["unresolved"] if item["op_type"] == "LSTM")
    assert lstm["weight_share"] == pytest.approx((12 + 128) / total)
    assert "PARTIAL: 1 of 3 compute-like ops analysed" in " ".join(capsys.readouterr().out.split())


def test_zoo_marks_a_partial_model(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "zoo"
    folder.mkdir()
    path = _partial_model(folder / "partial.onnx")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.savez(inputs / "partial.npz", x=np.ones((2, 2, 2, 2), np.float32))
    code = main(
        ["zoo", str(folder), "--inputs-dir", str(inputs), "--json", str(tmp_path / "zoo.json")]
    )
    document = json.loads((tmp_path / "zoo.json").read_text())
    (model,) = document["models"]
    assert code == 0, model["reason"]
    assert model["status"] == "partial"
    assert "1 of 3 compute-like ops analysed" in model["reason"]
    assert model["analysis"]["coverage"] == {"layers": 1, "of": 3}
    assert document["summary"]["partial"] == 1
    assert path.exists()


def test_a_float16_copy_runs_through_analyze(tmp_path: Path) -> None:
    float16 = pytest.importorskip("onnxruntime.transformers.float16")
    model = float16.convert_float_to_float16(small_cnn(), keep_io_types=True)
    path = save(model, tmp_path, "fp16.onnx")
    x = calibration_samples()
    np.save(tmp_path / "x.npy", x)
    analysis = analyze_model(
        path, SampleSource(tensors=tmp_path / "x.npy", batch_size=len(x)), eps=EPS, optimize=False
    )
    assert len(analysis.layers) == COMPUTE_LAYERS
    tensors = probed_tensors(analysis.layers)
    pulled = _pull(path, tensors, x)
    for tensor in tensors:
        magnitude = np.abs(pulled[tensor])
        expected = tuple(
            int(np.count_nonzero(magnitude.astype(np.float32) <= np.float32(e))) for e in EPS
        )
        assert analysis.activations.tensors[tensor].zeros == expected, tensor
    assert analysis.bandwidth.layers[1].bytes.ifm == 2 * 8 * 12 * 12  # fp16: two bytes a value


def test_integer_probe_outputs_carry_their_real_type(models: dict[str, Path]) -> None:
    from onnx_prune.probes import add_probes

    loaded = load_model(models["qoperator"])
    scan = find_compute_layers(loaded.model, ConstantResolver(loaded))
    probed = add_probes(loaded.model, scan.layers, eps=EPS)
    declared = {o.name: o.type.tensor_type.elem_type for o in probed.model.graph.output}
    for probe in probed.manifest.probes:
        assert declared[probe.tile_max] == TensorProto.UINT8, probe.tensor


@pytest.mark.slow
@pytest.mark.parametrize("form", ["qdq-channel", "qoperator", "dynamic"])
def test_quantized_embedded_model_finds_all_layers_and_counts_match_numpy(
    tmp_path: Path, form: str
) -> None:
    """EfficientNet-Lite0 quantized by onnxruntime on two photos: 50 layers, counts = numpy."""
    from onnx_prune.cli import DEFAULT_IMAGES, DEFAULT_MODEL
    from onnx_prune.inputs import get_preset, load_image

    preset = get_preset("efficientnet-lite")
    photos = [load_image(DEFAULT_IMAGES / n, preset, (224, 224)) for n in ("dog.jpg", "eagle.jpg")]
    x = np.stack(photos)
    np.save(tmp_path / "x.npy", x)
    name = onnx.load(DEFAULT_MODEL, load_external_data=False).graph.input[0].name
    if form == "dynamic":
        path = quantize_dynamic_copy(DEFAULT_MODEL, tmp_path)
    else:
        path = quantize_static_copy(
            DEFAULT_MODEL,
            tmp_path,
            qdq=form.startswith("qdq"),
            per_channel=True,
            name=f"{form}.onnx",
            samples=x,
            input_name=name,
        )
    analysis = analyze_model(
        path, SampleSource(tensors=tmp_path / "x.npy", batch_size=2), eps=EPS, optimize=False
    )
    assert len(analysis.layers) == 50
    assert analysis.weights.coverage.complete
    for tensor, numbers in _expected_maps(analysis, path, x, input_name=name).items():
        stats = analysis.activations.tensors[tensor]
        assert (stats.elements, stats.zeros, stats.zero_channels) == (
            numbers["elements"],
            numbers["zeros"],
            numbers["zero_channels"],
        ), tensor


def test_int4_weights_show_their_stored_dtype(tmp_path: Path) -> None:
    """An opset-21 QDQ weight stored as int4, per output channel: zero where q == zero point."""
    q = np.array([[[[1, -2]], [[3, 0]]], [[[2, 2]], [[-1, 2]]]], np.int8)  # [2, 2, 1, 2]
    weight = helper.make_tensor("q", TensorProto.INT4, q.shape, q.flatten().tolist())
    zero = helper.make_tensor("zero", TensorProto.INT4, [2], [0, 2])
    scale = numpy_helper.from_array(np.array([0.5, 0.25], np.float32), "scale")
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["w"], axis=0),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 2, 3, 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 2, 3, 2])],
        [weight, zero, scale],
        opset=21,
        ir_version=10,
    )
    path = save(model, tmp_path)
    (layer,) = count_zero_weights(load_model(path), eps=(0.0, 0.25)).layers
    assert layer.weight.dtype == "int4"
    # filter 0 (zero point 0, scale 0.5): q = 0 once, and |q| * 0.5 <= 0.25 only there;
    # filter 1 (zero point 2, scale 0.25): q = 2 three times, and q = -1 gives 0.75 > 0.25
    assert layer.weight.zeros == (4, 4)
    assert layer.weight.zero_filters == 0


def test_a_dynamic_quantize_lstm_is_listed_with_its_weight_share(tmp_path: Path) -> None:
    weights: dict[str, np.ndarray] = {
        "w": np.ones((2, 2, 1, 1), np.float32),
        "lw": np.ones((1, 2, 16), np.int8),
        "lr": np.ones((1, 4, 16), np.int8),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node(
            "DynamicQuantizeLSTM", ["seq", "lw", "lr"], ["h"], name="lstm", domain="com.microsoft"
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "lstm",
        [
            helper.make_tensor_value_info("x", FLOAT, ["N", 2, 2, 2]),
            helper.make_tensor_value_info("seq", FLOAT, [3, 1, 2]),
        ],
        [
            helper.make_tensor_value_info("c", FLOAT, ["N", 2, 2, 2]),
            helper.make_tensor_value_info("h", FLOAT, None),
        ],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )
    path = save(model, tmp_path)
    report = count_zero_weights(load_model(path))
    (item,) = report.unresolved
    assert item.op_type == "DynamicQuantizeLSTM"
    assert item.weight_share == pytest.approx(96 / 100)
    assert (report.coverage.layers, report.coverage.of) == (1, 2)


def test_feature_map_scales_of_shape_one(tmp_path: Path) -> None:
    """Scales and zero points of shape [1] (not []): the map's zero point is still found."""
    arrays: dict[str, np.ndarray] = {
        "s": np.array([0.05], np.float32),
        "z": np.array([128], np.uint8),
        "w": np.full((2, 1, 1, 1), 3, np.int8),
        "ws": np.array([0.1], np.float32),
        "wz": np.array([0], np.int8),
        "ys": np.array([0.2], np.float32),
        "yz": np.array([10], np.uint8),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "s", "z", "w", "ws", "wz", "ys", "yz"], ["yq"], name="qconv"
        ),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    path = _write(
        tmp_path / "m.onnx",
        arrays,
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 2, 4, 4])],
    )
    x = np.random.default_rng(4).normal(0, 0.2, size=(3, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    analysis = analyze_model(path, SampleSource(tensors=tmp_path / "x.npy"), eps=(0.0, 0.1))
    pulled = _pull(path, ["xq", "yq"], x)
    for tensor, scale, zero in (("xq", 0.05, 128), ("yq", 0.2, 10)):
        real = ((pulled[tensor].astype(np.float64) - zero) * scale).astype(np.float32)
        expected = tuple(int(np.count_nonzero(np.abs(real) <= np.float32(e))) for e in (0, 0.1))
        assert analysis.activations.tensors[tensor].zeros == expected, tensor
    assert analysis.activations.tensors["xq"].zeros[0] > 0
