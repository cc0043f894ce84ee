"""Initializer bytes located in the file: the same values as protobuf's copy, or no span."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_prune.load import INLINE_MAP_BYTES, load_model, tensor_to_array
from onnx_prune.protowire import raw_data_spans
from onnx_prune.weights import count_zero_weights
from tests.builders import FLOAT, conv_relu_model, conv_weight, make_model, save


def test_spans_point_at_the_raw_data(tmp_path: Path) -> None:
    bias = np.arange(8, dtype=np.float32)
    path = save(conv_relu_model(conv_weight(), bias), tmp_path)
    spans = raw_data_spans(path)
    assert set(spans) == {"w", "b"}
    data = path.read_bytes()
    for name, expected in (("w", conv_weight()), ("b", bias)):
        offset, length = spans[name]
        assert data[offset : offset + length] == expected.tobytes()


def test_not_an_onnx_file_gives_no_spans(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff" * 64)
    assert raw_data_spans(path) == {}


def test_large_model_weights_are_memory_mapped_and_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1100, 4000)).astype(np.float32)  # 17.6 MB
    weight[rng.random(weight.shape) < 0.25] = 0
    weight[7] = 0
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", FLOAT, [1, 1100])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 4000])],
        [numpy_helper.from_array(weight, "w")],
    )
    path = save(model, tmp_path)
    assert path.stat().st_size > INLINE_MAP_BYTES
    loaded = load_model(path)
    assert "w" in loaded.inline
    values = tensor_to_array(loaded, loaded.model.graph.initializer[0])
    assert isinstance(_buffer_owner(values), mmap.mmap)  # a view of the file, not a copy
    np.testing.assert_array_equal(values, weight)
    report = count_zero_weights(loaded)
    assert report.layers[0].weight.zeros == (int(np.count_nonzero(weight == 0)),)
    assert report.layers[0].weight.zero_input_channels == 1  # row 7 of MatMul(x, W) is input 7
    assert onnx.load(str(path)).SerializeToString() == model.SerializeToString()


def _buffer_owner(array: np.ndarray) -> Any:
    owner: Any = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    return owner.obj if isinstance(owner, memoryview) else owner
