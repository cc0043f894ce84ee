"""The one feeder: batch axes, inputs without one, casts, fixed batches, sample ranges; a
voice-activity-style model (input [batch, seq], state [2, batch, 128], scalar sr) end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_prune.analysis import analyze_model
from onnx_prune.cli import main
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import (
    DEFAULT_EPS,
    Feeder,
    InputLayout,
    SampleSource,
    cast_input,
    fixed_batch,
    parse_batch_axis,
    plan_inputs,
)
from onnx_prune.runtime import TensorSpec
from tests.builders import FLOAT, conv_relu_model, conv_weight, make_model, save

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)
VAD_SPECS = [
    TensorSpec("input", F32, ("batch", "seq")),
    TensorSpec("state", F32, (2, "batch", 128)),
    TensorSpec("sr", I64, ()),
]


# --- batch axes ---------------------------------------------------------------------------------


def _axes(layouts: tuple[InputLayout, ...]) -> dict[str, int | None]:
    return {layout.name: layout.axis for layout in layouts}


def test_the_shared_symbolic_dim_is_the_batch_axis() -> None:
    layouts = plan_inputs(VAD_SPECS)
    assert _axes(layouts) == {"input": 0, "state": 1, "sr": None}
    assert fixed_batch(layouts) is None  # the leading 2 of state is not a batch


@pytest.mark.parametrize(
    ("shapes", "axes", "fixed"),
    [
        ([("N", 3)], [0], None),
        ([(1, 3)], [0], 1),
        ([(4, 3), (4, 2)], [0, 0], 4),  # nothing shared: axis 0 everywhere
        ([()], [None], None),
        ([("B", "T"), ("B", "T")], [0, 0], None),  # a tie goes to the first dim
        ([("T", "B"), ("B",), ("B", 5)], [1, 0, 0], None),
        ([(1, 3, 8, 8), ("N", 2)], [0, 0], 1),
    ],
)
def test_batch_axes_and_fixed_batch(
    shapes: list[tuple[int | str, ...]], axes: list[int | None], fixed: int | None
) -> None:
    specs = [TensorSpec(f"x{i}", F32, shape) for i, shape in enumerate(shapes)]
    layouts = plan_inputs(specs)
    assert [layout.axis for layout in layouts] == axes
    assert fixed_batch(layouts) == fixed


def test_batch_axis_overrides_win_and_are_checked() -> None:
    specs = [TensorSpec("a", F32, ("N", 3)), TensorSpec("b", F32, (2, "M", 4))]
    assert _axes(plan_inputs(specs, (("b", 1),))) == {"a": 0, "b": 1}
    assert _axes(plan_inputs(specs, (("b", None),))) == {"a": 0, "b": None}
    with pytest.raises(InputDataError) as caught:
        plan_inputs(specs, (("c", 0),))
    assert str(caught.value) == (
        "--batch-axis names 'c', which is not an input of the model: its inputs are 'a', 'b'"
    )
    with pytest.raises(InputDataError, match=r"input 'a' has rank 2: give an axis below 2"):
        plan_inputs(specs, (("a", 2),))


def test_different_fixed_batches_are_refused() -> None:
    specs = [TensorSpec("a", F32, (4, 3)), TensorSpec("b", F32, (2, 3))]
    with pytest.raises(InputDataError, match=r"fix different batch sizes \('a' 4, 'b' 2\)"):
        fixed_batch(plan_inputs(specs))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("state=1", ("state", 1)), ("sr=none", ("sr", None)), ("a=b=0", ("a=b", 0))],
)
def test_parse_batch_axis(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_batch_axis(text) == expected


@pytest.mark.parametrize("text", ["state", "=1", "state=x", "state=-1"])
def test_parse_batch_axis_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--batch-axis"):
        parse_batch_axis(text)


# --- casts --------------------------------------------------------------------------------------


def _layout(dtype: type[np.generic]) -> InputLayout:
    return InputLayout("x", np.dtype(dtype), ("N", 2), 0)


def test_exact_casts_are_made() -> None:
    values = np.array([[0.5, -3.25], [1e30, 0.0]], np.float64)
    cast = cast_input(values, _layout(np.float32), "x.npy")
    assert cast.dtype == np.float32
    np.testing.assert_array_equal(cast, values.astype(np.float32))
    assert cast_input(np.array([16000.0]), _layout(np.int64), "f").dtype == np.int64
    assert cast_input(np.array([3], np.int64), _layout(np.int32), "f").dtype == np.int32
    assert cast_input(np.array([np.inf, np.nan]), _layout(np.float16), "f").dtype == np.float16


@pytest.mark.parametrize(
    ("values", "dtype", "message"),
    [
        (
            np.array([1.0, 1e39]),
            np.float32,
            "input 'x' of the model is float32 but x.npy holds float64 values beyond its range "
            "(e.g. 1e+39): save the array as float32",
        ),
        (
            np.array([16000.0, 0.5]),
            np.int64,
            "input 'x' of the model is int64 but x.npy holds float64 values that it cannot hold "
            "exactly (e.g. 0.5): save the array as int64",
        ),
        (
            np.array([300], np.int64),
            np.uint8,
            "input 'x' of the model is uint8 but x.npy holds int64 values that it cannot hold "
            "exactly (e.g. 300): save the array as uint8",
        ),
        (
            np.array([2**24 + 1], np.int64),
            np.float32,
            "input 'x' of the model is float32 but x.npy holds int64 values that it cannot hold "
            "exactly (e.g. 16777217): save the array as float32",
        ),
        (
            np.array([1.0]),
            np.bool_,
            "input 'x' of the model is bool but x.npy holds float64 values that are not "
            "booleans: save the array as bool",
        ),
    ],
)
def test_inexact_casts_are_refused(values: np.ndarray, dtype: type, message: str) -> None:
    with pytest.raises(InputDataError) as caught:
        cast_input(values, _layout(dtype), "x.npy")
    assert str(caught.value) == message


def _conv_inputs(folder: Path, samples: int, dtype: type = np.float32) -> Path:
    x = np.random.default_rng(3).normal(0, 1, (samples, 3, 8, 8))
    x[1, 2] = 0.0
    x[x < -1.5] = 0.0
    path = folder / f"x_{np.dtype(dtype).name}.npy"
    np.save(path, x.astype(dtype))
    return path


def test_float64_tensors_feed_a_float32_model_in_analyze(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = save(conv_relu_model(conv_weight()), tmp_path)
    with caplog.at_level(logging.WARNING):
        wide = analyze_model(model, SampleSource(tensors=_conv_inputs(tmp_path, 5, np.float64)))
    narrow = analyze_model(model, SampleSource(tensors=_conv_inputs(tmp_path, 5)))
    assert "one sample at a time" not in caplog.text
    assert wide.activations.tensors == narrow.activations.tensors
    assert wide.batch_size == 8 and wide.activations.samples == 5


def test_out_of_range_tensors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(conv_relu_model(conv_weight()), tmp_path)
    np.save(tmp_path / "big.npy", np.full((2, 3, 8, 8), 1e300))
    assert main(["analyze", str(model), "--inputs", str(tmp_path / "big.npy")]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"error: input 'x' of the model is float32 but {tmp_path / 'big.npy'} holds float64 "
        "values beyond its range (e.g. 1e+300): save the array as float32\n"
    )


# --- sample ranges ------------------------------------------------------------------------------


def test_sample_ranges_cover_every_sample_once(tmp_path: Path) -> None:
    path = _conv_inputs(tmp_path, 7)
    spec = [TensorSpec("x", F32, ("N", 3, 8, 8))]
    whole = SampleSource(tensors=path, batch_size=3)
    parts = [whole.sample_range(0, 4), whole.sample_range(4, 7)]
    seen = [i for part in parts for b in Feeder(part, spec).batches() for i in b.indexes]
    assert seen == list(range(7))
    assert Feeder(parts[1], spec).total == 3
    first = next(Feeder(parts[1], spec).batches())
    np.testing.assert_array_equal(first.arrays["x"], np.load(path)[4:7])
    with pytest.raises(InputDataError, match=r"holds 7 samples: sample range \[8, 9\) of 7"):
        Feeder(whole.sample_range(8, 9), spec)


# --- a voice-activity-style model ---------------------------------------------------------------


def vad_model() -> onnx.ModelProto:
    """input [batch, seq] -> MatMul(W1) -> Relu -> × sr/16000 -> out [batch, 8];
    state [2, batch, 128] -> Transpose -> Reshape [batch, 256] -> MatMul(W2) -> z [batch, 4];
    Tanh(state) -> new_state [2, batch, 128]. seq must be 16 at run time."""
    rng = np.random.default_rng(5)
    w1 = rng.normal(0, 1, (16, 8)).astype(np.float32)
    w2 = rng.normal(0, 1, (256, 4)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array([-1, 256], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(16000.0, np.float32), "base_rate"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["m1"], name="fc1"),
        helper.make_node("Relu", ["m1"], ["r1"], name="relu1"),
        helper.make_node("Cast", ["sr"], ["sr_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_float", "base_rate"], ["rate"]),
        helper.make_node("Mul", ["r1", "rate"], ["out"], name="scale"),
        helper.make_node("Transpose", ["state"], ["state_t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["state_t", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w2"], ["z"], name="fc2"),
        helper.make_node("Tanh", ["state"], ["new_state"]),
    ]
    return make_model(
        nodes,
        [
            helper.make_tensor_value_info("input", FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("state", FLOAT, [2, "batch", 128]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("out", FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("z", FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("new_state", FLOAT, [2, "batch", 128]),
        ],
        initializers,
    )


def vad_inputs(path: Path, samples: int = 5) -> dict[str, np.ndarray]:
    """Samples with zeros planted differently per sample (in input and in state)."""
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, (samples, 16)).astype(np.float32)
    state = rng.normal(0, 1, (2, samples, 128)).astype(np.float32)
    for sample in range(samples):
        x[sample, : sample + 1] = 0.0
        state[:, sample, : 10 * (sample + 1)] = 0.0
    arrays: dict[str, np.ndarray] = {"input": x, "state": state, "sr": np.array(16000, np.int64)}
    np.savez(path, input=arrays["input"], state=arrays["state"], sr=arrays["sr"])
    return arrays


def _zeros(values: np.ndarray) -> list[int]:
    return [int(np.count_nonzero(np.abs(values) <= e)) for e in DEFAULT_EPS]


def test_the_voice_activity_model_runs_through_analyze(tmp_path: Path) -> None:
    arrays = vad_inputs(tmp_path / "vad.npz")
    model = save(vad_model(), tmp_path)
    analysis = analyze_model(model, SampleSource(tensors=tmp_path / "vad.npz", batch_size=2))
    x, state = arrays["input"], arrays["state"]
    tensors = analysis.activations.tensors
    assert analysis.activations.samples == 5 and analysis.padded_samples == 0
    assert [layer.ifm for layer in analysis.layers] == ["input", "flat"]
    assert list(tensors["input"].zeros) == _zeros(x)
    assert list(tensors["flat"].zeros) == _zeros(state)
    relu = np.maximum(x @ vad_model_weight(), 0)
    assert tensors[analysis.layers[0].ofm].zeros[0] == int(np.count_nonzero(relu == 0))
    for sample, record in enumerate(analysis.activations.per_sample):  # state fed on its axis 1
        assert record.ifm_zeros[0] == _zeros(x[sample])[0] + _zeros(state[:, sample])[0]


def vad_model_weight() -> np.ndarray:
    return numpy_helper.to_array(vad_model().graph.initializer[0])


def test_the_voice_activity_model_runs_through_the_zoo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "zoo").mkdir()
    (tmp_path / "inputs").mkdir()
    save(vad_model(), tmp_path / "zoo", "vad.onnx")
    arrays = vad_inputs(tmp_path / "inputs" / "vad.npz", samples=3)
    report = tmp_path / "zoo.json"
    arguments = ["zoo", str(tmp_path / "zoo"), "--inputs-dir", str(tmp_path / "inputs")]
    assert main([*arguments, "--batch-size", "2", "--json", str(report)]) == 0
    (entry,) = json.loads(report.read_text())["models"]
    assert entry["status"] == "ok"
    assert (entry["figures"]["samples"], entry["figures"]["compute_layers"]) == (3, 2)
    assert "1 ok" in capsys.readouterr().out
    zeros = _zeros(arrays["input"])[0] + _zeros(arrays["state"])[0]
    elements = arrays["input"].size + arrays["state"].size
    weighted = entry["figures"]["ifm_zero_weighted"]["0.0"]
    assert weighted == pytest.approx(zeros / elements, abs=1e-6)


def test_analyze_feeds_the_voice_activity_model_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vad_inputs(tmp_path / "vad.npz", samples=3)
    model = save(vad_model(), tmp_path)
    arguments = ["analyze", str(model), "--inputs", str(tmp_path / "vad.npz"), "--json", "-"]
    assert main([*arguments, "--batch-axis", "state=1", "--batch-size", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["samples"], document["padded_samples"]) == (3, 0)


def test_a_batch_axis_for_one_model_of_the_zoo_leaves_the_others_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("zoo", "inputs"):
        (tmp_path / folder).mkdir()
    save(vad_model(), tmp_path / "zoo", "vad.onnx")
    save(conv_relu_model(conv_weight()), tmp_path / "zoo", "conv.onnx")
    vad_inputs(tmp_path / "inputs" / "vad.npz", samples=3)
    np.save(tmp_path / "inputs" / "conv.npy", np.ones((2, 3, 8, 8), np.float32))
    arguments = ["zoo", str(tmp_path / "zoo"), "--inputs-dir", str(tmp_path / "inputs")]
    assert main([*arguments, "--batch-axis", "state=1", "--json", str(tmp_path / "z.json")]) == 0
    models = json.loads((tmp_path / "z.json").read_text())["models"]
    assert [(m["model"], m["status"]) for m in models] == [("conv.onnx", "ok"), ("vad.onnx", "ok")]
    capsys.readouterr()


# --- a source of sample numbers (tune's splits on workers) ---------------------------------


def test_a_source_of_sample_numbers_feeds_them_in_order_in_whole_batches(tmp_path: Path) -> None:
    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    np.save(tmp_path / "x.npy", x)
    chosen = (5, 0, 1, 2, 6)
    source = SampleSource(tensors=tmp_path / "x.npy", batch_size=2, indices=chosen)
    feeder = Feeder(source, [TensorSpec("x", F32, ("batch", 3))])
    batches = list(feeder.batches())
    assert [batch.indexes for batch in batches] == [(5, 0), (1, 2), (6,)]
    np.testing.assert_array_equal(np.concatenate([b.arrays["x"] for b in batches]), x[list(chosen)])
    assert feeder.total == 5 and list(feeder.sample_keys()) == list(chosen)
    # a range of such a source counts positions in the list (a shard of a split)
    shard = Feeder(source.sample_range(2, 4), [TensorSpec("x", F32, ("batch", 3))])
    assert [batch.indexes for batch in shard.batches()] == [(1, 2)]


def test_a_source_of_image_numbers_feeds_those_files(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (2, 2), (10, 20, 30)).save(tmp_path / name)
    source = SampleSource(images=(tmp_path,), preset="darknet", batch_size=4, indices=(2, 0))
    feeder = Feeder(source, [TensorSpec("x", F32, ("batch", 3, 2, 2))])
    (batch,) = feeder.batches()
    assert [Path(name).name for name in batch.names] == ["c.png", "a.png"]


def test_sample_numbers_beyond_the_samples_are_one_clear_error(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((3, 3), np.float32))
    source = SampleSource(tensors=tmp_path / "x.npy", indices=(1, 3))
    with pytest.raises(InputDataError, match="sample numbers 1 to 3 asked for, of 3 samples"):
        Feeder(source, [TensorSpec("x", F32, ("batch", 3))])
