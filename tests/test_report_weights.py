"""The weights table (golden text) and JSON document."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from onnx_prune.cli import main
from onnx_prune.load import load_model
from onnx_prune.report.weights import format_weights
from onnx_prune.weights import count_zero_weights
from tests.builders import conv_relu_model, conv_weight, save
from tests.golden_util import assert_golden, render


def _model(tmp_path: Path) -> Path:
    bias = np.array([0, 1, 0, 2, 3, 0, 4, 5], np.float32)
    return save(conv_relu_model(conv_weight(), bias), tmp_path)


def test_weights_table_golden(tmp_path: Path) -> None:
    report = count_zero_weights(load_model(_model(tmp_path)), eps=(0.0, 1e-3))
    report = dataclasses.replace(report, model="model.onnx")
    assert_golden(render(format_weights(report)), "weights_table.txt")


def test_random_weights_are_labelled(tmp_path: Path) -> None:
    report = count_zero_weights(load_model(_model(tmp_path)))
    text = render(format_weights(dataclasses.replace(report, random_weights=True)))
    assert text.startswith("RANDOM WEIGHTS")


def test_weights_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    assert main(["weights", str(_model(tmp_path)), "--eps", "0,1e-3", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["schema_version"] == 1
    assert document["eps"] == [0.0, 0.001]
    (layer,) = document["layers"]
    assert layer["name"] == "conv"
    assert layer["op_type"] == "Conv"
    assert layer["weight"] == {
        "tensor": "w",
        "shape": [8, 3, 3, 3],
        "dtype": "float32",
        "elements": 216,
        "zeros": [66, 73],
        "zero_filters": 2,
        "filters": 8,
        "zero_input_channels": 0,
    }
    assert layer["bias"]["zeros"] == [3, 3]
    assert layer["bias"]["zero_filters"] is None
    assert document["totals"]["zeros"] == [66, 73]
    assert document["totals"]["by_op_type"]["Conv"]["zero_filters"] == 2
    assert document["unresolved"] == []
    assert "Weight sparsity" in capsys.readouterr().out


def test_json_to_stdout_prints_only_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", str(_model(tmp_path)), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"][0]["weight"]["zeros"] == [66]
