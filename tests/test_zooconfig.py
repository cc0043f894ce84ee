"""Per-model zoo settings (onnx-prune.toml): models of different input sizes, non-image models
and known failures run from one file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from onnx_prune.cli import main
from onnx_prune.zooconfig import ZooConfigError, read_zoo_config
from tests.builders import FLOAT, make_model, save


def _flatten_model(height: int, width: int, seed: int) -> onnx.ModelProto:
    """x[N,3,H,W] (H, W free) -> Conv -> Relu -> Flatten -> Gemm: runs only at H×W."""
    rng = np.random.default_rng(seed)
    conv = rng.normal(0.0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    conv[1] = 0.0
    dense = rng.normal(0.0, 0.1, (4 * height * width, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "d"], ["y"], name="dense"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 5])],
        [numpy_helper.from_array(conv, "w"), numpy_helper.from_array(dense, "d")],
    )


def _vector_model() -> onnx.ModelProto:
    """v[N,10] -> Gemm -> Relu: not an image model."""
    weight = np.random.default_rng(4).normal(0.0, 0.5, (10, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["v", "w"], ["g"], name="gemm"),
        helper.make_node("Relu", ["g"], ["y"], name="relu"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("v", FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 6])],
        [numpy_helper.from_array(weight, "w")],
    )


def _column_model() -> onnx.ModelProto:
    """v[10,N] (samples on axis 1) -> Transpose -> Gemm -> Relu."""
    weight = np.random.default_rng(6).normal(0.0, 0.5, (10, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["v"], ["t"], name="transpose", perm=[1, 0]),
        helper.make_node("Gemm", ["t", "w"], ["g"], name="gemm"),
        helper.make_node("Relu", ["g"], ["y"], name="relu"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("v", FLOAT, [10, "N"])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "w")],
    )


def _zoo(tmp_path: Path) -> Path:
    zoo = tmp_path / "zoo"
    for folder in ("ocr", "square", "audio", "broken", "photos", "tensors"):
        (zoo / folder).mkdir(parents=True)
    save(_flatten_model(12, 20, 1), zoo / "ocr", "wide.onnx")
    save(_flatten_model(16, 16, 2), zoo / "square", "sq.onnx")
    save(_vector_model(), zoo / "audio", "vec.onnx")
    save(_column_model(), zoo / "audio", "col.onnx")
    save(_flatten_model(9, 9, 3), zoo / "broken", "old.onnx")  # no setting makes it run
    rng = np.random.default_rng(5)
    for index in range(3):
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(zoo / "photos" / f"p{index}.png")
    np.save(zoo / "tensors" / "vec.npy", rng.normal(0.0, 1.0, (4, 10)).astype(np.float32))
    np.save(zoo / "tensors" / "col.npy", rng.normal(0.0, 1.0, (10, 7)).astype(np.float32))
    return zoo


CONFIG = """
["ocr/*.onnx"]
size = "12x20"
images = "photos"
eps = [0.05]

["square/sq.onnx"]
size = [16, 16]
images = ["photos"]
preset = "imagenet"

["audio/vec.onnx"]
inputs = "tensors/vec.npy"

["audio/col.onnx"]
inputs = "tensors/col.npy"
batch_axis = { v = 1 }

["broken/old.onnx"]
images = "photos"
expected = "fail"
"""


def test_a_zoo_of_different_input_sizes_runs_from_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo = _zoo(tmp_path)
    assert main(["zoo", str(zoo), "--images", str(zoo / "photos")]) == 1  # one size cannot serve
    (zoo / "onnx-prune.toml").write_text(CONFIG)
    out = tmp_path / "zoo.json"
    capsys.readouterr()
    assert main(["zoo", str(zoo), "--json", str(out), "--eps", "0,0.5"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Known failures, expected by the zoo config (1)" in text
    document = json.loads(out.read_text())
    statuses = {model["model"]: model["status"] for model in document["models"]}
    assert statuses == {
        "audio/col.onnx": "ok",
        "audio/vec.onnx": "ok",
        "broken/old.onnx": "known-failure",
        "ocr/wide.onnx": "ok",
        "square/sq.onnx": "ok",
    }
    models = {model["model"]: model for model in document["models"]}
    wide = models["ocr/wide.onnx"]["analysis"]
    assert wide["eps"] == [0.0, 0.5, 0.05]  # its own ε measured too
    assert list(models["ocr/wide.onnx"]["figures"]["ifm_zero_weighted"]) == ["0.0", "0.5"]
    assert wide["layers"][0]["ifm"]["shape"] == [3, 12, 20]
    assert models["square/sq.onnx"]["analysis"]["layers"][0]["ifm"]["shape"] == [3, 16, 16]
    assert models["audio/vec.onnx"]["analysis"]["samples"] == 4
    assert models["audio/col.onnx"]["analysis"]["samples"] == 7  # samples on axis 1
    assert document["summary"]["known_failure"] == 1
    assert document["summary"]["passed"] is True


def test_a_known_failure_that_passes_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo = _zoo(tmp_path)
    (zoo / "broken" / "old.onnx").unlink()
    config = CONFIG.replace('["square/sq.onnx"]', '["square/sq.onnx"]\nexpected = "fail"')
    config = config[: config.index('["broken/old.onnx"]')]
    (zoo / "onnx-prune.toml").write_text(config)
    capsys.readouterr()
    assert main(["zoo", str(zoo)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Now passing, though the zoo config expects them to fail (1)" in text
    assert "1 now-passing" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["a.onnx"]\nsizes = "2x2"\n', "has an unknown key 'sizes': the keys are size, preset"),
        ('["a.onnx"]\nsize = "2y2"\n', "size = '2y2': give \"HxW\", H or [H, W] above 0"),
        ('["a.onnx"]\npreset = "nope"\n', "preset = 'nope': give one of"),
        ('["a.onnx"]\nexpected = "maybe"\n', 'expected = \'maybe\': give "fail" or "pass"'),
        ('["a.onnx"]\neps = [-1]\n', "eps = [-1]: give finite numbers >= 0"),
        ('["a.onnx"]\nbatch_axis = { s = "x" }\n', "batch_axis s = 'x': give an axis"),
        ('size = "2x2"\n', "'size' is not a table"),
        ('["a.onnx"\n', "cannot read"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "onnx-prune.toml"
    path.write_text(content)
    with pytest.raises(ZooConfigError) as caught:
        read_zoo_config(path)
    assert message in str(caught.value)


def test_an_unknown_key_stops_the_zoo_before_any_model_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo = _zoo(tmp_path)
    config = tmp_path / "ci.toml"
    config.write_text('["ocr/*.onnx"]\nbatch-size = 4\n')
    assert main(["zoo", str(zoo), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "has an unknown key 'batch-size'" in err
    assert len(err.strip().splitlines()) == 1


def test_later_tables_override_and_globs_match(tmp_path: Path) -> None:
    path = tmp_path / "onnx-prune.toml"
    path.write_text('["*.onnx"]\nsize = 8\npreset = "imagenet"\n["sub/*.onnx"]\nsize = "4x6"\n')
    config = read_zoo_config(path)
    settings = config.settings_for(tmp_path / "sub" / "m.onnx", "sub/m.onnx")
    assert (settings.size, settings.preset) == ((4, 6), "imagenet")
    assert config.settings_for(tmp_path / "m.onnx", "m.onnx").size == (8, 8)
    assert config.unmatched([(tmp_path / "m.onnx", "m.onnx")]) == ("sub/*.onnx",)
