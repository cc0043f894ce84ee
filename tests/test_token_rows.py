"""A channel of a rank-3 MatMul input [N, tokens, features] is one token row (DESIGN §2, README)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import helper, numpy_helper

from onnx_prune.analysis import analyze_model
from onnx_prune.feeds import SampleSource
from tests.builders import FLOAT, make_model, save


def test_a_channel_of_a_token_sequence_is_one_token_row(tmp_path: Path) -> None:
    weight = np.random.default_rng(3).normal(0, 1, (6, 5)).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        [helper.make_tensor_value_info("x", FLOAT, ["N", 4, 6])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4, 5])],
        [numpy_helper.from_array(weight, "w")],
    )
    x = np.random.default_rng(4).normal(0, 1, (3, 4, 6)).astype(np.float32)
    x[0, 1] = 0.0  # token 1 of sample 0: a whole zero row
    x[2, 3] = 0.05  # token 3 of sample 2: within ε = 0.1
    x[1, 0, :5] = 0.0  # five of six features: not a zero row
    np.save(tmp_path / "x.npy", x)
    analysis = analyze_model(save(model, tmp_path), SampleSource(tensors=tmp_path / "x.npy"))
    stats = analysis.activations.tensors["x"]
    rows = np.abs(x).max(axis=2)  # per (sample, token)
    assert stats.channels == 3 * 4 and stats.plane == 6
    eps = analysis.activations.eps
    assert list(stats.zero_channels) == [int(np.count_nonzero(rows <= e)) for e in eps]
    assert list(stats.saved_elements) == [6 * int(np.count_nonzero(rows <= e)) for e in eps]
    assert stats.zero_channels[:2] == (1, 2)
