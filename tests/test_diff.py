"""``onnx-prune diff``: two analyses compared layer by layer, with counts known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnx_prune.cli import main
from onnx_prune.diff import diff_documents
from tests.builders import FLOAT, conv_relu_model, conv_weight, make_model, save


def _inputs(folder: Path) -> tuple[Path, np.ndarray]:
    x = np.random.default_rng(1).normal(0.0, 1.0, (4, 3, 8, 8)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return folder / "x.npy", x


def _analyze(model: Path, inputs: Path, out: Path, *extra: str) -> Path:
    assert main(["analyze", str(model), "--inputs", str(inputs), "--json", str(out), *extra]) == 0
    return out


def _two_convs(first: np.ndarray) -> onnx.ModelProto:
    second = np.random.default_rng(2).normal(0.0, 0.5, (4, 8, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")],
    )


def test_planted_zero_filter_moves_exactly_the_ofm_of_that_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Model B is model A with filter 0 zeroed: its OFM gains exactly the values that channel 0
    of A's OFM had above 0, and nothing else moves."""
    inputs, x = _inputs(tmp_path)
    weight = conv_weight()
    planted = weight.copy()
    planted[0] = 0.0
    a = save(conv_relu_model(weight), tmp_path, "a.onnx")
    b = save(conv_relu_model(planted), tmp_path, "b.onnx")
    old = _analyze(a, inputs, tmp_path / "a.json")
    new = _analyze(b, inputs, tmp_path / "b.json")
    outputs = ReferenceEvaluator(conv_relu_model(weight)).run(None, {"x": x})
    assert isinstance(outputs, list)
    y = np.asarray(outputs[0])
    gained = int(np.count_nonzero(y[:, 0] > 0))
    assert gained > 0
    diff = diff_documents(old, new)
    [model] = diff.models
    changed = {change.layer for change in model.changes}
    assert changed == {"conv"}
    at_zero = next(change for change in model.changes if change.eps == 0.0)
    assert at_zero.moved == ("ofm_zero",)
    assert at_zero.delta("ofm_zero") == pytest.approx(gained / y.size, abs=1e-12)
    assert at_zero.delta("ifm_zero") == 0.0
    capsys.readouterr()
    assert main(["diff", str(old), str(new)]) == 1
    text = capsys.readouterr().out
    assert "conv " in text and "CHANGED" in text
    assert main(["diff", str(old), str(old)]) == 0
    assert "SAME: no figure moved beyond the tolerance" in capsys.readouterr().out
    assert main(["diff", str(old), str(new), "--tolerance", "1"]) == 0


def test_added_and_removed_layers_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, _ = _inputs(tmp_path)
    one = _analyze(
        save(conv_relu_model(conv_weight()), tmp_path, "one.onnx"), inputs, tmp_path / "one.json"
    )
    first = np.random.default_rng(3).normal(0.0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    two = _analyze(save(_two_convs(first), tmp_path, "two.onnx"), inputs, tmp_path / "two.json")
    markdown = tmp_path / "diff.md"
    capsys.readouterr()
    assert main(["diff", str(one), str(two), "--markdown", str(markdown)]) == 1
    text = markdown.read_text()
    assert "one.onnx → two.onnx: layer added: conv1" in text
    assert "one.onnx → two.onnx: layer added: conv2" in text
    assert "one.onnx → two.onnx: layer removed: conv" in text
    assert "**CHANGED" in text


def test_zoo_documents_are_compared_per_model(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    save(conv_relu_model(conv_weight()), zoo, "a.onnx")
    save(conv_relu_model(conv_weight()), zoo, "b.onnx")
    x = np.random.default_rng(1).normal(0.0, 1.0, (4, 3, 8, 8)).astype(np.float32)
    for name in ("a", "b"):
        np.save(inputs / f"{name}.npy", x)
    old = tmp_path / "old.json"
    assert main(["zoo", str(zoo), "--inputs-dir", str(inputs), "--json", str(old)]) == 0
    planted = conv_weight()
    planted[0] = 0.0
    save(conv_relu_model(planted), zoo, "b.onnx")
    new = tmp_path / "new.json"
    assert main(["zoo", str(zoo), "--inputs-dir", str(inputs), "--json", str(new)]) == 0
    diff = diff_documents(old, new)
    assert [(m.model, bool(m.changes)) for m in diff.models] == [
        ("a.onnx", False),
        ("b.onnx", True),
    ]
    assert main(["diff", str(old), str(new)]) == 1


def test_fp32_and_its_int8_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quantize_static (QDQ) of a two-layer model: diff names the layers quantization changed;
    conv1's IFM gains exactly the input values that quantize to the zero point."""
    from onnxruntime.quantization import (  # noqa: TID251 (tests may use onnxruntime's tools)
        CalibrationDataReader,
        QuantFormat,
        quantize_static,
    )

    inputs, x = _inputs(tmp_path)
    first = np.random.default_rng(3).normal(0.0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    fp32 = save(_two_convs(first), tmp_path, "fp32.onnx")
    int8 = tmp_path / "int8.onnx"

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.samples = iter([{"x": x[i : i + 1]} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.samples, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ)
    old = _analyze(fp32, inputs, tmp_path / "fp32.json")
    new = _analyze(int8, inputs, tmp_path / "int8.json")
    capsys.readouterr()
    assert main(["diff", str(old), str(new), "--tolerance", "0"]) == 1
    text = capsys.readouterr().out
    assert "conv1" in text
    quantized = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(int8)).graph.initializer}
    scale, zero_point = float(quantized["x_scale"]), int(quantized["x_zero_point"])
    low, high = (
        np.iinfo(quantized["x_zero_point"].dtype).min,
        np.iinfo(quantized["x_zero_point"].dtype).max,
    )
    on_zero = np.clip(np.rint(x / np.float32(scale)) + zero_point, low, high) == zero_point
    [model] = diff_documents(old, new, tolerance=0.0).models
    conv1 = next(c for c in model.changes if c.layer == "conv1" and c.eps == 0.0)
    assert conv1.delta("ifm_zero") == pytest.approx(np.count_nonzero(on_zero) / x.size, abs=1e-12)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "cannot read"),
        (
            '{"schema_version": 1, "model": "m", "eps": [0], "layers": []}',
            "is not an analyze or zoo document (weights documents have no feature maps)",
        ),
    ],
)
@pytest.mark.unknown_documents
def test_bad_documents_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["diff", str(bad), str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1
    assert main(["diff", str(tmp_path / "none.json"), str(bad)]) == 2
    assert "none.json: no such file" in capsys.readouterr().err


def test_an_analyze_and_a_zoo_document_are_not_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, _ = _inputs(tmp_path)
    analysis = _analyze(save(conv_relu_model(conv_weight()), tmp_path), inputs, tmp_path / "a.json")
    zoo = tmp_path / "zoo.json"
    zoo.write_text(json.dumps({"command": "zoo", "eps": [0.0], "models": []}))
    assert main(["diff", str(analysis), str(zoo)]) == 2
    assert "compare two analyze --json documents or two zoo --json" in " ".join(
        capsys.readouterr().err.split()
    )
