"""The ε map file, and ``analyze``/``accuracy --eps-map`` applying it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnx_prune.cli import main
from onnx_prune.epsmap import EpsMap, read_eps_map, write_eps_map
from onnx_prune.errors import InputDataError
from tests.builders import prunable_and_sensitive_model, save, save_tune_samples


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(prunable_and_sensitive_model(), tmp_path)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return save_tune_samples(tmp_path)


def _map(tmp_path: Path, eps: dict[str, float], name: str = "map.json") -> Path:
    path = tmp_path / name
    write_eps_map(EpsMap(model="model.onnx", metric="agreement >= 1", eps=eps), path)
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, " ".join((captured.err + captured.out).split())


def test_map_file_round_trips_with_the_schema_the_issue_names(tmp_path: Path) -> None:
    path = _map(tmp_path, {"r1": 0.3, "flat": 0.0})
    assert json.loads(path.read_text()) == {
        "schema_version": 1,
        "model": "model.onnx",
        "metric": "agreement >= 1",
        "eps": {"r1": 0.3, "flat": 0.0},
    }
    assert read_eps_map(path).eps == {"r1": 0.3, "flat": 0.0}
    assert [p.name for p in tmp_path.iterdir()] == ["map.json"], "no temporary file is left"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not JSON"),
        ('{"eps": {"r1": 0.3}}', "is not an ε map of schema_version 1"),
        ('{"schema_version": 1, "eps": {}}', 'has no "eps" object'),
        ('{"schema_version": 1, "eps": {"r1": -0.1}}', "ε of 'r1' is -0.1; it must be finite"),
        ('{"schema_version": 1, "eps": {"r1": "big"}}', "ε of 'r1' is 'big', not a number"),
    ],
)
@pytest.mark.unknown_documents
def test_bad_map_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputDataError, match=message):
        read_eps_map(path)


def test_analyze_reports_each_layers_savings_at_its_own_eps(
    tmp_path: Path, model: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eps_map = _map(tmp_path, {"r1": 0.5, "flat": 0.0})
    out = tmp_path / "analysis.json"
    status, text = _run(
        capsys, "analyze", str(model), "--inputs", str(inputs), "--eps", "0", "--json", str(out)
    )
    assert status == 0
    status, text = _run(
        capsys, "analyze", str(model), "--inputs", str(inputs), "--eps", "0",
        "--eps-map", str(eps_map), "--json", str(out),
    )  # fmt: skip
    assert status == 0
    assert "IFM load saved at each layer's own ε" in text
    document = json.loads(out.read_text())
    assert document["eps"] == [0.0, 0.5]
    layers = {layer["name"]: layer for layer in document["eps_map"]["layers"]}
    assert [layers[name]["eps"] for name in ("conv1", "conv2", "gemm")] == [None, 0.5, 0.0]
    # r1's channels 0 and 1 (16 values each, 4 bytes a value) are within 0.5 in every sample.
    assert layers["conv2"]["saved_bytes"] == {"channel": 128, "tile": 128, "element": 128}
    assert layers["conv1"]["saved_bytes"]["channel"] == 0
    by_name = {layer["name"]: layer for layer in document["layers"]}
    gemm_at_zero = by_name["gemm"]["saved_bytes"]["channel"][0]
    assert layers["gemm"]["saved_bytes"]["channel"] == gemm_at_zero
    total = document["eps_map"]["saved_bytes"]["channel"]
    assert total == 128 + gemm_at_zero


def test_accuracy_applies_the_map(
    tmp_path: Path, model: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "accuracy.json"
    for eps, agreement in (({"r1": 1.0}, 1.0), ({"r1": 0.5, "flat": 0.05}, 0.0)):
        path = _map(tmp_path, eps)
        status, text = _run(
            capsys, "accuracy", str(model), "--inputs", str(inputs), "--eps-map", str(path),
            "--json", str(out),
        )  # fmt: skip
        assert status == 0, text
        document = json.loads(out.read_text())
        (result,) = document["results"]
        assert result["eps"] is None
        assert result["agreement"] == agreement
        assert document["eps_map"]["eps"] == eps
    status, text = _run(
        capsys, "accuracy", str(model), "--inputs", str(inputs), "--eps-map", str(path),
        "--max-top1-drop", "0",
    )  # fmt: skip
    assert "The ε map's agreement drop (no labels) of 100.00 points is NOT within 0 points" in text


@pytest.mark.parametrize("command", ["analyze", "accuracy"])
def test_a_map_naming_tensors_the_model_lacks_is_an_error(
    tmp_path: Path, model: Path, inputs: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = _map(tmp_path, {"r1": 0.5, "c2": 0.1, "nowhere": 0.2})
    status, text = _run(
        capsys, command, str(model), "--inputs", str(inputs), "--eps-map", str(path)
    )
    assert status == 2
    assert (
        f"the ε map names 2 tensors that {model} has no compute layer reading: 'c2', "
        "'nowhere' (its IFMs are 'flat', 'r1', 'x', ...): make the map for this model with "
        "onnx-prune tune"
    ) in text
    assert "Traceback" not in text
