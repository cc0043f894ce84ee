"""The ε-pruning graph pass: structure at each opset, and onnxruntime against numpy."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_prune import runtime
from onnx_prune.constants import ConstantResolver
from onnx_prune.errors import UnsupportedModelError
from onnx_prune.layers import find_compute_layers
from onnx_prune.load import LoadedModel, load_model
from onnx_prune.pruning import (
    EPS_INPUT,
    UNPRUNED,
    Granularity,
    PrunedModel,
    PrunedTensor,
    add_pruning,
    count_pruned,
)
from tests.builders import FLOAT, make_model, save

GRANULARITIES: tuple[Granularity, ...] = ("channel", "element")
OPSETS = (9, 11, 13, 18)
EPS = (0.0, 0.05, 0.3)


# --- numpy reference ----------------------------------------------------------------------------


def prune_numpy(values: np.ndarray, eps: float, granularity: Granularity) -> np.ndarray:
    """The pruning the pass should do: |x| <= ε zeroed by (n, c) plane or by value; NaN kept."""
    within = np.abs(values) <= np.float32(eps)
    if granularity == "channel":
        planes = within.reshape(values.shape[0], values.shape[1], -1)
        within = np.broadcast_to(planes.all(axis=2, keepdims=True), planes.shape)
        within = within.reshape(values.shape)
    return np.where(within, np.float32(0), values)


def pruned_count_numpy(values: np.ndarray, eps: float, granularity: Granularity) -> int:
    within = np.abs(values) <= np.float32(eps)
    if granularity == "element":
        return int(within.sum())
    planes = within.reshape(values.shape[0], values.shape[1], -1)
    return int(planes.all(axis=2).sum()) * int(planes.shape[2])


# --- models -------------------------------------------------------------------------------------


def _init(name: str, values: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def network(opset: int = 13, *, ir_version: int | None = None) -> onnx.ModelProto:
    """x -> conv1 -> relu -> r1 -> {conv2, conv3, side Relu}; conv2 + conv3 -> GAP -> Gemm -> y.

    conv1's filter 2 is zero with bias -1 (a zero channel after the ReLU); filter 5 is scaled by
    0.05 (a channel within ε = 0.3, not within 0.05). r1 feeds two compute
    layers and one other node, whose output must stay unpruned.
    """
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.5, size=(8, 3, 3, 3)).astype(np.float32)
    w1[2] = 0
    w1[5] *= 0.05
    b1 = rng.normal(0, 0.1, size=8).astype(np.float32)
    b1[2], b1[5] = -1.0, 0.0
    initializers = [
        _init("w1", w1),
        _init("b1", b1),
        _init("w2", rng.normal(0, 0.5, size=(4, 8, 1, 1))),
        _init("w3", rng.normal(0, 0.5, size=(4, 8, 1, 1))),
        _init("w4", rng.normal(0, 0.5, size=(4, 5))),
        _init("b4", rng.normal(0, 0.1, size=5)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Conv", ["r1", "w3"], ["c3"], name="conv3"),
        helper.make_node("Relu", ["r1"], ["side"], name="side"),
        helper.make_node("Add", ["c2", "c3"], ["s"], name="add"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], name="gemm"),
    ]
    inputs = [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 6, 6])]
    if ir_version is not None and ir_version < 4:
        inputs += [
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers
        ]
    outputs = [
        helper.make_tensor_value_info("y", FLOAT, ["N", 5]),
        helper.make_tensor_value_info("side", FLOAT, ["N", 8, 6, 6]),
    ]
    return make_model(nodes, inputs, outputs, initializers, opset=opset, ir_version=ir_version)


def samples(count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(count, 3, 6, 6)).astype(np.float32)


def loaded_model(model: onnx.ModelProto, folder: Path) -> LoadedModel:
    return load_model(save(model, folder))


def prune(loaded: LoadedModel, granularity: Granularity) -> PrunedModel:
    scan = find_compute_layers(loaded.model, ConstantResolver(loaded))
    return add_pruning(loaded.model, scan.layers, granularity=granularity, model_inputs=True)


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy that also outputs ``names`` (so tests can look inside)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {value.name for value in [*copy.graph.output, *copy.graph.input]}
    for name in names:
        if name not in present:
            copy.graph.output.append(helper.make_tensor_value_info(name, FLOAT, None))
    return copy


class Runner:
    """Runs a (pruned) model in onnxruntime through onnx_prune.runtime.

    Graph optimizations are off, so that the original and the pruned model run the same kernels
    (fusing Conv with Relu, which the pruning nodes prevent, changes the last bit).
    """

    def __init__(self, loaded: LoadedModel, model: onnx.ModelProto | None = None) -> None:
        self._context = runtime.model_file(loaded, model)
        options = runtime.SessionOptions(optimize=False)
        self.session = runtime.open_session(self._context.__enter__(), options)

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, self.session.run(list(names), feeds), strict=True))

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def eps_feed(pruned: PrunedModel, eps: float | dict[str, float]) -> dict[str, np.ndarray]:
    return {pruned.eps_input: pruned.eps_feed(eps)}


# --- against numpy ------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_pruned_tensors_and_counts_match_numpy(
    tmp_path: Path, opset: int, granularity: Granularity
) -> None:
    loaded = loaded_model(network(opset), tmp_path)
    pruned = prune(loaded, granularity)
    assert [t.tensor for t in pruned.tensors] == ["x", "r1", "f"]
    inside = [name for t in pruned.tensors for name in (t.tensor, t.pruned)]
    counted = [name for t in pruned.tensors for name in (t.count_output, t.shape_output)]
    runner = Runner(loaded, with_outputs(pruned.model, inside))
    x = samples()
    for eps in EPS:
        fetched = [name for name in [*inside, *counted] if name != "x"]
        got = {"x": x, **runner.run(fetched, {"x": x, **eps_feed(pruned, eps)})}
        for tensor in pruned.tensors:
            raw = got[tensor.tensor]
            np.testing.assert_array_equal(got[tensor.pruned], prune_numpy(raw, eps, granularity))
            count = count_pruned(
                tensor, granularity, got[tensor.count_output], got[tensor.shape_output]
            )
            assert count.pruned == pruned_count_numpy(raw, eps, granularity)
            assert count.elements == raw.size
        r1, r1_pruned = got["r1"], got[pruned.tensors[1].pruned]
        assert (r1[:, 2] == 0).all(), "the planted zero channel"
        assert (r1[:, 5] != 0).any() and (r1_pruned[:, 5] == 0).all() == (eps >= 0.3)
    runner.close()


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_negative_eps_is_the_unpruned_model_and_eps_zero_channels_change_nothing(
    tmp_path: Path, granularity: Granularity
) -> None:
    loaded = loaded_model(network(), tmp_path)
    pruned = prune(loaded, granularity)
    original = Runner(loaded)
    pruned_runner = Runner(loaded, pruned.model)
    x = samples(6)
    expected = original.run(["y", "side"], {"x": x})
    unpruned = pruned_runner.run(["y", "side"], {"x": x, **eps_feed(pruned, -1.0)})
    np.testing.assert_array_equal(unpruned["y"], expected["y"])
    if granularity == "channel":
        at_zero = pruned_runner.run(["y"], {"x": x, **eps_feed(pruned, 0.0)})
        np.testing.assert_array_equal(at_zero["y"], expected["y"])
    original.close()
    pruned_runner.close()


def test_only_compute_layers_read_the_pruned_tensor(tmp_path: Path) -> None:
    loaded = loaded_model(network(), tmp_path)
    pruned = prune(loaded, "channel")
    nodes = {node.name: node for node in pruned.model.graph.node}
    r1 = next(t for t in pruned.tensors if t.tensor == "r1")
    assert r1.layers == ("conv2", "conv3")
    assert nodes["conv2"].input[0] == nodes["conv3"].input[0] == r1.pruned
    assert nodes["side"].input[0] == "r1"
    assert nodes["conv1"].input[0] != "x"
    runner = Runner(loaded, pruned.model)
    original = Runner(loaded)
    x = samples()
    side = runner.run(["side"], {"x": x, **eps_feed(pruned, 0.3)})["side"]
    np.testing.assert_array_equal(side, original.run(["side"], {"x": x})["side"])
    runner.close()
    original.close()


# --- structure ----------------------------------------------------------------------------------


def _ops(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        found.setdefault(node.op_type, []).append(node)
    return found


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_nodes_are_valid_at_the_models_own_opset(opset: int, granularity: Granularity) -> None:
    model = network(opset)
    before = model.SerializeToString()
    loaded = LoadedModel(path=Path("memory.onnx"), model=model)
    pruned = prune(loaded, granularity)
    assert model.SerializeToString() == before, "the input model was changed"
    onnx.checker.check_model(pruned.model, full_check=True)
    assert [(o.domain, o.version) for o in pruned.model.opset_import] == [("", opset)]
    ops = _ops(pruned.model)
    if granularity == "element":
        assert ("LessOrEqual" in ops) == (opset >= 12)
        assert ("IsNaN" in ops) == (opset < 12)
        reductions = {"ReduceSum": 13}
    else:
        assert "LessOrEqual" not in ops
        reductions = {"ReduceMax": 18, "ReduceL1": 18}
    for op_type, axes_input_from in reductions.items():
        for node in ops[op_type]:
            has_attribute = any(attribute.name == "axes" for attribute in node.attribute)
            assert (len(node.input) == 2) == (opset >= axes_input_from)
            assert has_attribute != (opset >= axes_input_from)


def test_eps_is_a_float_vector_input_and_names_are_deterministic() -> None:
    model = network()
    loaded = LoadedModel(path=Path("memory.onnx"), model=model)
    first, second = prune(loaded, "channel"), prune(loaded, "channel")
    assert first.model.SerializeToString() == second.model.SerializeToString()
    assert first.eps_input == EPS_INPUT
    (eps,) = [value for value in first.model.graph.input if value.name == EPS_INPUT]
    assert eps.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [dim.dim_value for dim in eps.type.tensor_type.shape.dim] == [3]
    assert [tensor.eps_index for tensor in first.tensors] == [0, 1, 2]


def test_eps_feed_from_one_eps_or_a_map() -> None:
    pruned = prune(LoadedModel(path=Path("memory.onnx"), model=network()), "channel")
    np.testing.assert_array_equal(pruned.eps_feed(0.25), np.full(3, 0.25, np.float32))
    feed = pruned.eps_feed({"r1": 0.5, "f": 0.0})
    np.testing.assert_array_equal(feed, np.array([UNPRUNED, 0.5, 0.0], np.float32))
    assert feed.dtype == np.float32


@pytest.mark.parametrize("opset", (11, 13))
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_per_tensor_eps_vector_matches_numpy(
    tmp_path: Path, opset: int, granularity: Granularity
) -> None:
    """Each pruned tensor reads its own entry of the ε vector: the whole chain equals numpy."""
    loaded = loaded_model(network(opset), tmp_path)
    pruned = prune(loaded, granularity)
    inside = [name for t in pruned.tensors for name in (t.tensor, t.pruned)]
    runner = Runner(loaded, with_outputs(pruned.model, inside))
    x = samples(5)
    own = {"x": 0.05, "r1": 0.3, "f": 0.0}
    fetched = [name for name in inside if name != "x"]
    got = {"x": x, **runner.run(fetched, {"x": x, **eps_feed(pruned, own)})}
    for tensor in pruned.tensors:
        expected = prune_numpy(got[tensor.tensor], own[tensor.tensor], granularity)
        np.testing.assert_array_equal(got[tensor.pruned], expected)
    r1 = got[pruned.tensors[1].pruned]
    assert (r1[:, 5] == 0).all(), "the channel within 0.3 is pruned at r1's own ε"
    reference = Runner(loaded, with_outputs(loaded.model, ["r1"]))
    x_pruned = prune_numpy(x, 0.05, granularity)
    r1_numpy = prune_numpy(reference.run(["r1"], {"x": x_pruned})["r1"], 0.3, granularity)
    np.testing.assert_array_equal(r1, r1_numpy)
    runner.close()
    reference.close()


def test_eps_name_already_taken_gets_a_suffix() -> None:
    model = network()
    model.graph.node[1].output[0] = EPS_INPUT
    for node in model.graph.node[2:5]:
        node.input[0] = EPS_INPUT
    pruned = prune(LoadedModel(path=Path("memory.onnx"), model=model), "channel")
    assert pruned.eps_input == f"{EPS_INPUT}_2"
    onnx.checker.check_model(pruned.model)


def test_ir3_model_lists_added_initializers_as_inputs(tmp_path: Path) -> None:
    model = network(9, ir_version=3)
    loaded = loaded_model(model, tmp_path)
    pruned = prune(loaded, "element")
    inputs = {value.name for value in pruned.model.graph.input}
    assert {tensor.name for tensor in pruned.model.graph.initializer} <= inputs
    assert pruned.model.ir_version == 3
    runner = Runner(loaded, pruned.model)
    original = Runner(loaded)
    x = samples()
    unpruned = runner.run(["y"], {"x": x, **eps_feed(pruned, -1.0)})["y"]
    np.testing.assert_array_equal(unpruned, original.run(["y"], {"x": x})["y"])
    runner.close()
    original.close()


def test_opset_below_9_is_refused() -> None:
    model = network(8)
    with pytest.raises(UnsupportedModelError) as caught:
        prune(LoadedModel(path=Path("memory.onnx"), model=model), "channel")
    assert str(caught.value) == (
        "the model uses opset 8; ε-pruning needs opset 9 or later (Where, IsNaN): convert it "
        "with onnx.version_converter.convert_version(model, 9) first"
    )


# --- special inputs -----------------------------------------------------------------------------


def _single_layer(
    node: onnx.NodeProto, x_shape: list[str | int | None], w: np.ndarray, opset: int
) -> onnx.ModelProto:
    return make_model(
        [node],
        [helper.make_tensor_value_info("x", FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", FLOAT, [None] * len(x_shape))],
        [_init("w", w)],
        opset=opset,
    )


@pytest.mark.parametrize("opset", (11, 13, 18))
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_nan_is_never_within_eps(tmp_path: Path, opset: int, granularity: Granularity) -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    model = _single_layer(conv, ["N", 3, 2, 2], np.ones((2, 3, 1, 1), np.float32), opset)
    loaded = loaded_model(model, tmp_path)
    pruned = prune(loaded, granularity)
    (tensor,) = pruned.tensors
    x = np.full((2, 3, 2, 2), 0.01, np.float32)
    x[0, 0, 0, 0] = np.nan
    x[1, 0, 1, 1] = np.nan  # onnxruntime's ReduceMax drops a NaN that is not first
    x[:, 2] = 5.0
    runner = Runner(loaded, with_outputs(pruned.model, [tensor.pruned]))
    got = runner.run([tensor.pruned], {"x": x, **eps_feed(pruned, 0.1)})[tensor.pruned]
    np.testing.assert_array_equal(got, prune_numpy(x, 0.1, granularity))
    assert np.isnan(got[0, 0, 0, 0]) and np.isnan(got[1, 0, 1, 1])
    assert (got[:, 1] == 0).all()
    runner.close()


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_gemm_rank_2_input_prunes_each_value(tmp_path: Path, granularity: Granularity) -> None:
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"], name="gemm")
    w = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    loaded = loaded_model(_single_layer(gemm, ["N", 6], w, 13), tmp_path)
    pruned = prune(loaded, granularity)
    (tensor,) = pruned.tensors
    x = np.random.default_rng(2).uniform(-0.5, 0.5, size=(5, 6)).astype(np.float32)
    runner = Runner(loaded, pruned.model)
    original = Runner(loaded)
    names = ["y", tensor.count_output, tensor.shape_output]
    got = runner.run(names, {"x": x, **eps_feed(pruned, 0.2)})
    expected = original.run(["y"], {"x": prune_numpy(x, 0.2, "element")})["y"]
    np.testing.assert_array_equal(got["y"], expected)
    count = count_pruned(tensor, granularity, got[names[1]], got[names[2]])
    assert count.pruned == int((np.abs(x) <= np.float32(0.2)).sum())
    runner.close()
    original.close()


@pytest.mark.parametrize("opset", (11, 18))
def test_unknown_rank_takes_the_reshaping_path(tmp_path: Path, opset: int) -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    model = make_model(
        [conv],
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 2, 4, 4])],
        [_init("w", np.ones((2, 3, 1, 1), np.float32))],
        opset=opset,
    )
    model.graph.input[0].type.tensor_type.ClearField("shape")  # rank unknown
    model.graph.output[0].type.tensor_type.ClearField("shape")
    loaded = loaded_model(model, tmp_path)
    pruned = prune(loaded, "channel")
    assert "ReduceMax" in _ops(pruned.model) and "GlobalMaxPool" not in _ops(pruned.model)
    (tensor,) = pruned.tensors
    x = samples(3) * 0.2
    x[1, 2, 0, 0] = np.nan
    x[0, 1] *= 0.1
    runner = Runner(loaded, with_outputs(pruned.model, [tensor.pruned]))
    names = [tensor.pruned, tensor.count_output, tensor.shape_output]
    got = runner.run(names, {"x": x, **eps_feed(pruned, 0.05)})
    np.testing.assert_array_equal(got[tensor.pruned], prune_numpy(x, 0.05, "channel"))
    count = count_pruned(tensor, "channel", got[names[1]], got[names[2]])
    assert count.pruned == pruned_count_numpy(x, 0.05, "channel") == 36
    runner.close()


def test_matmul_with_the_weight_first_prunes_its_second_input(tmp_path: Path) -> None:
    matmul = helper.make_node("MatMul", ["w", "x"], ["y"], name="matmul")
    w = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    loaded = loaded_model(_single_layer(matmul, [6, "N"], w, 13), tmp_path)
    pruned = prune(loaded, "element")
    (node,) = [n for n in pruned.model.graph.node if n.op_type == "MatMul"]
    assert node.input[0] == "w"
    assert node.input[1] == pruned.tensors[0].pruned
    x = np.random.default_rng(2).uniform(-0.5, 0.5, size=(6, 4)).astype(np.float32)
    runner = Runner(loaded, pruned.model)
    got = runner.run(["y"], {"x": x, **eps_feed(pruned, 0.2)})["y"]
    np.testing.assert_allclose(got, w @ prune_numpy(x, 0.2, "element"), rtol=1e-6)
    runner.close()


def test_quantized_layers_are_not_pruned() -> None:
    initializers = [
        numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "zero"),
        numpy_helper.from_array(np.full((4, 3), 130, np.uint8), "w"),
    ]
    node = helper.make_node(
        "QLinearMatMul",
        ["x", "scale", "zero", "w", "scale", "zero", "scale", "zero"],
        ["y"],
        name="qmatmul",
    )
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["N", 3])],
        initializers,
    )
    pruned = prune(LoadedModel(path=Path("memory.onnx"), model=model), "channel")
    assert pruned.tensors == ()
    (skipped,) = pruned.not_pruned
    assert skipped.tensor == "x"
    assert skipped.reason.startswith("quantized (integer) feature map")


def test_counts_are_exact_beyond_float32_precision() -> None:
    tensor = PrunedTensor("t", "t/pruned", ("conv",), "t/count", "t/shape", 0)
    flags = np.ones((64, 1024, 1), np.float32)
    flags[0, 0, 0] = 0
    shape = np.array([64, 1024, 512, 512], np.int64)
    count = count_pruned(tensor, "channel", flags, shape)
    assert count.pruned == (64 * 1024 - 1) * 512 * 512
    assert count.elements == 64 * 1024 * 512 * 512
    values = np.full((64, 1024), 512 * 512, np.float32)
    assert count_pruned(tensor, "element", values, shape, samples=2).pruned == 2 * 1024 * 512 * 512


# --- onnx's own zoo graphs (IR 3, opset 9, weights computed by ConstantOfShape) -----------------

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")


@pytest.mark.parametrize("name", ["light_squeezenet", "light_resnet50", "light_inception_v1"])
def test_onnx_light_models_run_pruned(tmp_path: Path, name: str) -> None:
    paths = glob.glob(os.path.join(LIGHT, f"{name}.onnx"))
    if not paths:
        pytest.skip(f"{name} is not in this onnx wheel")
    loaded = load_model(paths[0])
    pruned = prune(loaded, "channel")
    assert len(pruned.tensors) > 0 and not pruned.not_pruned
    (spec,) = [s for s in Runner(loaded).session.inputs() if s.name not in _initializers(loaded)]
    x = np.random.default_rng(0).uniform(-1, 1, size=(1, 3, 224, 224)).astype(np.float32)
    output = loaded.model.graph.output[0].name
    original = Runner(loaded).run([output], {spec.name: x})[output]
    runner = Runner(loaded, pruned.model)
    unpruned = runner.run([output], {spec.name: x, **eps_feed(pruned, -1.0)})[output]
    np.testing.assert_array_equal(unpruned, original)
    at_zero = runner.run([output], {spec.name: x, **eps_feed(pruned, 0.0)})[output]
    np.testing.assert_array_equal(at_zero, original)
    runner.close()


def _initializers(loaded: LoadedModel) -> set[str]:
    return {tensor.name for tensor in loaded.model.graph.initializer}
